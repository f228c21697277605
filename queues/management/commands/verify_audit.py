"""Check every record of the audit log against its hash chain (README: "The audit log").

Prints "intact through #N (M records)" and the newest record's hash, or the first problem
("record #12 changed", "record #13 missing (#14 follows #12)") with exit status 1. Reads the
records in batches, in one snapshot, with the bulk jobs' statement timeout.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections, transaction

from queues.selectors.audit_chain import verify_chain


class Command(BaseCommand):
    help = "Check the audit log's hash chain, every record; exit status 1 at the first problem."

    def handle(self, *args: object, **options: object) -> None:
        with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
            with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [str(settings.JOB_STATEMENT_TIMEOUT_MS)]
                )
            verdict = verify_chain()
        if not verdict.intact:
            self.stderr.write(f"audit log: {verdict}")
            raise SystemExit(1)
        self.stdout.write(f"audit log: {verdict}")
        if verdict.through_hash:
            self.stdout.write(f"hash of #{verdict.through}: {verdict.through_hash}")

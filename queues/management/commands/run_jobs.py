"""The bulk job runner's loop: claim a job, run its batches (queues/jobs.py) until it ends, again
for the next, until stopped. Run one or more beside the web server (`make run` starts one).
"""

from __future__ import annotations

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connections

from dashboard.databases import first_line, is_connection_failure, unreachable_databases
from queues import jobs
from queues.access import read_only
from queues.models import BulkJob
from queues.pgmq import Queue
from queues.watched import statement_budget, watched_alias, watching

logger = logging.getLogger("jobs")
ATTEMPTS = 5  # a batch undone by something passing (a lock, a deadlock) is tried this many times


def run_job(job: BulkJob, *, stopping: threading.Event | None = None) -> None:
    alias = settings.WATCHED_DATABASES.get(job.database)
    if alias is None:
        jobs.end(job, BulkJob.FAILED, error=f"the database “{job.database}” is no longer watched")
        return
    with watching(alias):
        _run_job(job, stopping=stopping or threading.Event())


def _run_job(job: BulkJob, *, stopping: threading.Event) -> None:
    queue = Queue.objects.filter(queue_name=job.queue_name).first()
    if queue is None:
        jobs.end(job, BulkJob.FAILED, error=f"the queue “{job.queue_name}” was dropped")
        return
    failures = 0
    while not stopping.is_set():
        try:
            # A job's statements may take longer than a page's: its own, bigger, limit (set again
            # on the new connection after an outage).
            with statement_budget(settings.JOB_STATEMENT_TIMEOUT_MS):
                if not jobs.step(job, queue, batch_size=settings.BULK_BATCH_SIZE):
                    return
            failures = 0
        except jobs.TryAgain as error:
            failures += 1
            if failures >= ATTEMPTS:
                message = f"{error} ({ATTEMPTS} times in a row)"
                _while_reachable(stopping, lambda message=message: jobs.fail(job, message))
                return
            logger.warning("job %s: %s; trying the batch again", job.pk, error)
            stopping.wait(0.2 * 2**failures)
        except Exception as error:  # a bug must end the job saying why, not kill the runner
            if _database_lost(error):
                # This runner still holds the job (its lease outlives a short outage) and goes on
                # from its last batch as soon as the database answers again. Whatever the loss
                # surfaced as (a closed connection, an atomic block left broken), it is not the
                # job's fault: failing it now would not even reach the database.
                logger.warning("job %s: %s; going on when the database is back", job.pk, first_line(error))
                wait_for_databases(stopping)
                continue
            logger.exception("job %s failed", job.pk)
            message = first_line(error) if isinstance(error, DatabaseError) else f"{type(error).__name__}: {error}"
            _while_reachable(stopping, lambda message=message: jobs.fail(job, message))
            return


def _database_lost(error: BaseException) -> bool:
    return is_connection_failure(error) or bool(
        unreachable_databases([settings.DASHBOARD_DATABASE_ALIAS, watched_alias()])
    )


def _while_reachable(stopping: threading.Event, write) -> None:
    """`write` (the job's end), again once the databases answer if they went away meanwhile: a
    job left running by a runner that is alive would wait out its whole lease."""
    while True:
        try:
            write()
            return
        except DatabaseError as error:
            if stopping.is_set() or not _database_lost(error):
                raise
            logger.warning("%s; writing the job's end when the database is back", first_line(error))
            wait_for_databases(stopping)


def wait_for_databases(stopping: threading.Event, *, longest_wait: float = 5.0) -> None:
    """Until the job's database and the dashboard's own answer again (or the runner is stopping)."""
    wait = 0.2
    while not stopping.is_set():
        for connection in connections.all():
            connection.close_if_unusable_or_obsolete()
        if not unreachable_databases([settings.DASHBOARD_DATABASE_ALIAS, watched_alias()]):
            return
        stopping.wait(wait)
        wait = min(wait * 2, longest_wait)


def run_pending_jobs() -> int:
    """Run every job waiting, to its end; how many. For tests and --once."""
    ran = 0
    while (job := jobs.claim()) is not None:
        run_job(job)
        ran += 1
    return ran


class Command(BaseCommand):
    help = "Run bulk jobs (actions on every message matching a filter) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run the jobs waiting now, then exit")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between looks for new jobs")

    def handle(self, *args: object, once: bool, poll: float, **options: object) -> None:
        if once:
            run_pending_jobs()
            return
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        self.stdout.write("running bulk jobs")
        if read_only():
            self.stdout.write("the dashboard is read-only (DASHBOARD_READ_ONLY): queued jobs wait until it is not")
        while not stopping.is_set():
            try:
                job = jobs.claim()
                if job is not None:
                    logger.info("running %s", job)
                    run_job(job, stopping=stopping)
                    continue
            except DatabaseError as error:
                logger.warning("job runner: %s; trying again", first_line(error))
                for connection in connections.all():
                    connection.close()
            stopping.wait(poll)

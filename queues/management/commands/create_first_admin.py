import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from queues import account_audit
from queues.management.commands.add_user import set_role

FIRST_ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = (
        "When the dashboard has no login yet, create the admin `admin` with a random password and print it "
        "(`pgmq-dashboard` does this on its first run); otherwise do nothing."
    )

    def handle(self, *args: object, **options: object) -> None:
        users = get_user_model().objects
        with transaction.atomic(), account_audit.one_record():
            if users.exists():
                return
            password = secrets.token_urlsafe(12)
            user = users.create(username=FIRST_ADMIN_USERNAME)
            user.set_password(password)
            set_role(user, "admin")
        self.stdout.write(f"sign in as {FIRST_ADMIN_USERNAME} / {password} (printed this once: keep it)")

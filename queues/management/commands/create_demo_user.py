import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from queues.management.commands.add_user import set_role

DEMO_USERNAME = "demo"


class Command(BaseCommand):
    help = (
        "Create (or reset) the `demo` admin login that `make run` prints. The password comes from "
        "DEMO_PASSWORD, or is random. With --with-roles, also `viewer` and `operator` with the same password."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--with-roles", action="store_true")

    def handle(self, *args: object, with_roles: bool, **options: object) -> None:
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(12)
        users = get_user_model().objects
        user, _ = users.get_or_create(username=DEMO_USERNAME)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"Sign in as: {DEMO_USERNAME} / {password}")
        if with_roles:
            for role in ("viewer", "operator"):
                other, _ = users.get_or_create(username=role)
                other.set_password(password)
                set_role(other, role)
            self.stdout.write(f"Or as: viewer / {password} (reads only), operator / {password} (acts on messages)")

import getpass
import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from queues import account_audit

# Role -> (group, staff): admins manage users in Django's admin, so they are staff too.
ROLES = {"viewer": ("Viewer", False), "operator": ("Operator", False), "admin": ("Admin", True)}


def set_role(user, role: str) -> None:
    group_name, staff = ROLES[role]
    user.groups.set([Group.objects.get(name=group_name)])
    user.is_staff = staff
    user.is_superuser = False  # a superuser has every permission, whatever its group says
    user.save()


class Command(BaseCommand):
    help = (
        "Create a login with a role: viewer (reads), operator (acts on messages, sends), admin (also "
        "purges, creates and drops queues, manages users). The password comes from $PASSWORD or a prompt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)

    def handle(self, *args: object, username: str, role: str, **options: object) -> None:
        password = os.environ.get("PASSWORD") or getpass.getpass(f"Password for {username}: ")
        if not password:
            raise CommandError("a password is needed (set PASSWORD or type one)")
        with transaction.atomic(), account_audit.one_record():
            user, created = get_user_model().objects.get_or_create(username=username)
            user.set_password(password)
            set_role(user, role)
        self.stdout.write(f"{'Created' if created else 'Updated'} {username} as {role}.")

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from queues.tokens import issue_token


class Command(BaseCommand):
    help = (
        "Make an API token for a login and print its key, once: only a hash of it is kept. Delete a token in "
        "Django's admin, under API tokens."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="what the token is for, e.g. ci-bot")

    def handle(self, *args: object, username: str, name: str, **options: object) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"there is no login named {username!r} (manage.py add_user makes one)")
        _token, key = issue_token(user, name=name)
        self.stdout.write(key)

"""Django's migrate, for the dashboard mounted in another project (dashboard/mount.py), where its
tables have a database alias of their own on the project's database: a plain `migrate` migrates
that alias too, and the alias keeps its own record of migrations. In the dashboard's own project
(both aliases `default`) it is Django's migrate, unchanged."""

from django.conf import settings
from django.core.management.commands import migrate
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.recorder import MigrationRecorder

from queues.apps import create_dashboard_schema


class Command(migrate.Command):
    def handle(self, *args: object, **options: object) -> None:
        own = settings.DASHBOARD_DATABASE_ALIAS
        if own == DEFAULT_DB_ALIAS:
            return super().handle(*args, **options)
        if options["database"] == own:
            own_migration_record(own)
        super().handle(*args, **options)
        if options["database"] == DEFAULT_DB_ALIAS and options["app_label"] in (None, "queues"):
            if options["verbosity"]:
                self.stdout.write(self.style.MIGRATE_HEADING(f"The dashboard's tables, in database {own}:"))
            self.handle(*args, **{**options, "database": own})


def own_migration_record(alias: str) -> None:
    """django_migrations in the dashboard's schema. Without it, the project's own (public, second on
    the alias's search_path) would be found and taken for the dashboard's: its `queues` migrations,
    recorded as done (on `default`, where the router skips them), would never create the tables."""
    create_dashboard_schema(using=alias)
    connection = connections[alias]
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('search_path', %s, true)", [settings.DASHBOARD_SCHEMA])
        MigrationRecorder(connection).ensure_schema()

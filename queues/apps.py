from django.apps import AppConfig
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import pre_migrate
from psycopg import sql


def create_dashboard_schema(using: str, **kwargs: object) -> None:
    """Create the dashboard's own schema before the first migration puts tables in it.

    Checked first rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege on the
    database even when the schema is already there (a DBA may have created it beforehand).
    """
    if using != DEFAULT_DB_ALIAS:
        return
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [settings.DASHBOARD_SCHEMA])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.DASHBOARD_SCHEMA)).as_string())


class QueuesConfig(AppConfig):
    name = "queues"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        pre_migrate.connect(create_dashboard_schema, sender=self)

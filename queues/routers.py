from django.conf import settings
from django.db.models import Model

from queues.pgmq import watched_alias


class PgmqRouter:
    """pgmq's tables are read in the database being watched (see queues.pgmq.watched_alias); the
    dashboard's own tables live in `default`."""

    def db_for_read(self, model: type[Model], **hints: object) -> str | None:
        return watched_alias() if getattr(model, "reads_pgmq", False) else None

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: object) -> bool:
        # Nothing is ever created in a watched database by migrations.
        return db not in settings.WATCHED_DATABASES.values()

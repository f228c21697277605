from django.db.models import Model

from queues.pgmq import PGMQ_DATABASE


class PgmqRouter:
    """pgmq's tables are read in the watched database; the dashboard's own tables live in `default`."""

    def db_for_read(self, model: type[Model], **hints: object) -> str | None:
        return PGMQ_DATABASE if getattr(model, "reads_pgmq", False) else None

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: object) -> bool:
        # Nothing is ever created in the watched database by migrations.
        return db != PGMQ_DATABASE

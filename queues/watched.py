"""Which watched database is being read and acted on: set per request by
WatchedDatabaseMiddleware (from the URL's /db/<name>/ prefix), per round by the sampler and per
job by the job runner; every query on pgmq's tables goes to it (PgmqRouter, in settings'
DATABASE_ROUTERS). Roles per database are in access.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Model

PGMQ_DATABASE = "pgmq"  # the Django database alias of the first watched database

# Which watched database this request (or sampler round, or job) reads and acts on: set by
# WatchedDatabaseMiddleware from the URL, by the sampler and the job runner per database.
_watched_alias: ContextVar[str] = ContextVar("watched_alias", default=PGMQ_DATABASE)


def watched_alias() -> str:
    """The Django database alias of the pgmq database being watched right now."""
    return _watched_alias.get()


def watched_name() -> str:
    """The name of the database being watched right now, as in settings.WATCHED_DATABASES
    ("main", "staging"...): what URLs and stored history (samples, audit, alerts) use."""
    return database_name(_watched_alias.get())


def database_name(alias: str) -> str:
    return next(name for name, known in settings.WATCHED_DATABASES.items() if known == alias)


def watched_aliases() -> list[str]:
    return list(settings.WATCHED_DATABASES.values())


def database_path_prefix(name: str) -> str:
    """Where the pages of the watched database `name` live: "" for the first, "/db/<name>" for others."""
    return "" if name == next(iter(settings.WATCHED_DATABASES)) else f"/db/{name}"


@contextmanager
def watching(alias: str) -> Iterator[None]:
    """Read and act on the watched database `alias` inside this block."""
    token = _watched_alias.set(alias)
    try:
        yield
    finally:
        _watched_alias.reset(token)


@contextmanager
def statement_budget(milliseconds: float):
    """Let the statements inside run at most this long (the connection's own limit comes back after)."""
    connection = connections[watched_alias()]
    if hasattr(connection, "statement_timeout"):  # behind a pooler: set per transaction (dashboard/pooled_postgresql)
        with connection.statement_timeout(max(int(milliseconds), 1)):
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, false)", [str(max(int(milliseconds), 1))])
    try:
        yield
    finally:
        try:
            with connections[watched_alias()].cursor() as cursor:
                cursor.execute("RESET statement_timeout")
        except DatabaseError:
            pass  # the connection is gone; Django opens a new one, with the usual limit


class PgmqRouter:
    """pgmq's tables are read in the database being watched (watched_alias); the dashboard's own
    tables live in settings.DASHBOARD_DATABASE_ALIAS: `default` in its own project, its own alias
    mounted in another (dashboard/mount.py), where users, groups and sessions stay the project's."""

    def db_for_read(self, model: type[Model], **hints: object) -> str | None:
        if getattr(model, "reads_pgmq", False):
            return watched_alias()
        if model._meta.app_label != "queues":
            return None
        # A row saved through a watched database's transaction (services.action_transaction) is read
        # back there; one reached from a user (their tokens) is read where the dashboard's tables are.
        instance = hints.get("instance")
        through = instance._state.db if isinstance(instance, Model) else None
        return through if through and through != DEFAULT_DB_ALIAS else settings.DASHBOARD_DATABASE_ALIAS

    db_for_write = db_for_read

    def allow_relation(self, obj1: Model, obj2: Model, **hints: object) -> bool | None:
        # A token's user: the project's table, which the dashboard's connection finds on its search_path.
        return (
            True if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, settings.DASHBOARD_DATABASE_ALIAS} else None
        )

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: object) -> bool | None:
        # Nothing is ever created in a watched database by migrations.
        if db in settings.WATCHED_DATABASES.values():
            return False
        own = settings.DASHBOARD_DATABASE_ALIAS
        if own == DEFAULT_DB_ALIAS:
            return True
        if app_label == "queues":
            return db == own
        return False if db == own else None

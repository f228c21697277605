"""Which configured database cannot be reached, said in one line (for logs, pages and /healthz); a new
connection refused when its limits were dropped on the way (settings_kept)."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg import errors as pg_errors


def database_label(alias: str) -> str:
    """Where a database is, without its password: user@host:port/name (host: a socket directory too)."""
    db = settings.DATABASES[alias]
    host = db["HOST"] or "localhost"
    where = host if host.startswith("/") else f"{host}:{db['PORT'] or 5432}"
    user = f"{db['USER']}@" if db["USER"] else ""
    return f"{user}{where}/{db['NAME']}"


def database_short_label(alias: str) -> str:
    """name@host, or name (local socket): short enough for the header of every page."""
    db = settings.DATABASES[alias]
    host = db["HOST"] or "localhost"
    return f"{db['NAME']} (local socket)" if host.startswith("/") else f"{db['NAME']}@{host}"


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def unreachable_databases(aliases: list[str] | None = None) -> list[str]:
    """One line for each configured database (or each of `aliases`) that does not answer a trivial query."""
    problems = []
    for alias in aliases or settings.DATABASES:
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as error:
            connections[alias].close_if_unusable_or_obsolete()
            problems.append(
                f"cannot connect to {settings.DATABASE_SOURCES[alias]} ({database_label(alias)}): {first_line(error)}"
            )
    return list(dict.fromkeys(problems))  # two aliases may be the same database


def took_too_long(error: BaseException) -> bool:
    """A statement stopped by statement_timeout, or by lock_timeout while another session held
    the table (a purge's TRUNCATE, a migration): the database is fine, the query was bounded."""
    return isinstance(error, OperationalError) and isinstance(
        error.__cause__, (pg_errors.QueryCanceled, pg_errors.LockNotAvailable)
    )


# SQLSTATEs that mean "the server is not there for us": connection exceptions (08xxx),
# administrator shutdown, crash shutdown, cannot connect now.
CONNECTION_LOST_STATES = ("08", "57P01", "57P02", "57P03")


def is_connection_failure(error: BaseException) -> bool:
    """The database went away (or never answered), as opposed to refusing a statement."""
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(CONNECTION_LOST_STATES)


# The settings that bound and place every statement; jit is only about speed.
GUARDED_SETTINGS = ("statement_timeout", "lock_timeout", "search_path")


def settings_kept(sender: type, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    """A new direct connection carries its limits in the startup `options`, which a pooler told to
    ignore them (PgBouncer's `ignore_startup_parameters = options`) drops without a word: such a
    connection is closed and refused, rather than used without its statement timeout."""
    expected = {
        name: value
        for name, value in connection.settings_dict.get("STARTUP_SETTINGS", {}).items()
        if name in GUARDED_SETTINGS
    }
    if not expected:
        return  # behind a pooler (DASHBOARD_POOLER), every transaction sets them
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(expected)])
        found = dict(cursor.fetchall())
    dropped = [name for name, value in expected.items() if found.get(name) != value]
    if dropped:
        connection.close()
        raise OperationalError(
            f"the connection came without its {', '.join(dropped)} (is it a pooler that ignores the startup "
            "parameter `options`?); behind PgBouncer or another pooler set DASHBOARD_POOLER=on"
        )

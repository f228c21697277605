"""What a Django project's settings need to mount the dashboard under a path of its own (README
"Mount it in your own Django project"): `from dashboard.mount import *` near the top of its
settings, then the few lines the README shows. It gives the dashboard's own settings
(dashboard/app_settings.py, as its own project has them) and helpers; it leaves the project's
INSTALLED_APPS, MIDDLEWARE, users, sessions and sign-in alone.

The dashboard's tables (the `queues` app's) go to a database alias of their own,
`pgmq_dashboard` (dashboard_database() makes it: the project's own database, or another, with the
schema pgmq_dashboard first on its search_path), which PgmqRouter sends them to, for reads, writes
and migrations, and nothing else. The project's schema (public) comes second on that search_path:
an API token's user is a row of the project's auth_user.
"""

from __future__ import annotations

from urllib.parse import urlencode

from dashboard import env, places
from dashboard.app_settings import *  # noqa: F403 (the dashboard's own settings, as in its own project)
from dashboard.app_settings import LOCK_TIMEOUT_MS, POOLER, STATEMENT_TIMEOUT_MS
from dashboard.app_settings import __all__ as _app_settings

__all__ = [
    "DASHBOARD_APPS",
    "DASHBOARD_MIDDLEWARE",
    "DASHBOARD_CONTEXT_PROCESSORS",
    "DASHBOARD_STATICFILES_DIRS",
    "DASHBOARD_SCHEMA",
    "DASHBOARD_DATABASE_ALIAS",
    "WATCHED_DATABASES",
    "DATABASE_TAGS",
    "DATABASE_SOURCES",
    "DATABASE_ROUTERS",
    "pgmq_database",
    "dashboard_database",
    *_app_settings,
]

# The apps the dashboard needs besides Django's admin, auth, contenttypes, sessions, messages and
# staticfiles, which a project has already.
DASHBOARD_APPS = ["django_htmx", "rest_framework", "drf_spectacular", "queues"]
# After the project's AuthenticationMiddleware: which watched database a request reads (and its
# 503 pages when that database is away), and htmx's request details.
DASHBOARD_MIDDLEWARE = [
    "queues.middleware.WatchedDatabaseMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "queues.middleware.DatabaseUnavailableMiddleware",
]
DASHBOARD_CONTEXT_PROCESSORS = [
    "queues.context_processors.watched_database",
    "queues.context_processors.refresh_interval",
    "queues.access.read_only_context",
    "queues.context_processors.version",
]
# The stylesheet, scripts and Chart.js, under their own prefix (pgmq_dashboard/...).
DASHBOARD_STATICFILES_DIRS = [("pgmq_dashboard", places.FILES_DIR / "static")]

DASHBOARD_SCHEMA = "pgmq_dashboard"
DASHBOARD_DATABASE_ALIAS = "pgmq_dashboard"
# One watched database, the project's database alias "pgmq" (pgmq_database() makes it from a URL).
WATCHED_DATABASES = {env.text("PGMQ_DATABASE_NAME", "main") or "main": "pgmq"}
DATABASE_TAGS = env.database_tags(WATCHED_DATABASES)
DATABASE_SOURCES = {
    "default": "the project's default database",
    "pgmq": "the project's database pgmq",
    DASHBOARD_DATABASE_ALIAS: "the project's database pgmq_dashboard",
}
DATABASE_ROUTERS = ["queues.watched.PgmqRouter"]


def pgmq_database(url: str, *, variable: str = "PGMQ_DATABASE_URL") -> dict:
    """The DATABASES entry for the pgmq database at `url`, every statement bounded in time."""
    return env.database(
        variable, url, schema=None, statement_timeout_ms=STATEMENT_TIMEOUT_MS, lock_timeout_ms=LOCK_TIMEOUT_MS
    )


# Keys of a DATABASES entry's OPTIONS that are Django's, not libpq's (and `options`, replaced).
DJANGO_ONLY_OPTIONS = {"options", "isolation_level", "server_side_binding", "assume_role", "pool"}


def dashboard_database(database: str | dict, *, project_schema: str = "public") -> dict:
    """The DATABASES entry for the dashboard's own tables: in the schema pgmq_dashboard of the
    database at the URL `database`, or of the project's own (its DATABASES entry, e.g.
    DATABASES["default"]), every statement bounded in time. `project_schema` is where the project's
    tables (auth_user) are."""
    if isinstance(database, dict):
        reached = {"dbname": database["NAME"], "user": database.get("USER"), "password": database.get("PASSWORD")}
        reached |= {"host": database.get("HOST"), "port": database.get("PORT")}
        given = {
            key: value
            for key, value in database.get("OPTIONS", {}).items()
            if isinstance(value, str) and key not in DJANGO_ONLY_OPTIONS
        }
        database = "postgresql://?" + urlencode({key: value for key, value in (given | reached).items() if value})
    return env.database(
        "the dashboard's database",
        database,
        # No space: the search_path travels in the connection's `options`, where spaces part settings.
        schema=f"{DASHBOARD_SCHEMA},{project_schema}",
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        lock_timeout_ms=LOCK_TIMEOUT_MS,
        pooler=POOLER,
    )

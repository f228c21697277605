"""What a Django project's settings need to mount the dashboard under a path of its own (README
"Mount it in your own Django project"): `from dashboard.mount import *` near the top of its
settings, then the few lines the README shows. It gives the dashboard's own settings
(dashboard/app_settings.py, as its own project has them) and helpers; it leaves the project's
INSTALLED_APPS, MIDDLEWARE, users, sessions and sign-in alone.
"""

from __future__ import annotations

from dashboard import env, places
from dashboard.app_settings import *  # noqa: F403 (the dashboard's own settings, as in its own project)
from dashboard.app_settings import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS
from dashboard.app_settings import __all__ as _app_settings

__all__ = [
    "DASHBOARD_APPS",
    "DASHBOARD_MIDDLEWARE",
    "DASHBOARD_CONTEXT_PROCESSORS",
    "DASHBOARD_STATICFILES_DIRS",
    "DASHBOARD_SCHEMA",
    "WATCHED_DATABASES",
    "DATABASE_TAGS",
    "DATABASE_SOURCES",
    "DATABASE_ROUTERS",
    "pgmq_database",
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
# One watched database, the project's database alias "pgmq" (pgmq_database() makes it from a URL).
WATCHED_DATABASES = {env.text("PGMQ_DATABASE_NAME", "main") or "main": "pgmq"}
DATABASE_TAGS = env.database_tags(WATCHED_DATABASES)
DATABASE_SOURCES = {"default": "the project's default database", "pgmq": "the project's database pgmq"}
DATABASE_ROUTERS = ["queues.watched.PgmqRouter"]


def pgmq_database(url: str, *, variable: str = "PGMQ_DATABASE_URL") -> dict:
    """The DATABASES entry for the pgmq database at `url`, every statement bounded in time."""
    return env.database(
        variable, url, schema=None, statement_timeout_ms=STATEMENT_TIMEOUT_MS, lock_timeout_ms=LOCK_TIMEOUT_MS
    )

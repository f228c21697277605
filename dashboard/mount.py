"""What a Django project's settings need to mount the dashboard under a path of its own (README
"Mount it in your own Django project"): `from dashboard.mount import *` near the top of its
settings, then the few lines the README shows. It defines only the dashboard's own settings, read
from the same DASHBOARD_* variables with the defaults of dashboard/settings.py, and helpers; it
leaves the project's INSTALLED_APPS, MIDDLEWARE, users, sessions and sign-in alone.
"""

from __future__ import annotations

from dashboard import env, places

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
    "STATEMENT_TIMEOUT_MS",
    "LOCK_TIMEOUT_MS",
    "EXACT_COUNT_LIMIT",
    "STATS_CACHE_SECONDS",
    "OVERVIEW_PROBE_ALL_UP_TO",
    "PROBE_CONNECTIONS",
    "AUDIT_PAYLOAD_LIMIT",
    "BULK_BATCH_SIZE",
    "JOB_STATEMENT_TIMEOUT_MS",
    "API_LIST_PAYLOAD_CHARS",
    "DOWNLOAD_MAX_BYTES",
    "EXPORTS_PER_USER",
    "EXPORTS_PER_WORKER",
    "READ_ONLY",
    "REDACT_PATHS",
    "POISON_READ_COUNT",
    "REFRESH_SECONDS",
    "SEARCH_TIMEOUT_MS",
    "SAMPLE_INTERVAL_SECONDS",
    "METRICS_RETENTION_DAYS",
    "METRICS_TOKEN",
    "HEALTH_RULES",
    "ALERT_RULES",
    "BASE_URL",
    "ALERT_NOTIFY_TIMEOUT_SECONDS",
    "REST_FRAMEWORK",
    "SPECTACULAR_SETTINGS",
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

STATEMENT_TIMEOUT_MS = env.integer("DASHBOARD_STATEMENT_TIMEOUT_MS", 5000, minimum=100)
LOCK_TIMEOUT_MS = env.integer("DASHBOARD_LOCK_TIMEOUT_MS", 1000, minimum=10)


def pgmq_database(url: str, *, variable: str = "PGMQ_DATABASE_URL") -> dict:
    """The DATABASES entry for the pgmq database at `url`, every statement bounded in time."""
    return env.database(
        variable, url, schema=None, statement_timeout_ms=STATEMENT_TIMEOUT_MS, lock_timeout_ms=LOCK_TIMEOUT_MS
    )


EXACT_COUNT_LIMIT = env.integer("DASHBOARD_EXACT_COUNT_LIMIT", 100_000)
STATS_CACHE_SECONDS = env.integer("DASHBOARD_STATS_CACHE_SECONDS", 2)
OVERVIEW_PROBE_ALL_UP_TO = env.integer("DASHBOARD_OVERVIEW_PROBE_ALL_UP_TO", 200, minimum=0)
PROBE_CONNECTIONS = env.integer("DASHBOARD_PROBE_CONNECTIONS", 2, minimum=1)
AUDIT_PAYLOAD_LIMIT = env.integer("DASHBOARD_AUDIT_PAYLOAD_LIMIT", 1000)
BULK_BATCH_SIZE = env.integer("DASHBOARD_BULK_BATCH_SIZE", 5000, minimum=1)
JOB_STATEMENT_TIMEOUT_MS = env.integer("DASHBOARD_JOB_STATEMENT_TIMEOUT_MS", 60_000, minimum=100)
API_LIST_PAYLOAD_CHARS = env.integer("DASHBOARD_API_LIST_PAYLOAD_CHARS", 65_536, minimum=0)
DOWNLOAD_MAX_BYTES = env.integer("DASHBOARD_DOWNLOAD_MAX_BYTES", 256 * 1024 * 1024, minimum=1)
EXPORTS_PER_USER = env.integer("DASHBOARD_EXPORTS_PER_USER", 2, minimum=1)
EXPORTS_PER_WORKER = env.integer("DASHBOARD_EXPORTS_PER_WORKER", 2, minimum=1)
READ_ONLY = env.boolean("DASHBOARD_READ_ONLY", default=False)
REDACT_PATHS = env.json_paths("DASHBOARD_REDACT")
POISON_READ_COUNT = env.integer("DASHBOARD_POISON_READ_COUNT", 5, minimum=1)
REFRESH_SECONDS = env.integer("DASHBOARD_REFRESH_SECONDS", 5, minimum=1)
SEARCH_TIMEOUT_MS = env.integer("DASHBOARD_SEARCH_TIMEOUT_MS", 2000, minimum=100)
SAMPLE_INTERVAL_SECONDS = env.integer("DASHBOARD_SAMPLE_INTERVAL_SECONDS", 10, minimum=1)
METRICS_RETENTION_DAYS = env.integer("DASHBOARD_METRICS_RETENTION_DAYS", 7, minimum=1)
METRICS_TOKEN = env.text("DASHBOARD_METRICS_TOKEN")
HEALTH_RULES = env.health_rules("DASHBOARD_HEALTH_RULES_FILE")
ALERT_RULES = env.alert_rules("DASHBOARD_ALERT_RULES_FILE")
BASE_URL = env.text("DASHBOARD_BASE_URL").rstrip("/")
ALERT_NOTIFY_TIMEOUT_SECONDS = env.integer("DASHBOARD_ALERT_NOTIFY_TIMEOUT_SECONDS", 5, minimum=1)

# The API: the project's session (or a token), JSON only, as in dashboard/settings.py.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "queues.tokens.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {"TITLE": "pgmq dashboard API", "VERSION": "1", "SERVE_INCLUDE_SCHEMA": False}

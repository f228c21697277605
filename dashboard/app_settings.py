"""The dashboard's own settings, read from the environment (README "Configuration"): the same in its
own project (dashboard/settings.py) and mounted in another (dashboard/mount.py), which both take
them from here.
"""

from dashboard import env

# Every query the dashboard runs is bounded, so it can never pile onto a struggling database.
STATEMENT_TIMEOUT_MS = env.integer("DASHBOARD_STATEMENT_TIMEOUT_MS", 5000, minimum=100)
LOCK_TIMEOUT_MS = env.integer("DASHBOARD_LOCK_TIMEOUT_MS", 1000, minimum=10)
# The URLs lead to PgBouncer (or another pooler): the limits and the schema are set per transaction.
POOLER = env.boolean("DASHBOARD_POOLER", default=False)

# Up to this many rows a table is counted exactly; above it PostgreSQL's estimate is shown (≈).
EXACT_COUNT_LIMIT = env.integer("DASHBOARD_EXACT_COUNT_LIMIT", 100_000)
# The overview's figures are shared by every tab for this long: with many queues and many open
# tabs, the database computes them once per interval instead of once per tab. 0 turns it off.
STATS_CACHE_SECONDS = env.integer("DASHBOARD_STATS_CACHE_SECONDS", 2)
# Up to this many queues (after a search) the overview probes every one of them on each view; above
# it, only the page's queues, and sorts and totals the rest by the sampler's latest round (its age
# shown), so a view costs what its page shows, not what the database holds.
OVERVIEW_PROBE_ALL_UP_TO = env.integer("DASHBOARD_OVERVIEW_PROBE_ALL_UP_TO", 200, minimum=0)
# Connections a probe of thousands of queues (the sampler's round) is shared among, side by side.
PROBE_CONNECTIONS = env.integer("DASHBOARD_PROBE_CONNECTIONS", 2, minimum=1)
# The audit record of a delete or purge keeps the payloads it removed, up to this many messages
# (beyond, only how many).
AUDIT_PAYLOAD_LIMIT = env.integer("DASHBOARD_AUDIT_PAYLOAD_LIMIT", 1000)
# A bulk job handles this many messages per transaction, each statement bounded by its own limit.
BULK_BATCH_SIZE = env.integer("DASHBOARD_BULK_BATCH_SIZE", 5000, minimum=1)
JOB_STATEMENT_TIMEOUT_MS = env.integer("DASHBOARD_JOB_STATEMENT_TIMEOUT_MS", 60_000, minimum=100)
# Payloads, whatever they weigh, never whole in a worker's memory (README, "Threat model"): the API's
# lists give a payload up to this many characters (past it, its size and no payload); its single
# message and every download stream bigger ones from the database in chunks; a download (the
# message page's, the API's) past DOWNLOAD_MAX_BYTES is refused with the SQL that fetches the row.
API_LIST_PAYLOAD_CHARS = env.integer("DASHBOARD_API_LIST_PAYLOAD_CHARS", 65_536, minimum=0)
# Lists (the message browser, the poison panel, the API's pages) turn a payload into text only if the
# database stores it in at most this many bytes (compressed when large): turning 40 MB of jsonb into
# text takes it a third of a second, each time. A bigger payload is listed by its stored size.
LIST_PAYLOAD_MAX_STORED_BYTES = env.integer("DASHBOARD_LIST_PAYLOAD_MAX_STORED_BYTES", 256 * 1024, minimum=0)
DOWNLOAD_MAX_BYTES = env.integer("DASHBOARD_DOWNLOAD_MAX_BYTES", 256 * 1024 * 1024, minimum=1)
# Exports at once, per signed-in user and in all in one worker process; the total is kept below the
# worker's threads, so exports always leave a thread for pages.
EXPORTS_PER_USER = env.integer("DASHBOARD_EXPORTS_PER_USER", 2, minimum=1)
WORKER_THREADS = env.integer("GUNICORN_THREADS", 4, minimum=1)  # as dashboard/gunicorn.conf.py reads it
EXPORTS_PER_WORKER = min(env.integer("DASHBOARD_EXPORTS_PER_WORKER", 2, minimum=1), max(WORKER_THREADS - 1, 1))
# Every write hidden and refused, for everyone (README "Read-only"); the CLI's --readonly sets it.
READ_ONLY = env.boolean("DASHBOARD_READ_ONLY", default=False)
# JSON paths whose values only users with the permission "view_unredacted" see (README, "Redaction").
REDACT_PATHS = env.json_paths("DASHBOARD_REDACT")
# A message read this many times or more is a poison message.
POISON_READ_COUNT = env.integer("DASHBOARD_POISON_READ_COUNT", 5, minimum=1)
# Dead-letter queues whose names do not say whose they are (`X-dlq`, `X_dlq`, `X.dead` do).
DEAD_LETTER_QUEUES = env.queue_pairs("DASHBOARD_DEAD_LETTER_QUEUES")
# Live regions re-render every this many seconds (the page lets each user change or pause it).
REFRESH_SECONDS = env.integer("DASHBOARD_REFRESH_SECONDS", 5, minimum=1)
# A text search in payloads stops after this long and shows what it found.
SEARCH_TIMEOUT_MS = env.integer("DASHBOARD_SEARCH_TIMEOUT_MS", 2000, minimum=100)
# The metric sampler (manage.py sample_metrics): how often, and how long samples are kept.
SAMPLE_INTERVAL_SECONDS = env.integer("DASHBOARD_SAMPLE_INTERVAL_SECONDS", 10, minimum=1)
METRICS_RETENTION_DAYS = env.integer("DASHBOARD_METRICS_RETENTION_DAYS", 7, minimum=1)
# GET /metrics for Prometheus: off (404) unless set; then only `Authorization: Bearer <this>` is answered.
METRICS_TOKEN = env.text("DASHBOARD_METRICS_TOKEN")
# ok / warning / critical per queue-name pattern (a TOML file; see README "Health").
HEALTH_RULES = env.health_rules("DASHBOARD_HEALTH_RULES_FILE")
# Alert rules evaluated by the sampler, notified by webhook and e-mail (a TOML file; README "Alerting").
ALERT_RULES = env.alert_rules("DASHBOARD_ALERT_RULES_FILE")
# Links in notifications point here (e.g. https://pgmq.example.com); none when unset.
BASE_URL = env.text("DASHBOARD_BASE_URL").rstrip("/")
# A webhook or mail server gets this long per notification; one that fails is retried next round.
ALERT_NOTIFY_TIMEOUT_SECONDS = env.integer("DASHBOARD_ALERT_NOTIFY_TIMEOUT_SECONDS", 5, minimum=1)

# The JSON API (/api/v1/, queues/api/): a token (`Authorization: Token <key>`) or the browser's
# session, whose unsafe requests DRF checks for CSRF; the same permissions as the pages.
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
    "URL_FORMAT_OVERRIDE": None,  # no ?format=: every answer is JSON
}
SPECTACULAR_SETTINGS = {
    "TITLE": "pgmq dashboard API",
    "DESCRIPTION": "What the dashboard's pages show and do: queues, their figures, messages (the same filters and "
    "keyset cursors), actions and sends, under the same permissions and audit log.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Fields named "state" with different choices (a message's, a forecast's, a filter's): each its own name.
    "ENUM_NAME_OVERRIDES": {
        "ForecastStateEnum": "queues.forecast.STATES",
        "MessageStateEnum": "queues.filters.MESSAGE_STATES",
    },
}

__all__ = [name for name in dir() if name.isupper()]

"""Settings, all from the environment (see README "Configuration"); dashboard/env.py does the parsing.

Databases:
- `pgmq`: the database holding the pgmq schema to observe (PGMQ_DATABASE_URL), and one more alias
  `pgmq-<name>` for each further watched database (PGMQ_DATABASE_URL_<NAME>);
- `default`: the dashboard's own tables (users, sessions, ...), in the schema pgmq_dashboard of
  DASHBOARD_DATABASE_URL, which defaults to the pgmq database itself.
"""

from datetime import timedelta

from csp.constants import NONE, SELF

from dashboard import env, places

BASE_DIR = places.BASE_DIR

DEBUG = env.boolean("DJANGO_DEBUG", default=False)
SECRET_KEY = env.secret_key(debug=DEBUG)
ALLOWED_HOSTS = env.word_list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.word_list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

PGMQ_DATABASE_URL = env.text("PGMQ_DATABASE_URL")
if not PGMQ_DATABASE_URL:
    env.fail(
        "PGMQ_DATABASE_URL is not set: point it at the database holding the pgmq schema, "
        "e.g. postgresql://user@host:5432/db (or run `make run` for the embedded demo)"
    )
DASHBOARD_DATABASE_URL = env.text("DASHBOARD_DATABASE_URL") or PGMQ_DATABASE_URL
DASHBOARD_SCHEMA = "pgmq_dashboard"
# The pgmq databases watched, name -> Django alias: the first is "pgmq", the others "pgmq-<name>".
_watched = env.watched_databases()
WATCHED_DATABASES = {name: "pgmq" if index == 0 else f"pgmq-{name}" for index, name in enumerate(_watched)}
# The label and colour the header gives a database (DASHBOARD_DATABASE_LABEL_<NAME>, ..._COLOUR_<NAME>).
DATABASE_TAGS = env.database_tags(WATCHED_DATABASES)
# Which environment variable each database came from, for error messages.
DATABASE_SOURCES = {
    "default": "DASHBOARD_DATABASE_URL" if env.text("DASHBOARD_DATABASE_URL") else "PGMQ_DATABASE_URL",
    **{WATCHED_DATABASES[name]: variable for name, (variable, _url) in _watched.items()},
}

# Every query the dashboard runs is bounded, so it can never pile onto a struggling database.
STATEMENT_TIMEOUT_MS = env.integer("DASHBOARD_STATEMENT_TIMEOUT_MS", 5000, minimum=100)
LOCK_TIMEOUT_MS = env.integer("DASHBOARD_LOCK_TIMEOUT_MS", 1000, minimum=10)
# The URLs lead to PgBouncer (or another pooler): the limits and the schema are set per transaction.
POOLER = env.boolean("DASHBOARD_POOLER", default=False)
DATABASES = {
    "default": env.database(
        DATABASE_SOURCES["default"],
        DASHBOARD_DATABASE_URL,
        schema=DASHBOARD_SCHEMA,
        statement_timeout_ms=STATEMENT_TIMEOUT_MS,
        lock_timeout_ms=LOCK_TIMEOUT_MS,
        pooler=POOLER,
    ),
    **{
        WATCHED_DATABASES[name]: env.database(
            variable,
            url,
            schema=None,
            statement_timeout_ms=STATEMENT_TIMEOUT_MS,
            lock_timeout_ms=LOCK_TIMEOUT_MS,
            pooler=POOLER,
        )
        for name, (variable, url) in _watched.items()
    },
}
DATABASE_ROUTERS = ["queues.watched.PgmqRouter"]

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
# Alert e-mail goes through Django's mail settings (SMTP unless DJANGO_EMAIL_BACKEND says otherwise).
EMAIL_BACKEND = env.text("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.text("DJANGO_EMAIL_HOST", "localhost")
EMAIL_PORT = env.integer("DJANGO_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env.text("DJANGO_EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env.text("DJANGO_EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env.boolean("DJANGO_EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = ALERT_NOTIFY_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = env.text("DJANGO_DEFAULT_FROM_EMAIL", "pgmq-dashboard@localhost")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "queues",
]

MIDDLEWARE = [
    "queues.middleware.HealthEndpointMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "queues.middleware.NotCachedMiddleware",
    "queues.middleware.WatchedDatabaseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.proxy_auth.ProxyHeaderUserMiddleware",
    "queues.account_audit.ActingUserMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "queues.sign_in_limits.SignInLimitMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "queues.middleware.DatabaseUnavailableMiddleware",
]

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
}

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [places.FILES_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "queues.context_processors.watched_database",
                "queues.context_processors.refresh_interval",
                "queues.access.read_only_context",
                "queues.context_processors.version",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in: the login form, its failures limited by queues/sign_in_limits.py (its backend must come
# first), and, when DASHBOARD_REMOTE_USER_HEADER names a header, the user a trusted reverse proxy signed in.
REMOTE_USER_HEADER = env.text("DASHBOARD_REMOTE_USER_HEADER")
REMOTE_USER_GROUP = env.text("DASHBOARD_REMOTE_USER_GROUP", "Viewer")
AUTHENTICATION_BACKENDS = [
    "queues.sign_in_limits.SignInLimitBackend",
    "queues.access.DatabaseScopedModelBackend",
    *(["dashboard.proxy_auth.ProxyHeaderUserBackend"] if REMOTE_USER_HEADER else []),
]
# Failed sign-ins per (name, address) and per address before each further attempt must wait 1, 2, 4 ...
# seconds, up to the cap; forgotten after the window without a failure (README "Sign-in limits").
SIGN_IN_FAILURE_LIMIT = env.integer("DASHBOARD_LOGIN_FAILURE_LIMIT", 5, minimum=1)
SIGN_IN_ADDRESS_FAILURE_LIMIT = env.integer("DASHBOARD_LOGIN_ADDRESS_FAILURE_LIMIT", 50, minimum=1)
SIGN_IN_MAX_DELAY_SECONDS = env.integer("DASHBOARD_LOGIN_MAX_DELAY_SECONDS", 300, minimum=1)
SIGN_IN_FAILURE_WINDOW = timedelta(minutes=env.integer("DASHBOARD_LOGIN_FAILURE_WINDOW_MINUTES", 15, minimum=1))
if SIGN_IN_FAILURE_WINDOW.total_seconds() <= SIGN_IN_MAX_DELAY_SECONDS:
    env.fail(
        "DASHBOARD_LOGIN_FAILURE_WINDOW_MINUTES must be longer than DASHBOARD_LOGIN_MAX_DELAY_SECONDS: "
        "failures forgotten before the wait ends would never make anyone wait"
    )
if env.text("DASHBOARD_LOGIN_LOCKOUT_MINUTES"):
    env.fail(
        "DASHBOARD_LOGIN_LOCKOUT_MINUTES is gone: failed sign-ins now back off instead of locking out; "
        "see DASHBOARD_LOGIN_MAX_DELAY_SECONDS and DASHBOARD_LOGIN_FAILURE_WINDOW_MINUTES"
    )
# The client's address behind proxies: the header they append it to (e.g. X-Forwarded-For) and how many
# of them stand in front (the client is that many hops from its right). Unset: REMOTE_ADDR.
CLIENT_IP_HEADER = env.header_name("DASHBOARD_CLIENT_IP_HEADER")
TRUSTED_PROXIES = env.integer("DASHBOARD_TRUSTED_PROXIES", 1, minimum=1)
if env.text("DASHBOARD_TRUSTED_PROXIES") and not CLIENT_IP_HEADER:
    env.fail("DASHBOARD_TRUSTED_PROXIES needs DASHBOARD_CLIENT_IP_HEADER, the header those proxies append to")
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Served over HTTPS (directly or behind a proxy that terminates TLS): secure cookies, HSTS and a
# redirect from http. On by default with debug off; `make run` turns it off for its local http.
HTTPS = env.boolean("DASHBOARD_HTTPS", default=not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = env.integer("DASHBOARD_HSTS_SECONDS", 31_536_000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = bool(SECURE_HSTS_SECONDS)
# The header a TLS-terminating proxy sets to say the request came over https, e.g. X-Forwarded-Proto.
# Only set it when that proxy always sets (or strips) the header: a client could send it too.
if env.text("DASHBOARD_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + env.text("DASHBOARD_PROXY_SSL_HEADER").upper().replace("-", "_"), "https")
SESSION_COOKIE_HTTPONLY = True
# A sign-in lasts this long (Django's default, two weeks, is long for a tool that acts on production).
SESSION_COOKIE_AGE = env.integer("DASHBOARD_SESSION_HOURS", 12, minimum=1) * 3600
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Every script and style comes from the dashboard's own static files: nothing inline, nothing else.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Absolute: under /db/<name>/ the script prefix changes, and a relative STATIC_URL would follow it.
STATIC_URL = "/static/"
STATIC_ROOT = places.static_root()
# Under a prefix of their own, so a project mounting the app (README "Mount it") keeps its own names.
STATICFILES_DIRS = [("pgmq_dashboard", places.FILES_DIR / "static")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.text("DJANGO_LOG_LEVEL", "INFO").upper()},
}

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
from dashboard.app_settings import *  # noqa: F403 (the dashboard's own settings)
from dashboard.app_settings import ALERT_NOTIFY_TIMEOUT_SECONDS, LOCK_TIMEOUT_MS, POOLER, STATEMENT_TIMEOUT_MS

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
# The alias of the dashboard's own tables; mounted in another project, its own alias (dashboard/mount.py).
DASHBOARD_DATABASE_ALIAS = "default"
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

"""A minimal Django project of someone else's that mounts the dashboard under /pgmq/, as the README's
"Mount it in your own Django project" says: its own users, sessions, login page and base template."""

import os
from pathlib import Path

from dashboard.env import database
from dashboard.mount import *  # noqa: F403  the dashboard's own settings, from DASHBOARD_* variables
from dashboard.mount import (
    DASHBOARD_APPS,
    DASHBOARD_CONTEXT_PROCESSORS,
    DASHBOARD_MIDDLEWARE,
    DASHBOARD_STATICFILES_DIRS,
    dashboard_database,
    pgmq_database,
)

SECRET_KEY = "a-host-project-key-only-for-tests-" + "x" * 40
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *DASHBOARD_APPS,
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    *DASHBOARD_MIDDLEWARE,
]
ROOT_URLCONF = "tests.host_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                *DASHBOARD_CONTEXT_PROCESSORS,
            ]
        },
    }
]
DATABASES = {
    "default": database(
        "HOST_DATABASE_URL",
        os.environ["HOST_DATABASE_URL"],
        schema=None,
        statement_timeout_ms=5000,
        lock_timeout_ms=1000,
    ),
    "pgmq": pgmq_database(os.environ["PGMQ_DATABASE_URL"]),
}
DATABASES["pgmq_dashboard"] = dashboard_database(DATABASES["default"])
LOGIN_URL = "/accounts/login/"
STATIC_URL = "static/"
STATICFILES_DIRS = DASHBOARD_STATICFILES_DIRS
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

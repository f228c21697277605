"""When the database is not there, or has no pgmq: a clear page, never a server error."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from dashboard import __version__
from tests.conftest import BASE_DIR, free_port, gunicorn, uses_databases, with_database
from tests.http_client import HttpSession


def test_an_unreachable_database_gives_503_pages_and_health_naming_it(tmp_path):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/queues"
    with gunicorn(closed, tmp_path) as base_url:
        session = HttpSession(base_url)

        health = session.get("/healthz")
        assert health.status == 503
        assert json.loads(health.text)["status"] == "unavailable"
        assert "PGMQ_DATABASE_URL" in health.text

        assert session.get("/login/").status == 200  # the form needs no database

        session.set_cookie("sessionid", "a-session-the-database-would-know")
        page = session.get("/")
        assert page.status == 503
        assert "The database is not reachable" in page.text
        assert "cannot connect to PGMQ_DATABASE_URL" in page.text


@pytest.fixture
def database_without_pgmq(pgmq_sql, pgmq_database_url):
    name = f"no_pgmq_{secrets.token_hex(4)}"
    pgmq_sql.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pgmq_database_url, name)
    pgmq_sql.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@uses_databases
def test_a_database_without_pgmq_says_so(database_without_pgmq, tmp_path):
    password = secrets.token_urlsafe(12)
    for command in ("migrate", "create_demo_user"):
        subprocess.run(
            [sys.executable, "manage.py", command],
            cwd=BASE_DIR,
            check=True,
            capture_output=True,
            env={**os.environ, "PGMQ_DATABASE_URL": database_without_pgmq, "DEMO_PASSWORD": password},
        )
    with gunicorn(database_without_pgmq, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("demo", password)
        page = session.get("/")
        assert page.status == 503
        assert "pgmq is not installed in this database" in page.text


@uses_databases
def test_health_answers_probes_by_ip_address_whatever_the_allowed_hosts(tmp_path, pgmq_database_url):
    with gunicorn(pgmq_database_url, tmp_path, DJANGO_ALLOWED_HOSTS="dashboard.example.com") as base_url:
        session = HttpSession(base_url)
        health = session.get("/healthz")
        assert (health.status, json.loads(health.text)) == (200, {"status": "ok", "version": __version__})
        assert session.get("/login/").status == 400  # everything else still checks the Host header


@uses_databases
def test_a_query_stopped_by_a_timeout_or_a_lock_is_a_clear_503(signed_in_client, make_queue, pgmq_database_url):
    import psycopg

    make_queue("truncating", messages=3)
    with psycopg.connect(pgmq_database_url) as holder:  # as a purge (TRUNCATE) or a migration would
        holder.execute("LOCK TABLE pgmq.q_truncating IN ACCESS EXCLUSIVE MODE")
        response = signed_in_client.get("/")
    assert response.status_code == 503
    assert "The database took too long to answer" in response.content.decode()
    assert signed_in_client.get("/").status_code == 200  # and it recovers as soon as the lock is gone

"""The dashboard mounted in someone else's Django project (tests/host_project/: its settings, URLs,
login page and base template), as the README's "Mount it in your own Django project" says: the
project's own users, sessions and sign-in, the roles as its groups, pgmq as its database alias
"pgmq", and every link under /pgmq/. Run in processes of its own, on a new database for the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.conftest import BASE_DIR, uses_databases, with_database
from tests.pages import parse

pytestmark = uses_databases


@pytest.fixture
def host_database(pgmq_database_url):
    name = f"host_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(pgmq_database_url, name)
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def in_host_project(host_database: str, pgmq_database_url: str, *args: str) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.host_project.settings",
        "HOST_DATABASE_URL": host_database,
        "PGMQ_DATABASE_URL": pgmq_database_url,
    }
    ran = subprocess.run([sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert ran.returncode == 0, ran.stderr[-4000:]
    return ran.stdout


def test_a_project_mounts_the_dashboard_under_its_own_path(host_database, pgmq_database_url, make_queue, pgmq_sql):
    queue = make_queue("host_orders", messages=2)
    in_host_project(host_database, pgmq_database_url, "-m", "django", "migrate", "--noinput")
    seen = json.loads(in_host_project(host_database, pgmq_database_url, "-m", "tests.host_project.walk", queue))

    assert seen["signed_out"].startswith("/accounts/login/?next=/pgmq/")  # the project's own sign-in page
    assert seen["sign_in"] == 302
    status, html = seen["overview"]
    assert status == 200
    overview = parse(html)
    assert overview.select_one(f'a.queue-link[href="/pgmq/queues/{queue}/"]') is not None
    links = [a["href"] for a in overview.select("a[href^='/']")]
    assert links and all(link.startswith(("/pgmq/", "/static/pgmq_dashboard/", "/admin/")) for link in links), links
    assert {s["src"].split("/")[2] for s in overview.select("script[src]")} == {"pgmq_dashboard", "django_htmx"}
    assert overview.select_one("form.signout")["action"] == "/accounts/logout/"

    status, html = seen["queue"]
    page = parse(html)
    assert status == 200 and queue in page.select_one("h1").get_text()
    send = page.find("a", string="Send a message")
    assert send["href"] == f"/pgmq/queues/{queue}/send/"

    status, location = seen["send"]
    assert status in (200, 302), seen["send"]
    assert pgmq_sql.execute(f"SELECT count(*) FROM pgmq.q_{queue}").fetchone()[0] == 3
    assert pgmq_sql.execute(f"SELECT message FROM pgmq.q_{queue} ORDER BY msg_id DESC LIMIT 1").fetchone()[0] == {
        "from": "the host"
    }

    status, figures = seen["api"]
    assert status == 200 and queue in json.dumps(figures), figures
    assert seen["api_missing"][0] == 404

    assert "The host project's own base template." in seen["host_page"]
    with psycopg.connect(host_database) as host:
        assert host.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq_dashboard'").fetchone()
        assert host.execute("SELECT count(*) FROM auth_group WHERE name = 'Operator'").fetchone()[0] == 1

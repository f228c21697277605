"""The dashboard mounted in someone else's Django project (tests/host_project/: its settings, URLs,
login page and base template), as the README's "Mount it in your own Django project" says: the
project's own users, sessions and sign-in, the roles as its groups, pgmq as its database alias
"pgmq", the dashboard's tables in the schema pgmq_dashboard of the project's database (its alias
"pgmq_dashboard") beside the project's own, and every link under /pgmq/. Run in processes of its
own, on a new database for the project."""

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
    with psycopg.connect(host_database, autocommit=True) as host:  # a table of the project's, there before
        host.execute("CREATE TABLE shop_order (id int PRIMARY KEY, customer text)")
        host.execute("INSERT INTO shop_order VALUES (1, 'ada')")
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
    assert seen["api_by_token"] == 200
    assert seen["api_missing"][0] == 404
    status, html = seen["audit"]
    assert status == 200
    actions = [row.get_text(" ", strip=True) for row in parse(html).select("tbody tr")]
    assert any("host-oncall" in row and queue in row for row in actions), actions

    assert "The host project's own base template." in seen["host_page"]
    assert seen["left"] is False  # the project deletes a user who had a token (the token goes with them)
    with psycopg.connect(host_database) as host:
        assert host.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq_dashboard'").fetchone()
        assert host.execute("SELECT count(*) FROM auth_group WHERE name = 'Operator'").fetchone()[0] == 1
        schemas: dict[str, set[str]] = {}
        for name, schema in host.execute(TABLES_BY_SCHEMA):
            schemas.setdefault(name, set()).add(schema)
        dashboard_tables = {name for name in schemas if name.startswith("queues_")}
        assert {"queues_auditentry", "queues_bulkjob", "queues_queuesample", "queues_apitoken"} <= dashboard_tables
        assert {name: schemas[name] for name in dashboard_tables} == dict.fromkeys(dashboard_tables, {"pgmq_dashboard"})
        # The project's own tables stay in public, and nothing of the project's is in the dashboard's schema
        # (but the record of the dashboard's own migrations).
        host_tables = {"shop_order", "auth_user", "auth_group", "django_session", "django_content_type"}
        assert {name: schemas[name] for name in host_tables} == dict.fromkeys(host_tables, {"public"})
        assert {name for name, found in schemas.items() if "pgmq_dashboard" in found} == {
            *dashboard_tables,
            "django_migrations",
        }
        assert host.execute("SELECT customer FROM shop_order WHERE id = 1").fetchone()[0] == "ada"
        entries = host.execute("SELECT action FROM pgmq_dashboard.queues_auditentry ORDER BY id").fetchall()
        assert ("send",) in entries and ("create_token",) in entries, entries
        token_owner = host.execute(
            "SELECT u.username FROM pgmq_dashboard.queues_apitoken t JOIN public.auth_user u ON u.id = t.user_id"
        ).fetchall()
        assert token_owner == [("host-oncall",)]  # the leaver's token went with them


# Every table of the database with its schema.
TABLES_BY_SCHEMA = """
    SELECT relname, nspname FROM pg_class JOIN pg_namespace ON pg_namespace.oid = relnamespace
    WHERE relkind IN ('r', 'p') AND nspname NOT IN ('pg_catalog', 'information_schema')
"""

"""The README's roles, taken from the README itself: the read-only role reads every queue and can
change nothing in pgmq (an action through the dashboard is refused, clearly); the operating role
can do every message action, and purge."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

from dashboard.embedded_postgres import install_pgmq
from tests.conftest import BASE_DIR, gunicorn, with_database
from tests.http_client import HttpSession
from tests.pages import number, overview_rows, parse


def readme_sql(marker: str) -> str:
    readme = (BASE_DIR / "README.md").read_text()
    return re.search(rf"<!-- {marker} -->\s*```sql\n(.*?)```", readme, re.DOTALL).group(1)


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role)}:{quote(password)}@{host}"))


def database_with_role(pgmq_sql, pgmq_database_url, marker: str):
    """A fresh database with pgmq and a queue, and the README's role from the block after `marker`
    (under a unique name, since roles belong to the whole server); yields the owner's and the
    role's URLs."""
    database = f"roles_{secrets.token_hex(4)}"
    template = readme_sql(marker)
    readme_role = re.search(r"CREATE ROLE (\w+)", template).group(1)
    role, password = f"{readme_role}_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    pgmq_sql.execute(f'CREATE DATABASE "{database}"')
    url = with_database(pgmq_database_url, database)
    install_pgmq(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pgmq.create('watched')")
        connection.execute("""SELECT pgmq.send_batch('watched', array_fill('{"a": 1}'::jsonb, ARRAY[4]))""")
        connection.execute(template.replace(readme_role, role).replace("change-me", password))
    try:
        yield url, as_role(url, role, password)
    finally:
        pgmq_sql.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        pgmq_sql.execute(f'DROP OWNED BY "{role}"')  # its grants in other databases: none; here for safety
        pgmq_sql.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def database_and_role(pgmq_sql, pgmq_database_url):
    yield from database_with_role(pgmq_sql, pgmq_database_url, "read-only-role")


@pytest.fixture
def database_and_operating_role(pgmq_sql, pgmq_database_url):
    yield from database_with_role(pgmq_sql, pgmq_database_url, "operating-role")


def dashboard_login(role_url: str, username: str, role: str) -> str:
    """Migrate as the role, and make a login with a dashboard role; its password."""
    password = secrets.token_urlsafe(12)
    environment = {**os.environ, "PGMQ_DATABASE_URL": role_url, "PASSWORD": password}
    for command in (["migrate"], ["add_user", username, "--role", role]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=BASE_DIR, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    return password


def test_the_readme_role_reads_every_queue(database_and_role, tmp_path):
    _, role_url = database_and_role
    password = dashboard_login(role_url, "reader", "viewer")
    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("reader", password)
        rows = overview_rows(parse(session.get("/").text))
        assert number(rows["watched"]["backlog"]) == 4
        assert session.get("/queues/watched/").status == 200


def test_with_the_read_only_role_actions_are_hidden_with_a_notice_saying_why(database_and_role, tmp_path):
    _, role_url = database_and_role
    password = dashboard_login(role_url, "boss", "admin")
    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("boss", password)
        for path in (
            "/queues/watched/",
            "/queues/watched/messages/",
            "/queues/watched/messages/?source=archive",
            "/queues/watched/messages/1/",
        ):
            response = session.get(path)
            assert response.status == 200, path
            page = parse(response.text)
            notice = " ".join(page.select_one("[data-write-refusal]").get_text().split())
            assert "dashboard_reader" in notice and "DELETE on pgmq.q_watched" in notice, (path, notice)
            assert page.select("[data-action-form], form.action-bar, input[name=msg_id]") == [], path
            assert not page.find("a", string="Send a message") and not page.find("a", string="Purge…"), path


def test_an_action_the_read_only_role_may_not_do_is_refused_saying_why(database_and_role, tmp_path):
    owner_url, role_url = database_and_role
    password = dashboard_login(role_url, "boss", "admin")
    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("boss", password)
        session.get("/queues/watched/messages/")
        response = session.post(
            "/queues/watched/act/",
            {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1", "confirmed": "1"},
        )
        assert response.status == 403
        notice = " ".join(parse(response.text).select_one(".notice").get_text().split())
        assert "The database refused this" in notice and "permission denied" in notice
    with psycopg.connect(owner_url) as connection:
        assert connection.execute("SELECT count(*) FROM pgmq.q_watched").fetchone()[0] == 4


def test_the_operating_role_does_every_message_action_and_purges(database_and_operating_role, tmp_path):
    owner_url, role_url = database_and_operating_role
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute("SELECT pgmq.create('watched_dlq')")  # created after the grants: default privileges
    password = dashboard_login(role_url, "boss", "admin")
    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("boss", password)
        listing = parse(session.get("/queues/watched/messages/").text)
        assert listing.select_one("[data-action-form]") and not listing.select("[data-write-refusal]")
        for action, msg_id, extra in (
            ("delete", "1", {}),
            ("archive", "2", {}),
            ("retry", "3", {}),
            ("move", "4", {"destination": "watched_dlq", "original": "delete"}),
            ("requeue", "2", {"source": "archive", "destination": "watched"}),
        ):
            response = session.post(
                "/queues/watched/act/",
                {"action": action, "source": "live", "scope": "selected", "msg_id": msg_id, "confirmed": "1", **extra},
            )
            assert response.status == 200, (action, response.text[:500])
        sent = session.post("/queues/watched_dlq/send/", {"message": '{"by": "hand"}', "delay_s": "0"})
        assert sent.status == 200 and "/queues/watched_dlq/messages/" in sent.url
        purged = session.post("/queues/watched/purge/", {"confirm_name": "watched"})
        assert purged.status == 200 and purged.url.endswith("/queues/watched/")
    with psycopg.connect(owner_url) as connection:

        def count(table: str) -> int:
            return connection.execute(f"SELECT count(*) FROM pgmq.{table}").fetchone()[0]

        assert (count("q_watched"), count("a_watched"), count("q_watched_dlq")) == (0, 1, 2)


def test_the_readme_role_cannot_change_a_message(database_and_role):
    _, role_url = database_and_role
    with psycopg.connect(role_url, autocommit=True) as connection:
        for statement in (
            "SELECT pgmq.send('watched', '{}')",
            "SELECT pgmq.delete('watched', 1::bigint)",
            "SELECT pgmq.archive('watched', 1::bigint)",
            "SELECT * FROM pgmq.read('watched', 30, 1)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)

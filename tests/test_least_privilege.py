"""The README's least-privilege role, taken from the README itself: it can read every queue, and
can change nothing in pgmq."""
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


@pytest.fixture
def database_and_role(pgmq_sql, pgmq_database_url):
    """A fresh database with pgmq and a queue, and the README's role (under a unique name, since
    roles belong to the whole server)."""
    database = f"roles_{secrets.token_hex(4)}"
    role, password = f"dashboard_reader_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    pgmq_sql.execute(f'CREATE DATABASE "{database}"')
    url = with_database(pgmq_database_url, database)
    install_pgmq(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pgmq.create('watched')")
        connection.execute("""SELECT pgmq.send_batch('watched', array_fill('{"a": 1}'::jsonb, ARRAY[4]))""")
        sql = readme_sql("read-only-role").replace("dashboard_reader", role).replace("change-me", password)
        connection.execute(sql)
    yield url, as_role(url, role, password)
    pgmq_sql.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    pgmq_sql.execute(f'DROP ROLE "{role}"')


def test_the_readme_role_reads_every_queue(database_and_role, tmp_path):
    _, role_url = database_and_role
    password = secrets.token_urlsafe(12)
    environment = {**os.environ, "PGMQ_DATABASE_URL": role_url, "DEMO_PASSWORD": password}
    for command in ("migrate", "create_demo_user"):
        result = subprocess.run([sys.executable, "manage.py", command], cwd=BASE_DIR, env=environment,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("demo", password)
        rows = overview_rows(parse(session.get("/").text))
        assert number(rows["watched"]["backlog"]) == 4
        assert session.get("/queues/watched/").status == 200


def test_the_readme_role_cannot_change_a_message(database_and_role):
    _, role_url = database_and_role
    with psycopg.connect(role_url, autocommit=True) as connection:
        for statement in ("SELECT pgmq.send('watched', '{}')", "SELECT pgmq.delete('watched', 1::bigint)",
                          "SELECT pgmq.archive('watched', 1::bigint)", "SELECT * FROM pgmq.read('watched', 30, 1)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)

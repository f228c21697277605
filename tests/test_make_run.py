"""`make run` end to end: `python -m dashboard.run`, which is what the Makefile runs once installed."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from dashboard.demo import DEMO_QUEUES
from tests.conftest import BASE_DIR, free_port, sign_in, uses_databases, wait_for, with_database
from tests.http_client import HttpSession
from tests.pages import number, overview_rows, parse

# The test database must exist even when this file runs alone: the browser fixture's queue helper
# and the "your own database" fixture work in it.
pytestmark = uses_databases


@dataclass
class Launched:
    process: subprocess.Popen
    base_url: str
    var_dir: Path
    output: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.output)

    def password(self) -> str:
        return re.search(r"sign in as demo / (\S+)", self.text()).group(1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Launched]]:
    """Start `python -m dashboard.run` as a newcomer would: no secret key, nothing configured."""
    launched: list[Launched] = []

    def start(database_url: str | None) -> Launched:
        port = free_port()
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PGMQ_DATABASE_URL", "DJANGO_SECRET_KEY", "DEMO"}
        }
        environment.update(PORT=str(port), DASHBOARD_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
        if database_url:
            environment["PGMQ_DATABASE_URL"] = database_url
        process = subprocess.Popen(
            [sys.executable, "-m", "dashboard.run"],
            cwd=BASE_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        run = Launched(process, f"http://127.0.0.1:{port}", tmp_path / "var")
        threading.Thread(target=lambda: run.output.extend(process.stdout), daemon=True).start()
        launched.append(run)
        wait_for(
            lambda: "The dashboard is ready" in run.text() or process.poll() is not None,
            timeout=180,
            what="`make run` to say the dashboard is ready",
        )
        assert process.poll() is None, run.text()
        return run

    yield start
    for run in launched:
        if run.process.poll() is None:
            run.stop()
        # pytest shows it with a failure only: what `make run` said (a server that never bound its port, say).
        print(f"`python -m dashboard.run` said:\n{run.text()}")


@pytest.mark.browser
def test_make_run_serves_the_demo_with_its_data_moving(launch, page):
    run = launch(database_url=None)
    assert run.password() == "demo"

    sign_in(page, run.base_url, "demo", "demo")
    for queue in DEMO_QUEUES:
        expect(page.get_by_role("link", name=queue, exact=True)).to_be_visible()

    def snapshot() -> tuple[str, dict[str, str]]:
        page.goto(run.base_url + "/queues/orders/")
        backlog = page.locator("[data-stat=backlog]").inner_text()
        page.goto(run.base_url + "/queues/orders/messages/?sort=msg_id")  # oldest first: those being read
        rows = page.locator("tr[data-msg-id]")
        message_ids = rows.evaluate_all("rows => rows.map(row => row.dataset.msgId)")
        return backlog, dict(zip(message_ids, rows.locator("[data-column=read_ct]").all_inner_texts(), strict=True))

    seen = {"backlog changed": False, "read_ct changed": False}
    previous = snapshot()

    def both_changed_between_two_loads() -> bool:
        nonlocal previous
        current = snapshot()
        seen["backlog changed"] |= current[0] != previous[0]
        seen["read_ct changed"] |= any(
            current[1][msg_id] != previous[1][msg_id] for msg_id in current[1].keys() & previous[1].keys()
        )
        previous = current
        return all(seen.values())

    wait_for(both_changed_between_two_loads, timeout=90, what=lambda: f"the demo data to move ({seen})")
    # Both demo databases are watched and moving.
    page.goto(run.base_url + "/db/staging/")
    expect(page.locator(".database-switcher summary")).to_contain_text("staging")
    for queue in DEMO_QUEUES:
        expect(page.get_by_role("link", name=queue, exact=True)).to_be_visible()
    page.goto("about:blank")  # no live region left refreshing against the server being stopped

    assert run.stop() == 0
    assert not (run.var_dir / "pgdata" / "postmaster.pid").exists(), "the embedded PostgreSQL is still running"
    assert (run.var_dir / "secret_key").stat().st_mode & 0o077 == 0


@pytest.fixture
def your_own_database(pgmq_sql, pgmq_database_url) -> Iterator[str]:
    """A database of a user's own, with pgmq and one queue of three messages."""
    name = f"own_{secrets.token_hex(4)}"
    pgmq_sql.execute(f'CREATE DATABASE "{name}"')
    url = with_database(pgmq_database_url, name)
    from dashboard.embedded_postgres import install_pgmq

    install_pgmq(url)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SELECT pgmq.create('existing')")
        connection.execute("""SELECT pgmq.send_batch('existing', array_fill('{"kept": true}'::jsonb, ARRAY[3]))""")
    yield url
    pgmq_sql.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def everything_but_the_dashboard_schema(url: str) -> dict[str, list]:
    with psycopg.connect(url) as connection:
        return {
            "tables": connection.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema', 'pgmq_dashboard') ORDER BY 1, 2"
            ).fetchall(),
            "queues": connection.execute("SELECT * FROM pgmq.meta ORDER BY queue_name").fetchall(),
            "messages": connection.execute("SELECT * FROM pgmq.q_existing ORDER BY msg_id").fetchall(),
            "archive": connection.execute("SELECT * FROM pgmq.a_existing ORDER BY msg_id").fetchall(),
        }


def test_make_run_on_your_own_database_writes_no_demo_data(launch, your_own_database):
    before = everything_but_the_dashboard_schema(your_own_database)

    run = launch(database_url=your_own_database)
    password = run.password()
    assert password != "demo"  # never demo/demo in a database of your own
    session = HttpSession(run.base_url)
    session.sign_in("demo", password)
    rows = overview_rows(parse(session.get("/").text))
    assert list(rows) == ["existing"]
    assert number(rows["existing"]["backlog"]) == 3
    assert "demo workload" not in run.text()
    assert run.stop() == 0

    assert everything_but_the_dashboard_schema(your_own_database) == before

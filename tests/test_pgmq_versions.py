"""pgmq as people run it (tests/pgmq_shapes.py): one dashboard, under gunicorn as in production,
watching the test database (pgmq installed from its SQL, as "main") and one database per shape:
pgmq installed with CREATE EXTENSION ("ext"), shaped as 1.7 left it ("v17"), upgraded over the
years ("upgraded") and a 1.7 dump restored under a newer pgmq ("restored"). Every page and every
action is checked against SQL in each, in one worker process and one job runner, in turn: what
one database's pgmq can do must never be taken for another's."""

from __future__ import annotations

import select
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from psycopg import sql

from queues.models import BulkJob
from tests.conftest import gunicorn, run_jobs_once, uses_databases, wait_for
from tests.http_client import HttpSession
from tests.pages import number, overview_rows, parse, stat
from tests.pgmq_shapes import (
    CURRENT,
    EXTENSION,
    PGMQ_1_7,
    RESTORED_1_7_DUMP,
    UPGRADED,
    create_queue,
    read_like_a_consumer,
    shaped_database,
)

# Module-scoped databases and server: every test of this module runs in one worker (pytest-xdist).
pytestmark = [uses_databases, pytest.mark.xdist_group("pgmq_versions")]

PASSWORD = "a-long-test-password-42"
SHAPED = {"ext": EXTENSION, "v17": PGMQ_1_7, "upgraded": UPGRADED, "restored": RESTORED_1_7_DUMP}
SHAPES = {"main": CURRENT, **SHAPED}


def prefix(database: str) -> str:
    return "" if database == "main" else f"/db/{database}"


@pytest.fixture(scope="module")
def database_urls(pgmq_database_url: str) -> Iterator[dict[str, str]]:
    base = settings.DATABASES["default"]["NAME"]
    urls = {"main": pgmq_database_url}
    urls.update({name: shaped_database(pgmq_database_url, f"{base}_{name}", shape) for name, shape in SHAPED.items()})
    yield urls
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        for name in SHAPED:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(f"{base}_{name}"))
            )


@pytest.fixture(scope="module")
def watching_every_shape(database_urls: dict[str, str]) -> dict[str, str]:
    """The environment of a dashboard watching every shape (main first)."""
    return {
        "PGMQ_DATABASE_URL": database_urls["main"],
        **{f"PGMQ_DATABASE_URL_{name.upper()}": database_urls[name] for name in SHAPED},
    }


@pytest.fixture(scope="module")
def dashboard(watching_every_shape: dict[str, str], tmp_path_factory) -> Iterator[str]:
    extra = {key: value for key, value in watching_every_shape.items() if key != "PGMQ_DATABASE_URL"}
    # One worker, so that what it learns of one database is there when it serves the next.
    with gunicorn(watching_every_shape["PGMQ_DATABASE_URL"], tmp_path_factory.mktemp("gunicorn"), **extra) as url:
        yield url


@pytest.fixture
def pgmq_in(database_urls: dict[str, str]) -> Iterator[dict[str, psycopg.Connection]]:
    """An autocommit connection to each database; the queues made in them dropped after the test."""
    connections = {name: psycopg.connect(url, autocommit=True) for name, url in database_urls.items()}
    yield connections
    for connection in connections.values():
        for (name,) in connection.execute("SELECT queue_name FROM pgmq.meta").fetchall():
            connection.execute("SELECT pgmq.drop_queue(%s)", [name])
        connection.close()


def signed_in(base_url: str, django_user_model, role: str) -> HttpSession:
    user = django_user_model.objects.create_user(f"{role.lower()}-of-every-shape", password=PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    session = HttpSession(base_url)
    session.sign_in(user.username, PASSWORD)
    return session


def orders(connection: psycopg.Connection, shape: str) -> None:
    """orders: 8 messages; 1 and 2 in flight, 3 delayed an hour, 4 with headers. orders_dlq: empty."""
    create_queue(connection, shape, "orders")
    create_queue(connection, shape, "orders_dlq")
    connection.execute(
        "SELECT pgmq.send_batch('orders', array_agg(jsonb_build_object('n', i))) FROM generate_series(1, 8) i"
    )
    connection.execute("""UPDATE pgmq.q_orders SET headers = '{"trace": "t4"}' WHERE msg_id = 4""")
    read_like_a_consumer(connection, "orders", [1, 2], 600)
    connection.execute("UPDATE pgmq.q_orders SET vt = now() + interval '1 hour' WHERE msg_id = 3")


def ids(connection: psycopg.Connection, table: str, where: str = "true") -> list[int]:
    return [row[0] for row in connection.execute(f"SELECT msg_id FROM pgmq.{table} WHERE {where} ORDER BY msg_id")]


def act(session: HttpSession, database: str, action: str, msg_id: int, **extra: str):
    data = {"action": action, "source": "live", "scope": "selected", "msg_id": str(msg_id), "confirmed": "1", **extra}
    return session.post(f"{prefix(database)}/queues/orders/act/", data)


DATABASES_WHOSE_TABLES_MATCH = ["main", "ext", "v17", "upgraded"]


def test_every_page_and_action_matches_sql_in_every_shape_in_turn(dashboard, pgmq_in, django_user_model):
    """In one worker, database after database: the pages say what SQL says, and every action does
    what it says. Before each database's capabilities were its own, a retry on the 1.7 database
    after one on main answered 500 (set_vt over an array of ids, which 1.7 lacks)."""
    assert pgmq_in["ext"].execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    session = signed_in(dashboard, django_user_model, "Operator")
    for database in DATABASES_WHOSE_TABLES_MATCH:
        pgmq = pgmq_in[database]
        orders(pgmq, SHAPES[database])
        at = prefix(database)

        row = overview_rows(parse(session.get(f"{at}/").text))["orders"]
        assert number(row["backlog"]) == 8, database
        assert number(row["in-flight"]) == 2 and number(row["delayed"]) == 1, (database, row)
        page = session.get(f"{at}/queues/orders/")
        assert page.status == 200, (database, page.text[:500])
        assert number(stat(parse(page.text), "backlog")) == 8
        listed = parse(session.get(f"{at}/queues/orders/messages/").text)
        assert sorted(int(tr["data-msg-id"]) for tr in listed.select("tr[data-msg-id]")) == list(range(1, 9))
        for msg_id in (1, 4):
            assert session.get(f"{at}/queues/orders/messages/{msg_id}/").status == 200, (database, msg_id)

        assert act(session, database, "retry", 1, include_in_flight="1").status == 200, database
        assert ids(pgmq, "q_orders", "vt <= now()") == [1, 4, 5, 6, 7, 8], database
        until = pgmq.execute("SELECT to_char(now() + interval '2 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS')").fetchone()[0]
        assert act(session, database, "delay", 5, until=until).status == 200
        assert ids(pgmq, "q_orders", "vt > now() + interval '90 minutes'") == [5], database
        assert act(session, database, "archive", 6).status == 200
        assert ids(pgmq, "a_orders") == [6], database
        assert act(session, database, "move", 7, destination="orders_dlq", original="archive").status == 200
        assert ids(pgmq, "a_orders") == [6, 7] and ids(pgmq, "q_orders_dlq") == [1], database
        edited = session.post(
            f"{at}/queues/orders/messages/4/edit/", {"message": '{"n": 40}', "headers": '{"trace": "t4"}'}
        )
        assert edited.status == 200, (database, edited.text[:500])
        assert pgmq.execute(
            "SELECT message, headers - 'x-pgmq-dashboard-origin' FROM pgmq.q_orders WHERE msg_id = 9"
        ).fetchone() == (
            {"n": 40},
            {"trace": "t4"},
        ), database
        assert act(session, database, "delete", 8).status == 200
        assert ids(pgmq, "q_orders") == [1, 2, 3, 5, 9], database


def test_one_job_runner_retries_on_every_shape_in_turn(dashboard, pgmq_in, django_user_model, watching_every_shape):
    session = signed_in(dashboard, django_user_model, "Operator")
    for database in DATABASES_WHOSE_TABLES_MATCH:
        orders(pgmq_in[database], SHAPES[database])
        started = session.post(
            f"{prefix(database)}/queues/orders/act/",
            {
                "action": "retry",
                "source": "live",
                "scope": "matching",
                "filter_query": "",
                "confirmed": "1",
                "include_in_flight": "1",
            },
        )
        assert started.status == 200, started.text[:500]
    assert BulkJob.objects.filter(status="pending").count() == len(DATABASES_WHOSE_TABLES_MATCH)

    run_jobs_once(**watching_every_shape)
    jobs = {job.database: (job.status, job.affected, job.error) for job in BulkJob.objects.all()}
    assert jobs == {database: ("done", 8, "") for database in DATABASES_WHOSE_TABLES_MATCH}
    for database in DATABASES_WHOSE_TABLES_MATCH:
        assert ids(pgmq_in[database], "q_orders", "vt > now()") == [], database


def notify_fact(session: HttpSession, database: str) -> str:
    page = parse(session.get(f"{prefix(database)}/queues/orders/").text)
    return " ".join(page.select_one("[data-fact=notify] dd").get_text().split())


def notified(connection: psycopg.Connection, send: psycopg.Connection) -> bool:
    """Whether a message sent now reaches a LISTENer on the queue's channel."""
    connection.execute('LISTEN "pgmq.q_orders.INSERT"')
    send.execute("SELECT pgmq.send('orders', '{}'::jsonb)")
    found = wait_for(
        lambda: select.select([connection.fileno()], [], [], 0.2)[0] and list(connection.notifies(timeout=0.1)),
        timeout=5,
        what="a notification",
    )
    connection.execute('UNLISTEN "pgmq.q_orders.INSERT"')
    return bool(found)


def test_notify_on_insert_is_described_as_each_version_does_it(dashboard, pgmq_in, database_urls, django_user_model):
    session = signed_in(dashboard, django_user_model, "Viewer")
    for database in ("main", "v17", "upgraded"):
        create_queue(pgmq_in[database], SHAPES[database], "orders")
    assert notify_fact(session, "main") == "off"

    pgmq_in["v17"].execute("SELECT pgmq.enable_notify_insert('orders')")
    assert notify_fact(session, "v17") == "on, every insert notifies (this pgmq has no throttle)"

    pgmq_in["main"].execute("SELECT pgmq.enable_notify_insert('orders', 0)")
    assert notify_fact(session, "main") == "on, every insert notifies (not throttled)"
    pgmq_in["main"].execute("SELECT pgmq.enable_notify_insert('orders', 250)")
    assert notify_fact(session, "main") == "on, at most one notification per 250 ms"

    # An upgrade from a pgmq without throttles keeps the trigger and adds no throttle row: pgmq's
    # trigger then finds no row and never notifies.
    upgraded = pgmq_in["upgraded"]
    upgraded.execute("SELECT pgmq.enable_notify_insert('orders')")
    upgraded.execute("DELETE FROM pgmq.notify_insert_throttle WHERE queue_name = 'orders'")
    fact = notify_fact(session, "upgraded")
    assert fact.startswith("on, but silent: the trigger is there and pgmq finds no throttle row"), fact
    repair = fact.split("never notifies (an upgrade from a pgmq without throttles leaves this). ")[1].split(" sets")[0]
    upgraded.execute(repair)
    assert notify_fact(session, "upgraded") == "on, at most one notification per 250 ms"
    with psycopg.connect(database_urls["upgraded"], autocommit=True) as listener:
        assert notified(listener, upgraded)


def test_a_restored_older_dump_is_explained_its_breaking_actions_refused_and_its_repair_works(
    dashboard, pgmq_in, django_user_model
):
    pgmq = pgmq_in["restored"]
    orders(pgmq, RESTORED_1_7_DUMP)
    session = signed_in(dashboard, django_user_model, "Operator")

    page = parse(session.get("/db/restored/queues/orders/").text)
    banner = page.select_one("[data-version-mismatch]")
    assert banner is not None
    assert "q_orders lacks last_read_at" in banner.get_text() and "a_orders lacks last_read_at" in banner.get_text()
    repair = banner.select_one("pre code").get_text().strip().splitlines()
    assert repair == [
        'ALTER TABLE "pgmq"."q_orders" ADD COLUMN IF NOT EXISTS "last_read_at" timestamp with time zone;',
        'ALTER TABLE "pgmq"."a_orders" ADD COLUMN IF NOT EXISTS "last_read_at" timestamp with time zone;',
    ]
    assert session.get("/db/restored/queues/orders/messages/4/").status == 200  # reading works

    until = pgmq.execute("SELECT to_char(now() + interval '2 hours', 'YYYY-MM-DD\"T\"HH24:MI:SS')").fetchone()[0]
    refused = {
        "retry": act(session, "restored", "retry", 5),
        "delay": act(session, "restored", "delay", 5, until=until),
        "archive": act(session, "restored", "archive", 5),
        "move": act(session, "restored", "move", 5, destination="orders_dlq", original="archive"),
        "edit": session.post("/db/restored/queues/orders/messages/5/edit/", {"message": '{"n": 50}'}),
    }
    for action, response in refused.items():
        said = " ".join(parse(response.text).get_text().split())
        assert response.status == (200 if action == "edit" else 400), (action, response.status)  # edit: redirected
        assert "cannot run on “orders”" in said and "(q_orders lacks last_read_at" in said, (action, said[-3000:])
    assert ids(pgmq, "q_orders") == list(range(1, 9)) and ids(pgmq, "a_orders") == []
    assert ids(pgmq, "q_orders_dlq") == []
    assert act(session, "restored", "delete", 8).status == 200  # what does not write the missing columns works
    assert ids(pgmq, "q_orders") == list(range(1, 8))

    for statement in repair:
        pgmq.execute(statement)
    assert parse(session.get("/db/restored/queues/orders/").text).select_one("[data-version-mismatch]") is None
    assert act(session, "restored", "archive", 5).status == 200
    assert ids(pgmq, "a_orders") == [5]


def test_what_pgmq_can_do_is_found_again_when_it_changes_under_a_running_dashboard(
    dashboard, pgmq_in, django_user_model
):
    pgmq = pgmq_in["upgraded"]
    orders(pgmq, UPGRADED)
    session = signed_in(dashboard, django_user_model, "Operator")
    assert act(session, "upgraded", "retry", 1, include_in_flight="1").status == 200  # set_vt over an array

    # As if this database's pgmq were replaced by one before 1.8, while the dashboard runs.
    pgmq.execute("ALTER FUNCTION pgmq.set_vt(text, bigint[], integer) RENAME TO set_vt_of_ids")
    try:
        assert act(session, "upgraded", "retry", 2, include_in_flight="1").status == 200  # one message at a time
    finally:
        pgmq.execute("ALTER FUNCTION pgmq.set_vt_of_ids(text, bigint[], integer) RENAME TO set_vt")
    assert ids(pgmq, "q_orders", "vt <= now()") == [1, 2, 4, 5, 6, 7, 8]

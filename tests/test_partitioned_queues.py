"""Queues made by pgmq.create_partitioned (pg_partman): sizes and counts summed over the partitions,
the partitioning facts shown, and messages in the default partition found, explained and fixed
with the SQL the page gives.

pg_partman is not in the embedded PostgreSQL: these tests skip there, and CI runs them on
PostgreSQL 15 with Debian's postgresql-15-partman (REQUIRE_PARTMAN=1 makes a missing one a failure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest

from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample
from tests.conftest import gunicorn, uses_databases, wait_for
from tests.http_client import HttpSession
from tests.pages import number, overview_rows, parse, stat
from tests.test_least_privilege import dashboard_login, database_with_role

pytestmark = uses_databases


def install_partman(connection: psycopg.Connection) -> None:
    """pg_partman in the connection's database, in the schema partman; skipped where the server has none."""
    if not connection.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'").fetchone():
        reason = (
            "pg_partman is not installed on this PostgreSQL server (CI runs these tests on PostgreSQL 15 "
            "with Debian's postgresql-15-partman)"
        )
        if os.environ.get("REQUIRE_PARTMAN"):
            pytest.fail(reason + "; REQUIRE_PARTMAN is set, so a missing pg_partman is a failure")
        pytest.skip(reason)
    connection.execute("CREATE SCHEMA IF NOT EXISTS partman")
    connection.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")


@pytest.fixture(scope="module")
def partman_schema(pgmq_database_url: str) -> Iterator[str]:
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        install_partman(connection)
        yield "partman"
        connection.execute("DROP EXTENSION IF EXISTS pg_partman CASCADE")
        connection.execute("DROP SCHEMA IF EXISTS partman CASCADE")


@pytest.fixture
def make_partitioned(partman_schema: str, pgmq_sql: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Create a queue through pgmq.create_partitioned, optionally with messages; dropped after the test."""
    created: list[str] = []

    def make(name: str, interval: str, retention: str, *, premake: int = 4, messages: int = 0) -> str:
        pgmq_sql.execute("SELECT pgmq.create_partitioned(%s, %s, %s, %s)", [name, interval, retention, premake])
        created.append(name)
        if messages:
            send(pgmq_sql, name, messages)
        return name

    yield make
    for name in created:
        pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [name])


def send(pgmq_sql: psycopg.Connection, name: str, messages: int) -> None:
    pgmq_sql.execute(
        "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('n', i))) FROM generate_series(1, %s) i",
        [name, messages],
    )


def partitions_ahead(pgmq_sql: psycopg.Connection, table: str, *, by_time: bool) -> int:
    """Partitions starting after the newest msg_id (or now), by pg_partman's own functions."""
    beyond = (
        "info.child_start_time > now()" if by_time else f"info.child_start_id > (SELECT max(msg_id) FROM pgmq.{table})"
    )
    return pgmq_sql.execute(
        f"""
        SELECT count(*) FROM partman.show_partitions(%(parent)s) p,
             LATERAL partman.show_partition_info(p.partition_schemaname || '.' || p.partition_tablename,
                                                 p_parent_table := %(parent)s) info
        WHERE {beyond}
        """,
        {"parent": f"pgmq.{table}"},
    ).fetchone()[0]


def total_bytes(pgmq_sql: psycopg.Connection, table: str) -> int:
    return pgmq_sql.execute(
        "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(%s::regclass)", [f"pgmq.{table}"]
    ).fetchone()[0]


def table_sizes(panel) -> dict[str, str]:
    """Table name -> the size the diagnostics show for it."""
    return {
        row.select_one("code").get_text(): row.select("td")[1].get_text(strip=True)
        for row in panel.select("#queue-diagnostics table")[0].select("tbody tr")
    }


def facts(page) -> dict[str, str]:
    return {fact["data-fact"]: fact.get_text(" ", strip=True) for fact in page.select("[data-fact]")}


def test_a_queue_partitioned_by_msg_id_shows_its_partitioning_sizes_and_counts(
    signed_in_client, make_partitioned, pgmq_sql
):
    make_partitioned("by_id", "10000", "100000", messages=25)
    pgmq_sql.execute("SELECT pgmq.archive('by_id', ARRAY[1, 2, 3, 4, 5]::bigint[])")

    panel = parse(signed_in_client.get("/queues/by_id/diagnostics/"))
    assert "0\xa0bytes" not in table_sizes(panel).values()
    sizes = {cell["data-table"]: int(cell["data-bytes"]) for cell in panel.select("[data-bytes]")}
    assert sizes == {"q_by_id": total_bytes(pgmq_sql, "q_by_id"), "a_by_id": total_bytes(pgmq_sql, "a_by_id")}
    assert all(size > 0 for size in sizes.values())
    assert "default partition" not in panel.get_text()

    page = parse(signed_in_client.get("/queues/by_id/"))
    shown = facts(page)
    ahead = partitions_ahead(pgmq_sql, "q_by_id", by_time=False)
    assert ahead == 4
    assert shown["partitioning-live"] == (
        f"by msg_id, 10,000 messages a partition; retention 100,000 msg_ids; 4 made ahead (premake); "
        f"{ahead} partitions ahead of the current one"
    )
    assert "by msg_id" in shown["partitioning-archive"]
    assert (
        (number(stat(page, "backlog")), number(stat(page, "archived")))
        == pgmq_sql.execute(
            "SELECT (SELECT count(*) FROM pgmq.q_by_id), (SELECT count(*) FROM pgmq.a_by_id)"
        ).fetchone()
        == (20, 5)
    )
    row = overview_rows(parse(signed_in_client.get("/")))["by_id"]
    assert number(row["backlog"]) == 20


def test_a_queue_partitioned_by_time_shows_its_interval_retention_and_partitions_ahead(
    signed_in_client, make_partitioned, pgmq_sql
):
    make_partitioned("by_day", "1 day", "7 days", messages=3)

    page = parse(signed_in_client.get("/queues/by_day/"))
    ahead = partitions_ahead(pgmq_sql, "q_by_day", by_time=True)
    assert ahead == 4
    assert facts(page)["partitioning-live"] == (
        f"by enqueued_at, 1 day a partition; retention 7 days; 4 made ahead (premake); "
        f"{ahead} partitions ahead of the current one"
    )
    assert "by archived_at, 1 day a partition" in facts(page)["partitioning-archive"]

    panel = parse(signed_in_client.get("/queues/by_day/diagnostics/"))
    sizes = {cell["data-table"]: int(cell["data-bytes"]) for cell in panel.select("[data-bytes]")}
    assert sizes["q_by_day"] == total_bytes(pgmq_sql, "q_by_day") > 0


def test_a_burst_past_the_premade_partitions_is_found_explained_and_fixed(signed_in_client, make_partitioned, pgmq_sql):
    # 10 ids a partition, 4 made ahead: ids 50 and up have no partition of their own.
    make_partitioned("burst", "10", "100", messages=80)
    in_default = pgmq_sql.execute("SELECT count(*) FROM pgmq.q_burst_default").fetchone()[0]
    assert in_default == 31
    with pytest.raises(psycopg.errors.RaiseException, match="default partition"):
        pgmq_sql.execute("SELECT partman.run_maintenance('pgmq.q_burst')")

    panel = parse(signed_in_client.get("/queues/burst/diagnostics/"))
    found = [item for item in panel.select(".findings .finding") if "default partition" in item.get_text()]
    assert len(found) == 1, panel.get_text(" ", strip=True)
    finding = found[0]
    assert "warning" in finding["class"][-1]
    assert "31 messages" in finding.get_text(" ", strip=True)
    assert "run_maintenance" in finding.select_one(".meaning").get_text()
    fix = finding.select_one("pre.query").get_text()
    assert "\"partition_data_proc\"('pgmq.q_burst')" in fix

    page = parse(signed_in_client.get("/queues/burst/"))
    assert "31 messages in the default partition" in page.select_one("[data-queue-verdict]").get_text()
    assert "0 partitions ahead" in facts(page)["partitioning-live"]
    row = overview_rows(parse(signed_in_client.get("/")))["burst"]
    assert row["health"] == "warning"
    assert "default partition" in row["health_reason"]
    take_sample(count_poison_everywhere=False)  # the sampler's health, which the overview of many queues shows
    assert QueueSample.objects.get(queue_name="burst").health == "warning"

    # The SQL the page gives, run as a person would in psql, empties the default partition.
    for statement in filter(None, (part.strip() for part in fix.split(";"))):
        pgmq_sql.execute(statement)
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_burst_default").fetchone()[0] == 0
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_burst").fetchone()[0] == 80
    panel = parse(signed_in_client.get("/queues/burst/diagnostics/"))
    assert "default partition" not in panel.get_text()
    row = overview_rows(parse(signed_in_client.get("/")))["burst"]
    assert "default partition" not in row["health_reason"]


def test_a_queue_with_no_partition_left_ahead_is_told_to_run_maintenance(signed_in_client, make_partitioned, pgmq_sql):
    # 10 ids a partition, 1 made ahead: at msg_id 15 the current partition is the last one.
    make_partitioned("last_one", "10", "100", premake=1, messages=15)
    assert partitions_ahead(pgmq_sql, "q_last_one", by_time=False) == 0

    page = parse(signed_in_client.get("/queues/last_one/"))
    assert "1 made ahead (premake); 0 partitions ahead of the current one" in facts(page)["partitioning-live"]
    panel = parse(signed_in_client.get("/queues/last_one/diagnostics/"))
    found = [item for item in panel.select(".findings .finding") if "made ahead" in item.get_text()]
    assert len(found) == 1, panel.get_text(" ", strip=True)
    assert "q_last_one" in found[0].select_one(".meaning").get_text()
    maintenance = found[0].select_one("pre.query").get_text()
    assert "\"run_maintenance\"('pgmq.q_last_one')" in maintenance

    pgmq_sql.execute(maintenance)
    assert partitions_ahead(pgmq_sql, "q_last_one", by_time=False) == 1
    page = parse(signed_in_client.get("/queues/last_one/"))
    assert "1 partition ahead of the current one" in facts(page)["partitioning-live"]
    panel = parse(signed_in_client.get("/queues/last_one/diagnostics/"))
    assert "made ahead" not in panel.get_text()


def test_the_readme_read_only_role_sees_a_burst_without_reading_partman_or_the_default_partition(
    pgmq_sql, pgmq_database_url, tmp_path
):
    roles = database_with_role(pgmq_sql, pgmq_database_url, "read-only-role")
    owner_url, role_url = next(roles)
    try:
        with psycopg.connect(owner_url, autocommit=True) as owner:
            install_partman(owner)
            owner.execute("SELECT pgmq.create_partitioned('burst', '10', '100')")
            send(owner, "burst", 80)
            # As if pg_partman's maintenance, run by another role, had made it without pg_monitor's grant.
            owner.execute("REVOKE SELECT ON pgmq.q_burst_default FROM pg_monitor")
        password = dashboard_login(role_url, "reader", "viewer")
        with gunicorn(role_url, tmp_path) as base_url:
            session = HttpSession(base_url)
            session.sign_in("reader", password)

            def counted_page():
                """The queue page once it shows pg_stat's count of the default partition's rows (reported
                by the sending session within seconds)."""
                response = session.get("/queues/burst/")
                assert response.status == 200, response.text
                return parse(response.text) if "31 messages in the default partition" in response.text else None

            page = wait_for(
                counted_page,
                timeout=30,
                what="the read-only role's queue page to count the default partition's 31 messages",
            )
            assert "cannot read partman.part_config" in facts(page)["partitioning-live"]
            assert "0 partitions ahead of the current one" in facts(page)["partitioning-live"]
            diagnostics = session.get("/queues/burst/diagnostics/")
            assert diagnostics.status == 200
            finding = parse(diagnostics.text).select_one(".findings .finding").get_text(" ", strip=True)
            assert "31 messages are in" in finding and "q_burst_default" in finding
            assert "default partition" in overview_rows(parse(session.get("/").text))["burst"]["health_reason"]
    finally:
        roles.close()

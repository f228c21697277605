"""A queue's page: every figure against the same figure computed by plain SQL on the same data."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from django.test import override_settings

from queues import health
from queues.rules import HealthRule, Thresholds
from queues.selectors import diagnostics as diagnostics_module
from queues.selectors import distributions, stats
from tests.conftest import uses_databases
from tests.pages import number, parse, seconds, stat

pytestmark = uses_databases


def read_times(pgmq_sql, queue: str, times: int, quantity: int = 1) -> None:
    """Read the oldest messages `times` times, letting vt pass at once each time (vt = 0)."""
    for _ in range(times):
        pgmq_sql.execute("SELECT * FROM pgmq.read(%s, 0, %s)", [queue, quantity])


@pytest.fixture
def mixed_queue(make_queue, pgmq_sql) -> str:
    """10 sent: 3 in flight for a minute, 2 more sent delayed, 2 archived, 1 deleted, 1 read 6 times."""
    make_queue("mixed", messages=10)
    read_times(pgmq_sql, "mixed", 6)  # msg 1: read 6 times, visible again (a poison message)
    pgmq_sql.execute("SELECT * FROM pgmq.read('mixed', 60, 3)")  # msgs 1-3 in flight; msg 1 now read 7 times
    for _ in range(2):
        pgmq_sql.execute("""SELECT pgmq.send('mixed', '{"later": true}', 600)""")
    pgmq_sql.execute("SELECT pgmq.archive('mixed', ARRAY[9, 10]::bigint[])")
    pgmq_sql.execute("SELECT pgmq.delete('mixed', 8::bigint)")
    return "mixed"


@pytest.mark.parametrize("one_scan_rows", [stats.ONE_SCAN_ROWS, 0], ids=["read in one scan", "probed by index"])
def test_every_figure_matches_sql(signed_in_client, mixed_queue, pgmq_sql, monkeypatch, one_scan_rows):
    monkeypatch.setattr(stats, "ONE_SCAN_ROWS", one_scan_rows)  # a table of a few rows, or of thousands
    truth_sql = """
        SELECT count(*),
               count(*) FILTER (WHERE vt <= now()),
               count(*) FILTER (WHERE vt > now() AND read_ct > 0),
               count(*) FILTER (WHERE vt > now() AND read_ct = 0),
               (SELECT count(*) FROM pgmq.a_mixed),
               count(*) FILTER (WHERE read_ct >= 5),
               (SELECT last_value FROM pgmq.q_mixed_msg_id_seq),
               extract(epoch FROM now() - min(enqueued_at)),
               extract(epoch FROM now() - max(enqueued_at))
        FROM pgmq.q_mixed"""
    before = pgmq_sql.execute(truth_sql).fetchone()
    page = parse(signed_in_client.get("/queues/mixed/"))
    after = pgmq_sql.execute(truth_sql).fetchone()

    shown = tuple(
        number(stat(page, name))
        for name in ("backlog", "visible", "in-flight", "delayed", "archived", "poison", "sent")
    )
    assert shown == before[:7] == (9, 4, 3, 2, 2, 1, 12)
    assert before[7] - 1 <= seconds(stat(page, "oldest")) <= after[7] + 1
    assert before[8] - 1 <= seconds(stat(page, "newest")) <= after[8] + 1


def test_health_and_its_reason_follow_the_rule_for_the_queue_name(signed_in_client, mixed_queue):
    rules = [
        HealthRule(
            queues="mix*",
            oldest_age=Thresholds(warning=3600.0, critical=7200.0),
            backlog=Thresholds(warning=5, critical=100),
            poison=Thresholds(warning=100, critical=1000),
        ),
        HealthRule(
            queues="*",
            oldest_age=Thresholds(warning=1.0, critical=2.0),
            backlog=Thresholds(warning=1, critical=2),
            poison=Thresholds(warning=1, critical=2),
        ),
    ]
    with override_settings(HEALTH_RULES=rules):
        page = parse(signed_in_client.get("/queues/mixed/"))
    badge = page.select_one("#queue-live .health")
    assert badge.get_text() == "warning"
    assert badge["title"] == "backlog 9 (warning at 5)"


def test_the_distributions_count_every_message_in_its_bucket(signed_in_client, mixed_queue, pgmq_sql):
    page = parse(signed_in_client.get("/queues/mixed/"))
    data = json.loads(page.select_one("#queue-chart-data").get_text())
    read_ct_truth = dict(
        pgmq_sql.execute("""
        SELECT CASE WHEN read_ct >= 5 AND read_ct < 10 THEN '5–9' WHEN read_ct = 1 THEN '1' ELSE read_ct::text END,
               count(*) FROM pgmq.q_mixed GROUP BY 1""").fetchall()
    )
    shown = dict(zip(data["read_ct"]["labels"], data["read_ct"]["counts"], strict=True))
    assert {label: count for label, count in shown.items() if count} == read_ct_truth == {"0": 6, "1": 2, "5–9": 1}
    assert data["age"]["counts"][0] == 9  # every message is younger than a minute
    assert "estimated from a sample" not in page.get_text()


def test_a_big_queues_distributions_are_sampled_and_say_so(signed_in_client, make_queue, pgmq_sql):
    make_queue("sampled_spread", messages=3000)
    pgmq_sql.execute("ANALYZE pgmq.q_sampled_spread")
    with override_settings(EXACT_COUNT_LIMIT=100):
        page = parse(signed_in_client.get("/queues/sampled_spread/"))
    data = json.loads(page.select_one("#queue-chart-data").get_text())
    assert "estimated from a sample" in page.get_text()
    assert 2000 <= sum(data["age"]["counts"]) <= 4000  # a sample scaled up: near 3000, not exact
    assert stat(page, "backlog").startswith("≈")


def test_the_poison_panel_lists_the_most_read_messages_first(signed_in_client, make_queue, pgmq_sql):
    make_queue("poisoned", messages=4)
    read_times(pgmq_sql, "poisoned", 9)  # msg 1 read 9 times
    read_times(pgmq_sql, "poisoned", 6, quantity=2)  # msgs 1 and 2 read 6 more times each
    truth = pgmq_sql.execute(
        "SELECT msg_id, read_ct FROM pgmq.q_poisoned WHERE read_ct >= 5 ORDER BY read_ct DESC, msg_id"
    ).fetchall()

    panel = parse(signed_in_client.get("/queues/poisoned/poison/"))
    shown = [
        (int(row["data-msg-id"]), int(row.select_one("[data-column=read_ct]").get_text()))
        for row in panel.select("tr[data-msg-id]")
    ]
    assert shown == truth == [(1, 15), (2, 6)]


def test_the_poison_panel_says_when_there_are_none(signed_in_client, make_queue):
    make_queue("healthy", messages=2)
    panel = parse(signed_in_client.get("/queues/healthy/poison/"))
    assert "No poison messages" in panel.get_text()


def test_a_big_queues_poison_panel_looks_where_poison_is_says_so_and_names_the_index(
    signed_in_client, make_queue, pgmq_sql, monkeypatch
):
    monkeypatch.setattr(distributions, "POISON_SCAN_ROWS", 20)
    make_queue("big_poisoned", messages=300)
    read_times(pgmq_sql, "big_poisoned", 6)  # msg 1, at the head, read 6 times and visible again
    stuck = 150  # in the middle, read 7 times and leased now: turns visible next
    pgmq_sql.execute(
        f"UPDATE pgmq.q_big_poisoned SET read_ct = 7, vt = now() + interval '1 min' WHERE msg_id = {stuck}"
    )
    hidden = 200  # in the middle and visible: neither among the oldest nor the next to turn visible
    pgmq_sql.execute(f"UPDATE pgmq.q_big_poisoned SET read_ct = 5 WHERE msg_id = {hidden}")
    pgmq_sql.execute("ANALYZE pgmq.q_big_poisoned")

    def shown() -> tuple[list[int], str]:
        with override_settings(EXACT_COUNT_LIMIT=100):
            panel = parse(signed_in_client.get("/queues/big_poisoned/poison/"))
        bounded = panel.select_one("[data-poison-bounded]")
        return [int(row["data-msg-id"]) for row in panel.select("tr[data-msg-id]")], (
            bounded.get_text(" ", strip=True) if bounded else ""
        )

    messages, note = shown()
    assert messages == [stuck, 1]
    assert "Looked at the 20 oldest messages and the 20 in flight or delayed" in note
    index = re.search(r"CREATE INDEX CONCURRENTLY .*;", note).group(0)

    pgmq_sql.execute(index)
    assert shown() == ([stuck, 1, hidden], "")  # with the index, the list is complete


def test_archive_history_counts_and_percentiles_match_sql(signed_in_client, make_queue, pgmq_sql):
    make_queue("processed", messages=40)
    pgmq_sql.execute("SELECT pgmq.archive('processed', array_agg(i)) FROM generate_series(1, 30) i")
    truth = pgmq_sql.execute("""
        SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
               (ORDER BY extract(epoch FROM archived_at - enqueued_at))
        FROM pgmq.a_processed WHERE archived_at >= now() - interval '1 hour'""").fetchone()

    panel = parse(signed_in_client.get("/queues/processed/archive-history/?range=1h"))
    assert number(panel.select_one("[data-archive=archived]").get_text()) == truth[0] == 30
    chart = json.loads(panel.select_one("#archive-chart-data").get_text())
    assert sum(chart["archived"]) == 30
    assert seconds(panel.select_one("[data-archive=p99]").get_text()) == round(truth[1][2])


def test_an_empty_archive_says_nothing_was_archived(signed_in_client, make_queue):
    make_queue("nothing_archived", messages=1)
    panel = parse(signed_in_client.get("/queues/nothing_archived/archive-history/?range=15m"))
    assert "Nothing was archived in this range" in panel.get_text()


@pytest.mark.parametrize("path", ["/queues/mixed/?range=2d", "/queues/mixed/archive-history/?range=forever"])
def test_an_unknown_range_is_a_400_saying_why(signed_in_client, mixed_queue, path):
    response = signed_in_client.get(path)
    assert response.status_code == 400
    assert "range" in response.content.decode()


def test_the_facts_show_notify_throttle_and_topic_bindings(signed_in_client, make_queue, pgmq_sql):
    make_queue("notified")
    pgmq_sql.execute("SELECT pgmq.enable_notify_insert('notified', 750)")
    pgmq_sql.execute("SELECT pgmq.bind_topic('orders.*.created', 'notified')")
    facts = parse(signed_in_client.get("/queues/notified/")).select_one("dl.facts").get_text(" ", strip=True)
    assert "on, at most one notification per 750 ms" in facts
    assert "orders.*.created" in facts


def test_the_refresh_returns_only_the_live_region(signed_in_client, make_queue):
    make_queue("live_region", messages=2)
    response = signed_in_client.get("/queues/live_region/", headers={"HX-Request": "true", "HX-Target": "queue-live"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="queue-live"')
    assert number(stat(parse(html), "backlog")) == 2


def test_a_queue_of_pgmq_1_4_layout_renders(signed_in_client, make_queue, pgmq_sql):
    make_queue("old_layout", messages=2)
    pgmq_sql.execute("ALTER TABLE pgmq.q_old_layout DROP COLUMN headers, DROP COLUMN last_read_at")
    page = parse(signed_in_client.get("/queues/old_layout/"))
    assert number(stat(page, "backlog")) == 2
    diagnostics = parse(signed_in_client.get("/queues/old_layout/diagnostics/"))
    assert "does not record reads" in diagnostics.select_one("[data-diagnostic=last-read]").get_text()


# Diagnostics


def test_diagnostics_give_an_ordinary_queues_table_sizes_as_postgresql_does(signed_in_client, make_queue, pgmq_sql):
    """pg_partition_tree lists no row for a table that is not partitioned: such a table's size is its
    own (it read 0 bytes for every ordinary queue)."""
    make_queue("sized", messages=200)
    pgmq_sql.execute("SELECT pgmq.archive('sized', ARRAY(SELECT generate_series(1, 50)::bigint))")
    panel = parse(signed_in_client.get("/queues/sized/diagnostics/"))
    sizes = {cell["data-table"]: int(cell["data-bytes"]) for cell in panel.select("[data-bytes]")}
    truth = dict(
        pgmq_sql.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class "
            "WHERE relnamespace = 'pgmq'::regnamespace AND relname IN ('q_sized', 'a_sized')"
        ).fetchall()
    )
    assert sizes == truth and min(sizes.values()) > 0


def test_diagnostics_name_the_sessions_reading_the_queue(signed_in_client, make_queue, pgmq_database_url):
    make_queue("watched", messages=5)
    with (
        psycopg.connect(pgmq_database_url, autocommit=True, application_name="billing-worker") as reader,
        psycopg.connect(pgmq_database_url, autocommit=True, application_name="watched-consumer-3") as named,
    ):
        reader.execute("SELECT * FROM pgmq.read('watched', 30, 1)", prepare=False)
        named.execute("SELECT * FROM pgmq.read(%s, 30, 1)", ["watched"])
        panel = parse(signed_in_client.get("/queues/watched/diagnostics/"))
    readers = {row.select_one("code").get_text() for row in panel.select("tr[data-reader]")}
    assert readers == {"billing-worker", "watched-consumer-3"}
    assert panel.select_one("[data-diagnostic=last-read]").get_text(strip=True).endswith("s ago")


def test_diagnostics_find_a_long_transaction_holding_vacuum_back(
    signed_in_client, make_queue, pgmq_database_url, monkeypatch
):
    make_queue("held_back")
    monkeypatch.setattr(diagnostics_module, "LONG_TRANSACTION_S", 0)
    with psycopg.connect(pgmq_database_url, application_name="forgotten-psql") as idle:
        idle.execute("SELECT txid_current()")  # a transaction id, then idle in transaction
        panel = parse(signed_in_client.get("/queues/held_back/diagnostics/"))
        pid = idle.info.backend_pid
    findings = panel.select_one(".findings").get_text(" ", strip=True)
    assert f"pid {pid}, forgotten-psql" in findings
    assert "holds back vacuum" in findings
    assert f"pg_terminate_backend({pid})" in findings


def test_diagnostics_find_a_fifo_group_stuck_behind_its_head(signed_in_client, make_queue, pgmq_sql):
    make_queue("fifo")
    for group, count in (("tenant-a", 3), ("tenant-b", 2)):
        pgmq_sql.execute(
            "SELECT pgmq.send_batch('fifo', array_fill('{}'::jsonb, ARRAY[%s]), array_fill(%s::jsonb, ARRAY[%s]))",
            [count, json.dumps({"x-pgmq-group": group}), count],
        )
    for _ in range(6):  # the head of tenant-a (msg 1) keeps coming back
        pgmq_sql.execute("SELECT pgmq.set_vt('fifo', 1::bigint, 0)")
        pgmq_sql.execute("SELECT * FROM pgmq.read_grouped('fifo', 30, 1)")
    pgmq_sql.execute("SELECT pgmq.set_vt('fifo', 1::bigint, 0)")

    panel = parse(signed_in_client.get("/queues/fifo/diagnostics/"))
    groups = {
        row["data-group"]: (number(row.select("td")[1].get_text()), row.select("td")[2].get_text(strip=True))
        for row in panel.select("tr[data-group]")
    }
    assert groups == {"tenant-a": (3, "1"), "tenant-b": (2, "4")}
    assert "FIFO group tenant-a is stuck behind message 1, read 6 times" in panel.get_text()


def test_diagnostics_report_dead_rows_when_vacuum_lags(signed_in_client, make_queue, pgmq_sql, monkeypatch):
    make_queue("churned", messages=50)
    pgmq_sql.execute("SELECT pgmq.delete('churned', array_agg(i)) FROM generate_series(1, 40) i")
    pgmq_sql.execute("SELECT pg_stat_force_next_flush()")  # report the deletes now (PostgreSQL 15+)
    monkeypatch.setattr(health, "DEAD_ROWS_MINIMUM", 10)
    dead = pgmq_sql.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'q_churned'").fetchone()[0]
    panel = parse(signed_in_client.get("/queues/churned/diagnostics/"))
    assert dead >= 10, "the statistics did not record the deletes"
    assert f"pgmq.q_churned carries {dead:,} dead rows" in panel.get_text()


def test_a_panel_whose_query_runs_out_of_time_says_so_and_the_page_still_renders(
    signed_in_client, make_queue, pgmq_database_url
):
    make_queue("locked_archive", messages=2)
    with psycopg.connect(pgmq_database_url) as holder:  # as a long migration of the archive would
        holder.execute("LOCK TABLE pgmq.a_locked_archive IN ACCESS EXCLUSIVE MODE")
        panel = signed_in_client.get("/queues/locked_archive/archive-history/")
        messages = signed_in_client.get("/queues/locked_archive/messages/")
    assert panel.status_code == 200
    assert "took longer than" in " ".join(parse(panel).select_one("#queue-archive").get_text().split())
    assert messages.status_code == 200 and len(parse(messages).select("tr[data-msg-id]")) == 2

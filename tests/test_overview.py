"""The overview: every queue in pgmq.meta with its backlog, true to the tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F
from django.test import override_settings

from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample
from queues.rules import HealthRule, Thresholds
from tests.conftest import AWKWARD_NAMES, uses_databases
from tests.pages import number, overview_rows, parse, seconds, stat, totals

pytestmark = uses_databases


def backlog_by_sql(pgmq_sql, name: str) -> int:
    table = pgmq_sql.execute("SELECT pgmq.format_table_name(%s, 'q')", [name]).fetchone()[0]
    return pgmq_sql.execute(f'SELECT count(*) FROM pgmq."{table.replace(chr(34), chr(34) * 2)}"').fetchone()[0]


def test_it_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_it_lists_every_queue_with_its_backlog(signed_in_client, make_queue, pgmq_sql):
    make_queue("empty_one")
    make_queue("busy_one", messages=37)
    pgmq_sql.execute("SELECT pgmq.archive('busy_one', ARRAY[1, 2, 3]::bigint[])")

    rows = overview_rows(parse(signed_in_client.get("/")))

    assert rows["empty_one"]["backlog"] == "0"
    assert number(rows["busy_one"]["backlog"]) == backlog_by_sql(pgmq_sql, "busy_one") == 34


def test_names_that_break_naive_sql_or_urls_work_through_the_overview_and_their_links(
    signed_in_client, make_queue, pgmq_sql
):
    for count, name in enumerate(AWKWARD_NAMES, start=1):
        make_queue(name, messages=count)

    rows = overview_rows(parse(signed_in_client.get("/")))

    for name in AWKWARD_NAMES:
        assert number(rows[name]["backlog"]) == backlog_by_sql(pgmq_sql, name)
        # The test client decodes one level of %-escapes, as a real server does.
        queue_page = signed_in_client.get(rows[name]["href"])
        assert queue_page.status_code == 200, name
        page = parse(queue_page)
        assert page.select_one("h1.queue-name").get_text() == name
        assert number(stat(page, "backlog")) == backlog_by_sql(pgmq_sql, name)


def test_the_orders_eu_and_with_space_links_are_plain_urls(signed_in_client, make_queue):
    make_queue("Orders-EU", messages=2)
    make_queue("with space", messages=1)
    rows = overview_rows(parse(signed_in_client.get("/")))
    assert rows["Orders-EU"]["href"] == "/queues/Orders-EU/"
    assert rows["with space"]["href"] == "/queues/with%20space/"


def test_queue_names_are_escaped(signed_in_client, make_queue):
    name = "<img src=x onerror=alert(1)>"
    make_queue(name, messages=1)
    html = signed_in_client.get("/").content.decode()
    assert name not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert name in overview_rows(parse(html))


def test_big_queues_show_the_planners_estimate_marked_as_such(signed_in_client, make_queue, pgmq_sql):
    make_queue("small_enough", messages=5)
    make_queue("too_big_to_count", messages=500)
    pgmq_sql.execute("ANALYZE pgmq.q_too_big_to_count")

    with override_settings(EXACT_COUNT_LIMIT=100):
        rows = overview_rows(parse(signed_in_client.get("/")))

    assert rows["small_enough"]["backlog"] == "5"
    assert rows["too_big_to_count"]["backlog"].startswith("≈")
    assert number(rows["too_big_to_count"]["backlog"]) == 500  # just analyzed: the estimate is exact
    assert "estimate" in rows["too_big_to_count"]["backlog_title"]


def test_a_never_analyzed_big_table_is_estimated_from_its_size(signed_in_client, make_queue, pgmq_sql):
    make_queue("fresh_and_big", messages=3000)
    assert pgmq_sql.execute("SELECT reltuples FROM pg_class WHERE relname = 'q_fresh_and_big'").fetchone()[0] < 0

    with override_settings(EXACT_COUNT_LIMIT=100):
        backlog = overview_rows(parse(signed_in_client.get("/")))["fresh_and_big"]["backlog"]

    assert backlog.startswith("≈")
    assert 300 < number(backlog) < 30_000  # an order of magnitude, which is all an estimate promises


def test_the_refresh_returns_only_the_table(signed_in_client, make_queue):
    make_queue("refreshed", messages=4)
    response = signed_in_client.get("/", headers={"HX-Request": "true", "HX-Target": "overview-live"})
    html = response.content.decode()
    assert not html.lstrip().startswith("<!doctype")
    assert html.lstrip().startswith('<div id="overview-live"')
    assert overview_rows(parse(html))["refreshed"]["backlog"] == "4"


def test_an_empty_database_says_how_to_create_a_queue(signed_in_client, pgmq_sql):
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta").fetchone()[0] == 0
    page = parse(signed_in_client.get("/"))
    assert "No queues in this database yet" in page.select_one("#overview-live").get_text()


@pytest.mark.parametrize("path", ["/queues/never-created/", "/queues/%252F/"])
def test_an_unknown_queue_is_a_404_naming_it(signed_in_client, path):
    response = signed_in_client.get(path)
    assert response.status_code == 404
    assert "There is no queue named" in response.content.decode()


# Issue 3: the full overview


def make_queue_in_every_state(make_queue, pgmq_sql) -> str:
    """The queue `columns`: visible, in flight, delayed, poison and archived messages."""
    make_queue("columns", messages=10)
    for _ in range(5):
        pgmq_sql.execute("SELECT * FROM pgmq.read('columns', 0, 1)")  # msg 1 read five times: poison
    pgmq_sql.execute("SELECT * FROM pgmq.read('columns', 60, 2)")  # msgs 1, 2 in flight
    pgmq_sql.execute("""SELECT pgmq.send('columns', '{"later": 1}', 600)""")
    pgmq_sql.execute("SELECT pgmq.archive('columns', ARRAY[9, 10]::bigint[])")
    return "columns"


def test_every_column_matches_sql(signed_in_client, make_queue, pgmq_sql):
    make_queue_in_every_state(make_queue, pgmq_sql)
    truth_sql = """
        SELECT count(*), count(*) FILTER (WHERE vt <= now()), count(*) FILTER (WHERE vt > now() AND read_ct > 0),
               count(*) FILTER (WHERE vt > now() AND read_ct = 0), count(*) FILTER (WHERE read_ct >= 5),
               (SELECT last_value FROM pgmq.q_columns_msg_id_seq), (SELECT count(*) FROM pgmq.a_columns),
               extract(epoch FROM now() - min(enqueued_at)), extract(epoch FROM now() - max(enqueued_at))
        FROM pgmq.q_columns"""
    before = pgmq_sql.execute(truth_sql).fetchone()
    row = overview_rows(parse(signed_in_client.get("/")))["columns"]
    after = pgmq_sql.execute(truth_sql).fetchone()

    shown = tuple(
        number(row[column]) for column in ("backlog", "visible", "in-flight", "delayed", "poison", "sent", "archived")
    )
    assert shown == before[:7] == (9, 6, 2, 1, 1, 11, 2)
    assert before[7] - 1 <= seconds(row["oldest"]) <= after[7] + 1
    assert before[8] - 1 <= seconds(row["newest"]) <= after[8] + 1


def test_totals_are_the_sums_of_every_queue(signed_in_client, make_queue, pgmq_sql):
    for name, count in (("total_a", 3), ("total_b", 5), ("total_c", 0)):
        make_queue(name, messages=count)
    pgmq_sql.execute("SELECT pgmq.archive('total_b', 1::bigint)")
    page = parse(signed_in_client.get("/"))
    sums = totals(page)
    rows = overview_rows(page)
    assert number(sums["queues"]) == len(rows) == 3
    assert number(sums["backlog"]) == sum(number(row["backlog"]) for row in rows.values()) == 7
    assert number(sums["archived"]) == 1
    assert number(sums["sent"]) == 8


@pytest.fixture
def many_queues(make_queue, pgmq_sql) -> list[str]:
    names = [f"fleet-{n:03d}" for n in range(120)]
    for n, name in enumerate(names):
        make_queue(name, messages=n % 7)
    return names


def test_sorting_searching_and_paging_120_queues(signed_in_client, many_queues):
    first = parse(signed_in_client.get("/"))
    assert len(overview_rows(first)) == 50
    assert "Page 1 of 3 (120 queues)" in first.select_one(".pager").get_text()

    by_backlog = overview_rows(parse(signed_in_client.get("/?sort=-backlog")))
    backlogs = [number(row["backlog"]) for row in by_backlog.values()]
    assert backlogs == sorted(backlogs, reverse=True) and backlogs[0] == 6

    third = overview_rows(parse(signed_in_client.get("/?sort=name&page=3")))
    assert list(third) == many_queues[100:]

    found = overview_rows(parse(signed_in_client.get("/?q=FLEET-01")))
    assert list(found) == [f"fleet-{n:03d}" for n in range(10, 20)]


def test_a_search_that_finds_nothing_says_so(signed_in_client, make_queue):
    make_queue("only_one")
    page = parse(signed_in_client.get("/?q=zzz"))
    assert "No queue name contains “zzz”" in page.select_one("#overview-live").get_text()


@pytest.mark.parametrize("query", ["sort=colour", "page=0", "page=abc"])
def test_bad_overview_parameters_are_a_400(signed_in_client, query):
    assert signed_in_client.get(f"/?{query}").status_code == 400


def test_rates_come_from_the_sampler_history(signed_in_client, make_queue, pgmq_sql):
    make_queue("rated", messages=10)
    take_sample(count_poison_everywhere=False)
    # As if the sample had been taken a minute ago: since then 30 sent, 12 archived.
    QueueSample.objects.filter(queue_name="rated").update(sampled_at=F("sampled_at") - timedelta(seconds=60))
    pgmq_sql.execute("SELECT pgmq.send_batch('rated', array_fill('{}'::jsonb, ARRAY[30]))")
    pgmq_sql.execute("SELECT pgmq.archive('rated', array_agg(i)) FROM generate_series(1, 12) i")
    pgmq_sql.execute("SELECT pg_stat_force_next_flush()")

    sampled_at = QueueSample.objects.get(queue_name="rated").sampled_at
    asked_at = datetime.now(UTC)
    row = overview_rows(parse(signed_in_client.get("/")))["rated"]
    answered_at = datetime.now(UTC)

    def per_minute(count: int, at: datetime) -> float:
        return count * 60 / (at - sampled_at).total_seconds()

    # 30 sent and 12 archived in the 60 s (and the moment the page took) since the sample.
    for column, count in (("enqueue-rate", 30), ("processing-rate", 12)):
        shown = float(row[column].removesuffix("/min"))
        assert per_minute(count, answered_at) - 0.05 <= shown <= per_minute(count, asked_at) + 0.05, (column, shown)


def test_no_history_shows_no_rate_and_says_so(signed_in_client, make_queue):
    make_queue("fresh")
    row = overview_rows(parse(signed_in_client.get("/")))["fresh"]
    assert row["enqueue-rate"] == "–" and row["sparkline"] == "no history yet"


def test_the_sparkline_draws_the_sampled_backlog(signed_in_client, make_queue, pgmq_sql):
    make_queue("sparked", messages=2)
    for minutes_ago in (20, 10, 0):
        take_sample(count_poison_everywhere=False)
        latest = QueueSample.objects.filter(queue_name="sparked").latest("id")
        latest.sampled_at -= timedelta(minutes=minutes_ago)
        latest.save()
        pgmq_sql.execute("SELECT pgmq.send_batch('sparked', array_fill('{}'::jsonb, ARRAY[4]))")
    svg = parse(signed_in_client.get("/")).select_one("tr[data-queue=sparked] svg.sparkline")
    assert svg["aria-label"] == "backlog, last 30 min: from 2 to 10, peak 10"


def test_a_big_queues_poison_comes_from_the_sampler(signed_in_client, make_queue, pgmq_sql):
    make_queue("big_and_poisoned", messages=400)
    for _ in range(5):
        pgmq_sql.execute("SELECT * FROM pgmq.read('big_and_poisoned', 0, 3)")
    pgmq_sql.execute("ANALYZE pgmq.q_big_and_poisoned")
    with override_settings(EXACT_COUNT_LIMIT=100):
        before = overview_rows(parse(signed_in_client.get("/")))["big_and_poisoned"]["poison"]
        take_sample(count_poison_everywhere=True)
        after = parse(signed_in_client.get("/")).select_one("tr[data-queue=big_and_poisoned] [data-column=poison]")
    assert before == "–"
    assert after.get_text(strip=True) == "3" and "counted by the sampler" in after.select_one("span")["title"]


def test_health_follows_the_first_matching_rule(signed_in_client, make_queue):
    make_queue("payments-eu", messages=3)
    make_queue("reports", messages=3)
    strict = HealthRule(
        queues="payments-*",
        oldest_age=Thresholds(warning=3600.0, critical=7200.0),
        backlog=Thresholds(warning=1, critical=3),
        poison=Thresholds(warning=1, critical=10),
    )
    lenient = replace(strict, queues="*", backlog=Thresholds(warning=100, critical=1000))
    with override_settings(HEALTH_RULES=[strict, lenient]):
        rows = overview_rows(parse(signed_in_client.get("/?sort=-health")))
    assert (rows["payments-eu"]["health"], rows["payments-eu"]["health_reason"]) == (
        "critical",
        "backlog 3 (critical at 3)",
    )
    assert (rows["reports"]["health"], rows["reports"]["health_reason"]) == ("ok", "every threshold met")
    assert list(rows)[0] == "payments-eu"


def test_unlogged_queues_are_marked(signed_in_client, pgmq_sql):
    pgmq_sql.execute("SELECT pgmq.create_unlogged('fast_lane')")
    try:
        row = parse(signed_in_client.get("/")).select_one("tr[data-queue=fast_lane] .queue-cell")
        assert [tag.get_text() for tag in row.select(".tag")] == ["unlogged"]
    finally:
        pgmq_sql.execute("SELECT pgmq.drop_queue('fast_lane')")


def test_tabs_share_the_overviews_figures_for_a_moment(signed_in_client, make_queue, pgmq_sql):
    from django.core.cache import cache
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    make_queue("shared", messages=2)
    cache.clear()
    with override_settings(STATS_CACHE_SECONDS=60), CaptureQueriesContext(connections["pgmq"]) as queries:
        first = overview_rows(parse(signed_in_client.get("/")))["shared"]["backlog"]
        after_first = len(queries)
        pgmq_sql.execute("SELECT pgmq.send('shared', '{}')")
        second = overview_rows(parse(signed_in_client.get("/")))["shared"]["backlog"]
    assert first == second == "2"  # the second tab got the same figures...
    assert len(queries) - after_first < after_first  # ...without the catalog query and probes again
    cache.clear()
    assert overview_rows(parse(signed_in_client.get("/")))["shared"]["backlog"] == "3"

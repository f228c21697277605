"""Many queues: above DASHBOARD_OVERVIEW_PROBE_ALL_UP_TO the overview probes only the queues on its
page, and sorts, filters and totals the rest by the sampler's latest round, saying how old it is.

Here the limit is lowered to 10 so that 55 queues (more than the 50 a page shows) are "many"."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample, SamplerRound
from queues.rules import HealthRule, Thresholds
from queues.selectors import stats
from tests.conftest import uses_databases
from tests.pages import number, overview_rows, parse, totals
from tests.test_metrics import TOKEN, per_queue, scrape
from tests.test_shared_tables import foo_pair, forget_the_pair, table_truth  # noqa: F401 (fixtures)

pytestmark = uses_databases

QUEUES = 55  # the page shows 50


def name_of(n: int) -> str:
    return f"many_{n:03d}"


@pytest.fixture
def many_queues(pgmq_sql):
    """many_001 .. many_055, queue n holding n messages; dropped after the test."""
    made = []

    def make(first: int, last: int) -> None:
        for n in range(first, last + 1):
            pgmq_sql.execute("SELECT pgmq.create(%s)", [name_of(n)])
            made.append(name_of(n))
            pgmq_sql.execute(
                "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('n', i))) FROM generate_series(1, %s) i",
                [name_of(n), n],
            )

    make(1, QUEUES)
    with override_settings(OVERVIEW_PROBE_ALL_UP_TO=10, STATS_CACHE_SECONDS=0):
        yield make
    for name in made:
        pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [name])


def counted(pgmq_sql, name: str) -> dict[str, int]:
    """What SQL says of a queue's live table now."""
    backlog, in_flight = pgmq_sql.execute(
        f"SELECT count(*), count(*) FILTER (WHERE vt > now() AND read_ct > 0) FROM pgmq.q_{name}"  # noqa: S608
    ).fetchone()
    return {"backlog": backlog, "in_flight": in_flight}


def sample_note(page) -> str:
    note = page.select_one("[data-sampled]")
    return note.get_text(" ", strip=True) if note else ""


def test_the_pages_queues_are_live_and_the_totals_count_the_others_from_the_latest_round(
    signed_in_client, many_queues, pgmq_sql
):
    take_sample(count_poison_everywhere=True)
    # After the round: on page 1 (sorted by name) a queue gets busier and is being read ...
    pgmq_sql.execute("SELECT pgmq.send_batch('many_001', ARRAY['{}', '{}', '{}', '{}', '{}']::jsonb[])")
    pgmq_sql.execute("SELECT pgmq.read('many_001', 60, 2)")
    # ... and on page 2 another one too, which the totals know only from the round.
    pgmq_sql.execute("SELECT pgmq.send_batch('many_055', ARRAY['{}', '{}', '{}']::jsonb[])")

    page = parse(signed_in_client.get("/"))
    rows = overview_rows(page)

    assert len(rows) == 50 and name_of(55) not in rows
    for name, row in rows.items():
        assert {"backlog": number(row["backlog"]), "in_flight": number(row["in-flight"])} == counted(pgmq_sql, name)
    everything_now = sum(counted(pgmq_sql, name_of(n))["backlog"] for n in range(1, QUEUES + 1))
    shown = totals(page)
    # Every queue is in the totals: page 1 as it is now, the five beyond it as the round saw them.
    assert number(shown["queues"]) == QUEUES
    assert number(shown["backlog"]) == everything_now - 3
    assert number(shown["in-flight"]) == 2
    note = sample_note(page)
    assert "50 queues on this page are counted live" in note and "5 others from the sampler's round of" in note
    assert page.select_one("[data-sampled] [data-sample-age]").get_text().endswith("ago)")


def test_health_problems_beyond_page_one_are_counted_at_the_top_and_one_click_away(
    signed_in_client, many_queues, pgmq_sql
):
    lenient = HealthRule(
        queues="*",
        oldest_age=Thresholds(warning=3600.0, critical=7200.0),
        backlog=Thresholds(warning=1000, critical=2000),
        poison=Thresholds(warning=1, critical=10),
    )
    strict = replace(lenient, queues="many_054", backlog=Thresholds(warning=10, critical=50))
    with override_settings(HEALTH_RULES=[strict, lenient]):
        take_sample(count_poison_everywhere=True)
        first_page = parse(signed_in_client.get("/"))
        link = first_page.select_one("[data-health-problems] a.health-critical")
        assert link.get_text(strip=True) == "1 critical queue"
        assert first_page.select_one("[data-health-count=critical]").get_text(strip=True) == "1 critical"
        assert first_page.select_one("[data-health-count=ok]").get_text(strip=True) == "54 ok"
        assert "many_054" not in overview_rows(first_page)

        critical = parse(signed_in_client.get("/" + link["href"]))
    rows = overview_rows(critical)
    assert list(rows) == ["many_054"]
    assert rows["many_054"]["health"] == "critical" and number(rows["many_054"]["backlog"]) == 54
    assert "Showing critical queues only" in critical.select_one("[data-health-problems]").get_text(" ", strip=True)


def test_sorting_by_a_probed_figure_follows_the_latest_round_and_says_so(signed_in_client, many_queues, pgmq_sql):
    take_sample(count_poison_everywhere=True)
    page = parse(signed_in_client.get("/?sort=-backlog"))
    assert list(overview_rows(page))[:3] == ["many_055", "many_054", "many_053"]
    assert "the order" in sample_note(page)
    assert page.select_one("[data-sampled] [data-sample-age]") is not None

    api = signed_in_client.get("/api/v1/queues/?sort=-backlog&page=2").json()
    assert [queue["name"] for queue in api["results"]] == [name_of(n) for n in range(5, 0, -1)]
    assert api["totals"]["queues"] == QUEUES and api["totals"]["sampled"] == 50
    assert api["totals"]["sampled_at"] is not None and api["totals"]["unsampled"] == 0


def test_the_pages_sparklines_and_forecasts_are_what_a_few_queues_show(signed_in_client, many_queues, pgmq_sql):
    """Above the limit the page's sparklines and drain forecasts come from one read of the history
    for both: the same as the overview of a few queues draws from a read each."""
    now = pgmq_sql.execute("SELECT now()").fetchone()[0]
    drawn = [name_of(n) for n in (1, 2, 3)]  # on page 1, sorted by name
    QueueSample.objects.bulk_create(
        QueueSample(
            queue_name=name,
            sampled_at=now - timedelta(seconds=ago),
            backlog=n + ago // 60,
            backlog_exact=True,
            visible=n + ago // 60,
            in_flight=0,
            delayed=0,
            sent_total=n,
            removed_total=0,
        )
        for n, name in enumerate(drawn, start=1)
        for ago in range(1200, 0, -10)
    )
    take_sample(count_poison_everywhere=True)

    def drawn_on(page) -> dict[str, tuple[str, str]]:
        return {
            name: (
                str(page.select_one(f"tr[data-queue={name}] td.spark svg")),
                page.select_one(f"tr[data-queue={name}] [data-column=drain-eta]").get_text(" ", strip=True),
            )
            for name in drawn
        }

    page_only = drawn_on(parse(signed_in_client.get("/")))
    with override_settings(OVERVIEW_PROBE_ALL_UP_TO=1000):
        every_queue = drawn_on(parse(signed_in_client.get("/")))

    assert page_only == every_queue
    for name, (svg, forecast) in page_only.items():
        assert svg.startswith("<svg") and forecast.startswith("stalled over"), (name, svg, forecast)


def test_a_queue_the_round_has_not_seen_is_listed_live_and_said_to_be_left_out(signed_in_client, many_queues, pgmq_sql):
    take_sample(count_poison_everywhere=True)
    many_queues(QUEUES + 1, QUEUES + 1)  # many_056, created since the round

    first_page = parse(signed_in_client.get("/"))
    assert "1 queue not on this page has no sample yet" in sample_note(first_page)
    assert number(totals(first_page)["queues"]) == QUEUES + 1

    second_page = parse(signed_in_client.get("/?page=2"))
    rows = overview_rows(second_page)
    assert number(rows["many_056"]["backlog"]) == counted(pgmq_sql, "many_056")["backlog"] == 56


def test_with_no_sampler_the_page_is_still_live_and_the_rest_is_said_to_be_unknown(signed_in_client, many_queues):
    page = parse(signed_in_client.get("/"))
    assert len(overview_rows(page)) == 50
    note = sample_note(page)
    assert "5 queues not on this page have no sample yet" in note and "is the sampler running?" in note
    assert number(totals(page)["backlog"]) == sum(range(1, 51))


def test_the_overview_costs_what_its_page_shows_not_what_the_database_holds(signed_in_client, many_queues):
    def statements() -> int:
        take_sample(count_poison_everywhere=True)
        with (
            CaptureQueriesContext(connections["pgmq"]) as pgmq,
            CaptureQueriesContext(connections["default"]) as default,
        ):
            assert signed_in_client.get("/?sort=-in_flight").status_code == 200
        return len(pgmq) + len(default)

    with_55 = statements()
    many_queues(QUEUES + 1, 2 * QUEUES)
    assert statements() == with_55


def test_a_refresh_reads_the_latest_round_once_and_the_next_round_anew(signed_in_client, many_queues, pgmq_sql):
    """A round is never changed once written: its names and the totals of the queues off the page
    are read on the first refresh in it, and a new round is read again."""

    def refreshed() -> tuple[int, str]:
        with CaptureQueriesContext(connections["default"]) as dashboard:
            page = parse(signed_in_client.get("/"))
        return len(dashboard), totals(page)["backlog"]

    take_sample(count_poison_everywhere=True)
    first, backlog = refreshed()
    again, same_backlog = refreshed()
    assert (again, same_backlog) == (first - 2, backlog)  # the round's names and its totals

    pgmq_sql.execute("SELECT pgmq.send_batch('many_055', array_fill('{}'::jsonb, ARRAY[100]))")  # off page 1
    take_sample(count_poison_everywhere=True)
    next_round, next_backlog = refreshed()
    assert next_round == first and number(next_backlog) == number(backlog) + 100


def test_metrics_above_the_limit_serve_the_latest_round_with_its_age(client, many_queues, pgmq_sql):
    with override_settings(METRICS_TOKEN=TOKEN):
        before_any_round = scrape(client)
        take_sample(count_poison_everywhere=True)
        pgmq_sql.execute("SELECT pgmq.send('many_001', '{}')")
        found = scrape(client)
    assert before_any_round["pgmq_dashboard_figures_age_seconds"] == {(("database", "main"),): 0.0}
    assert per_queue(before_any_round, "pgmq_queue_backlog")["many_001"] == 1  # probed: no round yet
    backlog = per_queue(found, "pgmq_queue_backlog")
    assert backlog == {name_of(n): n for n in range(1, QUEUES + 1)}  # as the round saw them
    assert found["pgmq_dashboard_figures_age_seconds"][(("database", "main"),)] > 0


@pytest.mark.parametrize("sort", ["name", "-backlog"], ids=["pair on the page", "pair beyond the page"])
def test_names_sharing_a_table_are_counted_once_on_the_page_or_from_the_round(
    signed_in_client, many_queues, foo_pair, pgmq_sql, sort
):
    take_sample(count_poison_everywhere=True)
    live, archived, sent = table_truth(pgmq_sql)

    page = parse(signed_in_client.get(f"/?sort={sort}"))

    assert ("Foo" in overview_rows(page)) == (sort == "name")  # by backlog, its 4 messages are on page 2
    shown = totals(page)
    assert number(shown["queues"]) == QUEUES + 2
    assert number(shown["backlog"]) == sum(range(1, QUEUES + 1)) + live
    assert number(shown["archived"]) == archived
    sent_by_many = sum(range(1, QUEUES + 1))
    api = signed_in_client.get(f"/api/v1/queues/?sort={sort}").json()["totals"]
    assert api["tables"] == QUEUES + 1 and api["sent"] == sent_by_many + sent


def test_a_round_shared_among_connections_samples_every_queue_and_leaves_no_connection_open(
    many_queues, monkeypatch, pgmq_sql
):
    monkeypatch.setattr(stats, "PROBES_PER_STATEMENT", 5)  # 55 queues: 11 statements, over 2 connections
    threads = []
    probed_and_closed = stats._probed_and_closed

    def spied(statements):
        threads.append(threading.get_ident())
        return probed_and_closed(statements)

    monkeypatch.setattr(stats, "_probed_and_closed", spied)

    def dashboard_connections() -> int:
        return pgmq_sql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pgmq-dashboard' AND pid <> pg_backend_pid()"
        ).fetchone()[0]

    take_sample(count_poison_everywhere=True)
    before = dashboard_connections()
    take_sample(count_poison_everywhere=True)

    assert len(threads) == 4 and threading.get_ident() not in threads  # 2 per round, never this thread
    assert dashboard_connections() == before
    latest = SamplerRound.objects.order_by("-finished_at").first()
    stored = dict(latest.samples.values_list("queue_name", "backlog"))
    assert stored == {name_of(n): counted(pgmq_sql, name_of(n))["backlog"] for n in range(1, QUEUES + 1)}
    assert latest.queues == QUEUES

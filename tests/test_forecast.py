"""The drain forecast: the formula on recorded histories, and the forecast where a person reads it
(overview column, sorted both ways; queue page; API; the drain_eta alert measure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import F
from django.test import override_settings

from queues.alerting import summary, webhook_body
from queues.forecast import DRAINING, EMPTY, GROWING, STALLED, UNKNOWN, Point, eta_from_rates, forecast
from queues.management.commands.sample_metrics import take_sample
from queues.models import AlertEpisode, QueueSample, SamplerRound
from queues.selectors import history
from tests.conftest import uses_databases, wait_for
from tests.pages import overview_rows, parse, seconds, stat
from tests.test_alerting import alert_rules  # noqa: F401 (a fixture)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def recorded(backlog_now: int, sent_per_10s: list[int], removed_per_10s: list[int]) -> list[Point]:
    """A history as the sampler records it, a sample every 10 s ending now: what was sent and
    what was removed (archived or deleted) between each sample and the next."""
    assert len(sent_per_10s) == len(removed_per_10s)
    sent, removed, backlog = 100_000, 90_000, backlog_now
    points = [Point(NOW, backlog, sent, removed)]
    for step, (sent_then, removed_then) in enumerate(
        zip(reversed(sent_per_10s), reversed(removed_per_10s), strict=True)
    ):
        sent, removed, backlog = sent - sent_then, removed - removed_then, backlog - sent_then + removed_then
        points.append(Point(NOW - timedelta(seconds=10 * (step + 1)), backlog, sent, removed))
    return points[::-1]


# Five minutes of a producer sending about 5/s and a consumer removing about 8/s, 10 s at a time.
STEADY_SENT = [50, 52, 48, 51, 49, 50, 53, 47, 50, 50, 51, 49, 50, 52, 48, 50, 49, 51, 50, 50, 48, 52, 50, 49, 51]
STEADY_SENT += [50, 50, 49, 51, 50]
STEADY_REMOVED = [80, 79, 81, 80, 82, 78, 80, 80, 79, 81, 80, 80, 81, 79, 80, 80, 78, 82, 80, 80, 81, 79, 80, 80, 80]
STEADY_REMOVED += [79, 81, 80, 80, 80]
# The same 5/s on average, sent in a burst of 300 once a minute; the consumer as steady as before.
BURSTY_SENT = [0, 0, 0, 0, 0, 300] * 5
# A consumer removing 8/s stopped 12 minutes ago; the producer goes on at 5/s.
STOPPED_SENT = [50] * 90
STOPPED_REMOVED = [80] * 18 + [0] * 72
# A producer at 9/s, a consumer at 5/s.
GROWING_SENT = [90] * 30
GROWING_REMOVED = [50] * 30


def test_a_steady_drain_clears_at_its_rate_and_is_sure_of_it():
    found = forecast(recorded(5_400, STEADY_SENT, STEADY_REMOVED))

    assert found.state == DRAINING
    # 5,400 waiting, shrinking by 8/s - 5/s: 30 minutes.
    assert 29 * 60 <= found.eta_s <= 31 * 60
    assert found.summary == "clears in ~30 min at the current rate"
    assert found.basis == "out 480/min, in 300/min over the last 5 min"
    assert found.confidence == "high"
    assert found.certainty.startswith("high confidence: 31 samples, rate steady within ±")


def test_a_bursty_producer_gives_the_same_clearing_time_but_low_confidence():
    found = forecast(recorded(5_400, BURSTY_SENT, STEADY_REMOVED))

    assert found.state == DRAINING
    assert 29 * 60 <= found.eta_s <= 31 * 60
    assert found.confidence == "low"
    assert found.relative_error > 0.3


def test_a_stopped_consumer_is_a_stall_with_how_long_nothing_was_removed():
    found = forecast(recorded(7_000, STOPPED_SENT, STOPPED_REMOVED))

    assert found.state == STALLED and math.isinf(found.eta_s)
    assert found.summary == "stalled: nothing removed for 12 min"
    assert found.short == "stalled 12 min"
    assert found.removal_rate == 0 and found.arrival_rate == 5


def test_a_consumer_never_seen_in_the_history_is_stalled_for_over_the_whole_of_it():
    found = forecast(recorded(4_500, [50] * 90, [0] * 90))

    assert found.state == STALLED
    assert found.summary == "stalled: nothing removed for over 15 min"


def test_a_growing_queue_will_not_drain_and_says_by_how_much():
    found = forecast(recorded(3_000, GROWING_SENT, GROWING_REMOVED))

    assert found.state == GROWING and math.isinf(found.eta_s)
    assert found.summary == "growing by 240/min: will not drain"
    assert found.basis == "out 300/min, in 540/min over the last 5 min"


def test_an_empty_queue_has_nothing_to_drain_with_or_without_history():
    drained = recorded(0, [0] * 30, [5] * 30)
    assert forecast(drained).state == EMPTY
    assert forecast(drained).eta_s == 0
    assert forecast([Point(NOW, 0, 0, 0)]).summary == "empty: nothing to drain"


def test_a_short_history_says_so_rather_than_guess():
    assert forecast([]).state == UNKNOWN
    two = recorded(100, [5, 5], [10, 10])  # 20 s
    assert forecast(two).state == UNKNOWN
    assert forecast(two).summary == "not enough history yet"
    assert forecast(two).eta_s is None


def test_counters_that_went_backwards_start_the_history_again():
    # The queue was dropped and made again 20 s ago: its counters started from zero.
    before = recorded(500, [10] * 30, [20] * 30)[:-3]
    after = [Point(NOW - timedelta(seconds=20), 3, 3, 0), Point(NOW - timedelta(seconds=10), 6, 6, 0)]
    found = forecast([*before, *after, Point(NOW, 9, 9, 0)])
    assert found.state == UNKNOWN


def test_the_sampler_orders_many_queues_by_the_same_rates():
    assert eta_from_rates(0, None, None) == 0
    assert eta_from_rates(100, 1.0, 3.0) == 50
    assert math.isinf(eta_from_rates(100, 3.0, 3.0)) and math.isinf(eta_from_rates(100, 0.0, 0.0))
    assert eta_from_rates(100, None, 3.0) is None


# -- on real pgmq -------------------------------------------------------------------------------

# name: (messages sent, of them archived, removed per second over the last 5 minutes)
QUEUES = {"fc_empty": (40, 40, 0.1), "fc_fast": (300, 200, 0.5), "fc_slow": (1_000, 200, 0.5), "fc_stuck": (50, 0, 0)}


def queues_with_history(make_queue, pgmq_sql) -> None:
    """Real queues whose counters (msg_id sequence, pg_stat's rows deleted) are where a consumer
    left them, and five minutes of the sampler's history leading there, recorded as data."""
    for name, (sent, archived, _) in QUEUES.items():
        make_queue(name, messages=sent)
        if archived:
            pgmq_sql.execute("SELECT pgmq.archive(%s, array_agg(i)) FROM generate_series(1, %s) i", [name, archived])
    make_queue("fc_young", messages=10)  # no history at all
    pgmq_sql.execute("SELECT pg_stat_force_next_flush()")
    now = pgmq_sql.execute("SELECT now()").fetchone()[0]
    QueueSample.objects.bulk_create(
        QueueSample(
            queue_name=name,
            sampled_at=now - timedelta(seconds=ago),
            backlog=sent - archived + int(removed_per_s * ago),
            backlog_exact=True,
            visible=0,
            in_flight=0,
            delayed=0,
            sent_total=sent,
            removed_total=archived - int(removed_per_s * ago),
        )
        for name, (sent, archived, removed_per_s) in QUEUES.items()
        for ago in range(290, 0, -10)
    )


@uses_databases
@pytest.mark.parametrize("many_queues", [False, True], ids=["probed", "sampled"])
def test_the_overview_sorts_by_when_each_queue_clears(signed_in_client, make_queue, pgmq_sql, many_queues):
    queues_with_history(make_queue, pgmq_sql)
    take_sample(count_poison_everywhere=False)
    bound = 1 if many_queues else 200  # above the bound the order is the sampler's round's, in the database

    with override_settings(OVERVIEW_PROBE_ALL_UP_TO=bound, STATS_CACHE_SECONDS=0):
        ascending = parse(signed_in_client.get("/?q=fc_&sort=drain_eta"))
        descending = parse(signed_in_client.get("/?q=fc_&sort=-drain_eta"))
        listed = signed_in_client.get("/api/v1/queues/?q=fc_&sort=-drain_eta").json()["results"]

    rows = overview_rows(ascending)
    assert list(rows) == ["fc_empty", "fc_fast", "fc_slow", "fc_stuck", "fc_young"]
    assert list(overview_rows(descending)) == ["fc_stuck", "fc_slow", "fc_fast", "fc_empty", "fc_young"]
    assert [queue["name"] for queue in listed] == ["fc_stuck", "fc_slow", "fc_fast", "fc_empty", "fc_young"]
    # fc_fast: 100 waiting, 30 removed a minute: about 3 min 20 s; fc_slow 800: about 27 min.
    assert rows["fc_fast"]["drain-eta"].startswith("~3 min")
    assert rows["fc_slow"]["drain-eta"].startswith("~2")
    assert rows["fc_stuck"]["drain-eta"].startswith("stalled over 4 min")
    assert rows["fc_empty"]["drain-eta"] == "empty"
    assert rows["fc_young"]["drain-eta"] == "no history yet"
    stuck = ascending.select_one("tr[data-queue=fc_stuck] [data-column=drain-eta]")
    assert "stalled: nothing removed for over 4 min" in stuck["title"]
    by_name = {queue["name"]: queue["forecast"] for queue in listed}
    assert by_name["fc_stuck"]["state"] == "stalled" and by_name["fc_stuck"]["eta_s"] is None
    assert by_name["fc_stuck"]["will_drain"] is False
    assert 190 <= by_name["fc_fast"]["eta_s"] <= 210 and by_name["fc_fast"]["removal_rate"] == pytest.approx(0.5, 0.05)
    assert by_name["fc_young"] == {**by_name["fc_young"], "state": "unknown", "eta_s": None, "confidence": None}


@uses_databases
def test_a_drain_eta_alert_fires_for_a_queue_that_will_not_clear_in_time(make_queue, pgmq_sql, alert_rules):  # noqa: F811
    alert_rules("""
        [[rules]]
        name = "slow drain"
        queues = "fc_*"
        measure = "drain_eta"
        threshold = "10m"
    """)
    queues_with_history(make_queue, pgmq_sql)

    take_sample(count_poison_everywhere=False)

    episodes = {episode.queue_name: episode for episode in AlertEpisode.objects.filter(rule="slow drain")}
    # fc_slow needs about 27 min, fc_stuck never clears; fc_fast (3 min) and fc_empty do not
    # breach, and fc_young has no history to tell.
    assert sorted(episodes) == ["fc_slow", "fc_stuck"]
    assert episodes["fc_slow"].state == AlertEpisode.FIRING and 1_500 <= episodes["fc_slow"].value <= 1_700
    assert math.isinf(episodes["fc_stuck"].value)
    assert "time to drain ∞, it will not drain (threshold 10 min)" in summary(episodes["fc_stuck"], "firing")
    assert webhook_body(episodes["fc_stuck"], "firing")["value"] is None


@uses_databases
def test_the_sampler_records_a_real_drain_and_the_page_and_api_forecast_it(signed_in_client, make_queue, pgmq_sql):
    """A consumer archives 30 messages while a producer sends 10 between real sampler rounds. Time is
    compressed rather than waited for: before each round the history recorded so far moves 10 s into
    the past, so the rounds stand 10 s apart. Once it has a minute of history the queue page and the
    API say when it clears."""
    make_queue("fc_live", messages=600)
    taken = 0

    def work_and_sample() -> str:
        nonlocal taken
        QueueSample.objects.update(sampled_at=F("sampled_at") - timedelta(seconds=10))
        SamplerRound.objects.update(
            started_at=F("started_at") - timedelta(seconds=10), finished_at=F("finished_at") - timedelta(seconds=10)
        )
        pgmq_sql.execute("SELECT pgmq.send_batch('fc_live', array_fill('{}'::jsonb, ARRAY[10]))")
        read = pgmq_sql.execute("SELECT array_agg(msg_id) FROM pgmq.read('fc_live', 30, 30)").fetchone()[0]
        pgmq_sql.execute("SELECT pgmq.archive('fc_live', %s::bigint[])", [read])
        pgmq_sql.execute("SELECT pg_stat_force_next_flush()")
        take_sample(count_poison_everywhere=False)
        taken += 1
        return signed_in_client.get("/api/v1/queues/fc_live/").json()["forecast"]["state"]

    found = wait_for(lambda: work_and_sample() == DRAINING, timeout=60, interval=0, what="a drain forecast")
    assert found and taken >= 7  # a minute of samples, 10 s apart

    queue = signed_in_client.get("/api/v1/queues/fc_live/").json()
    api = queue["forecast"]
    # 20 messages a sample leave the backlog: 2/s; what waits, at that rate.
    assert api["drain_rate"] == pytest.approx(2, rel=0.2)
    assert api["eta_s"] == pytest.approx(queue["backlog"]["value"] / api["drain_rate"], rel=0.01)
    page = parse(signed_in_client.get("/queues/fc_live/"))
    assert stat(page, "forecast").startswith("clears in ~")
    assert seconds(stat(page, "forecast")) == pytest.approx(api["eta_s"], rel=0.3)
    assert stat(page, "forecast-basis").startswith("out 1")  # 180/min out, 60/min in
    assert "confidence" in stat(page, "forecast-certainty")
    assert history.latest_round() is not None

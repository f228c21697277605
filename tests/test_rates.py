"""Rates that follow a burst: the one-minute rate beside the five-minute one, each with its window."""

from __future__ import annotations

import re
from datetime import timedelta

from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample
from queues.selectors import history
from tests.conftest import uses_databases
from tests.pages import overview_rows, parse, seconds, stat, totals

pytestmark = uses_databases

SENT = 11_000
CALM, BURST = 22, 85  # messages a second: the producer went from 22/s to 85/s a minute ago


def sent_by(seconds_ago: int) -> int:
    """The queue's counter (msg_id sequence) `seconds_ago`, for a producer that sent BURST a second
    over the last minute and CALM a second before, ending at SENT now."""
    if seconds_ago <= 60:
        return SENT - BURST * seconds_ago
    return SENT - BURST * 60 - CALM * (seconds_ago - 60)


def record_history(pgmq_sql, name: str, seconds_back: list[int]) -> None:
    """Samples every 10 s, as the sampler takes them, `seconds_back` from the database's now; the
    consumer archived as fast as the producer sent."""
    now = pgmq_sql.execute("SELECT now()").fetchone()[0]
    removed_now = pgmq_sql.execute(
        "SELECT pg_stat_get_tuples_deleted(format('pgmq.%%I', 'q_' || %s)::regclass)", [name]
    ).fetchone()[0]
    assert removed_now == SENT
    QueueSample.objects.bulk_create(
        QueueSample(
            queue_name=name,
            sampled_at=now - timedelta(seconds=ago),
            backlog=0,
            backlog_exact=True,
            visible=0,
            in_flight=0,
            delayed=0,
            sent_total=sent_by(ago),
            removed_total=sent_by(ago),
        )
        for ago in seconds_back
    )


def a_queue_that_burst(make_queue, pgmq_sql, name: str, seconds_back: list[int]) -> None:
    make_queue(name, messages=SENT)
    pgmq_sql.execute("SELECT pgmq.archive(%s, array_agg(i)) FROM generate_series(1, %s) i", [name, SENT])
    pgmq_sql.execute("SELECT pg_stat_force_next_flush()")
    record_history(pgmq_sql, name, seconds_back)


def per_second(text: str) -> float:
    assert text.endswith("/s"), text
    return float(text.removesuffix("/s").replace(",", ""))


FIVE_MINUTES_OF_SAMPLES = list(range(290, 0, -10))


def test_the_one_minute_rate_follows_a_burst_the_five_minute_one_lags(signed_in_client, make_queue, pgmq_sql):
    a_queue_that_burst(make_queue, pgmq_sql, "burst", FIVE_MINUTES_OF_SAMPLES)

    page = parse(signed_in_client.get("/queues/burst/"))

    # The last minute reads the burst; the five minutes still mostly the calm before it
    # (22/s for 230 s and 85/s for 60 s: 35/s).
    for figure in ("enqueue-rate", "processing-rate"):
        assert 70 <= per_second(stat(page, f"{figure}-1m")) <= BURST, figure
        assert 33 <= per_second(stat(page, figure)) <= 36, figure
        # Each says how long it was measured over: the oldest sample of each window, 50 s and
        # 4 min 50 s back (a little more by the time the page asked).
        assert stat(page, f"{figure}-1m-window").startswith("over the last ")
        assert 50 <= seconds(stat(page, f"{figure}-1m-window")) <= 60
        assert 290 <= seconds(stat(page, f"{figure}-window")) <= 300

    overview = parse(signed_in_client.get("/"))
    row = overview_rows(overview)["burst"]
    assert 70 <= per_second(row["enqueue-rate-1m"]) <= BURST
    assert 33 <= per_second(row["enqueue-rate"]) <= 36
    # The row says over what windows, on hover.
    windows = overview.select_one("tr[data-queue=burst] [data-column=enqueue-rate]").parent["title"]
    assert re.fullmatch(r"[\d.]+/s over the last (5\d s|1 min); [\d.]+/s over the last (4 min 5\d s|5 min)", windows), (
        windows
    )
    sums = totals(overview)
    assert 70 <= per_second(sums["enqueue-rate-1m"]) <= BURST
    assert 33 <= per_second(sums["enqueue-rate"]) <= 36

    found = signed_in_client.get("/api/v1/queues/burst/").json()
    assert 70 <= found["enqueue_rate_1m"] <= BURST and 70 <= found["processing_rate_1m"] <= BURST
    assert 33 <= found["enqueue_rate"] <= 36 and 33 <= found["processing_rate"] <= 36
    assert 50 <= found["rate_window_1m_s"] <= 60 and 290 <= found["rate_window_s"] <= 300


def test_a_history_shorter_than_the_window_says_the_window_it_had(signed_in_client, make_queue, pgmq_sql):
    a_queue_that_burst(make_queue, pgmq_sql, "young", [40, 30, 20, 10])

    page = parse(signed_in_client.get("/queues/young/"))

    # 40 s of history: both rates are over those 40 s, and say so rather than "5 min".
    assert 40 <= seconds(stat(page, "enqueue-rate-window")) <= 50
    assert 40 <= seconds(stat(page, "enqueue-rate-1m-window")) <= 50
    assert 70 <= per_second(stat(page, "enqueue-rate")) <= BURST


def test_without_history_there_is_no_rate_and_the_page_says_so(signed_in_client, make_queue):
    make_queue("fresh")
    page = parse(signed_in_client.get("/queues/fresh/"))
    assert stat(page, "enqueue-rate-1m") == "–"
    assert stat(page, "enqueue-rate-1m-window") == "no history yet"


def test_the_sampler_keeps_the_one_minute_rate_for_the_overview_of_many_queues(make_queue, pgmq_sql):
    a_queue_that_burst(make_queue, pgmq_sql, "kept", FIVE_MINUTES_OF_SAMPLES)

    take_sample(count_poison_everywhere=False)

    latest = QueueSample.objects.filter(queue_name="kept").latest("sampled_at")
    assert 70 <= latest.enqueue_rate_1m <= BURST and 70 <= latest.processing_rate_1m <= BURST
    assert 33 <= latest.enqueue_rate <= 36
    # What the overview's totals take for the queues off its page (above OVERVIEW_PROBE_ALL_UP_TO).
    summed = history.round_totals(history.round_samples(history.latest_round(), ["kept"]))
    assert 70 <= summed.enqueue_rate_1m <= BURST and 33 <= summed.enqueue_rate <= 36

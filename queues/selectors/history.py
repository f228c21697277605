"""The metric history the sampler keeps (QueueSample): rates, sparklines and the queue page's charts.

Every query here uses the (queue_name, sampled_at) index and returns a bounded number of points,
whatever the range: samples are grouped into time buckets and the last sample of each bucket
stands for it. "Now" is the pgmq database's clock, the one the sampler stamps samples with.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from queues.models import QueueSample, SamplerRound
from queues.selectors.stats import QueueStats, RowCount
from queues.watched import watched_name

RATE_WINDOW = timedelta(minutes=5)
SHORTEST_RATE_WINDOW = timedelta(seconds=30)
SPARKLINE_WINDOW = timedelta(minutes=30)
SPARKLINE_POINTS = 30


@dataclasses.dataclass(frozen=True)
class Rates:
    enqueue: float | None  # messages sent per second
    processing: float | None  # messages removed from the queue (archived or deleted) per second
    window_s: float | None  # over how long; None when there is no history to compare with


@dataclasses.dataclass(frozen=True)
class HistoryPoint:
    at: datetime
    backlog: int
    backlog_exact: bool
    visible: int
    in_flight: int
    delayed: int
    enqueue_rate: float | None  # since the previous point
    processing_rate: float | None


def rates(stats: list[QueueStats]) -> dict[str, Rates]:
    """Rates over the last few minutes: today's cumulative counters against the oldest sample of
    the window (at least 30 s back, so a fresh sampler already gives a rate)."""
    if not stats:
        return {}
    now = max(queue.measured_at for queue in stats)
    earliest = (
        QueueSample.objects.filter(
            database=watched_name(),
            queue_name__in=[queue.name for queue in stats],
            sampled_at__range=(now - RATE_WINDOW, now - SHORTEST_RATE_WINDOW),
        )
        .order_by("queue_name", "sampled_at")
        .distinct("queue_name")
        .only("queue_name", "sampled_at", "sent_total", "removed_total")
    )
    by_name = {sample.queue_name: sample for sample in earliest}
    result = {}
    for queue in stats:
        sample = by_name.get(queue.name)
        if sample is None:
            result[queue.name] = Rates(None, None, None)
            continue
        seconds = (queue.measured_at - sample.sampled_at).total_seconds()
        result[queue.name] = Rates(
            enqueue=_per_second(queue.sent_total, sample.sent_total, seconds),
            processing=_per_second(queue.live.removed_total, sample.removed_total, seconds),
            window_s=seconds,
        )
    return result


def _per_second(now_total: int | None, then_total: int | None, seconds: float) -> float | None:
    # A counter that went backwards was reset (pg_stat after a crash, a recreated queue): no rate.
    if now_total is None or then_total is None or seconds <= 0 or now_total < then_total:
        return None
    return (now_total - then_total) / seconds


def _bucketed(names: list[str], since: datetime, bucket_s: float) -> list[QueueSample]:
    """The last sample of each time bucket since `since`, per queue, oldest first."""
    table = QueueSample._meta.db_table
    return list(
        QueueSample.objects.raw(
            f"""
        SELECT DISTINCT ON (queue_name, floor(extract(epoch FROM sampled_at) / %s)) *
        FROM {table}
        WHERE database = %s AND queue_name = ANY(%s) AND sampled_at >= %s
        ORDER BY queue_name, floor(extract(epoch FROM sampled_at) / %s), sampled_at DESC
        """,  # noqa: S608 (the table name is the model's own, not input)
            [bucket_s, watched_name(), names, since, bucket_s],
        )
    )


def sparklines(names: list[str], now: datetime) -> dict[str, list[int]]:
    """Backlog over the last half hour, a point a minute, for each queue that has history."""
    lines: dict[str, list[int]] = {}
    window_s = SPARKLINE_WINDOW.total_seconds()
    for sample in _bucketed(names, now - SPARKLINE_WINDOW, window_s / SPARKLINE_POINTS):
        lines.setdefault(sample.queue_name, []).append(sample.backlog)
    return lines


def queue_history(queue_name: str, *, now: datetime, range_s: float, points: int = 120) -> list[HistoryPoint]:
    samples = _bucketed([queue_name], now - timedelta(seconds=range_s), range_s / points)
    history = []
    previous = None
    for sample in samples:
        seconds = (sample.sampled_at - previous.sampled_at).total_seconds() if previous else 0
        history.append(
            HistoryPoint(
                at=sample.sampled_at,
                backlog=sample.backlog,
                backlog_exact=sample.backlog_exact,
                visible=sample.visible,
                in_flight=sample.in_flight,
                delayed=sample.delayed,
                enqueue_rate=_per_second(sample.sent_total, previous.sent_total, seconds) if previous else None,
                processing_rate=(
                    _per_second(sample.removed_total, previous.removed_total, seconds) if previous else None
                ),
            )
        )
        previous = sample
    return history


def latest_poison_counts(names: list[str], now: datetime) -> dict[str, tuple[int, datetime]]:
    """The sampler's latest poison count per queue (it counts big tables about once a minute)."""
    found = (
        QueueSample.objects.filter(
            database=watched_name(),
            queue_name__in=names,
            poison__isnull=False,
            sampled_at__gte=now - timedelta(minutes=10),
        )
        .order_by("queue_name", "-sampled_at")
        .distinct("queue_name")
        .only("queue_name", "sampled_at", "poison")
    )
    return {sample.queue_name: (sample.poison, sample.sampled_at) for sample in found}


@dataclasses.dataclass(frozen=True)
class SampledQueue:
    """One queue's figures in the sampler's latest round, named as QueueStats names them."""

    name: str
    sampled_at: datetime
    backlog: RowCount
    visible: RowCount
    in_flight: int
    delayed: int
    oldest_age_s: float | None
    newest_age_s: float | None
    oldest_visible_age_s: float | None
    sent_total: int
    archived: RowCount | None
    poison: int | None
    rates: Rates
    health: str  # ok, warning, critical; "" in a sample older than the field
    not_visible_exact: bool = True  # what the sample counted (an estimate is not flagged in samples)


@dataclasses.dataclass(frozen=True)
class LatestRound:
    finished_at: datetime
    queues: dict[str, SampledQueue]


SAMPLED_FIELDS = (
    "queue_name",
    "sampled_at",
    "backlog",
    "backlog_exact",
    "visible",
    "in_flight",
    "delayed",
    "oldest_age_s",
    "newest_age_s",
    "oldest_visible_age_s",
    "sent_total",
    "archived",
    "archived_exact",
    "poison",
    "enqueue_rate",
    "processing_rate",
    "health",
)


def latest_round() -> LatestRound | None:
    """Every queue's figures in the sampler's latest round of this database; None before its first."""
    found = SamplerRound.objects.filter(database=watched_name()).order_by("-finished_at").first()
    if found is None:
        return None
    samples = QueueSample.objects.filter(
        database=watched_name(), sampled_at__range=(found.started_at, found.finished_at)
    ).values_list(*SAMPLED_FIELDS)
    queues = {}
    for (
        name,
        sampled_at,
        backlog,
        backlog_exact,
        visible,
        in_flight,
        delayed,
        oldest_age_s,
        newest_age_s,
        oldest_visible_age_s,
        sent_total,
        archived,
        archived_exact,
        poison,
        enqueue_rate,
        processing_rate,
        health,
    ) in samples.iterator(chunk_size=5_000):
        queues[name] = SampledQueue(
            name=name,
            sampled_at=sampled_at,
            backlog=RowCount(backlog, backlog_exact),
            visible=RowCount(visible, backlog_exact),
            in_flight=in_flight,
            delayed=delayed,
            oldest_age_s=oldest_age_s,
            newest_age_s=newest_age_s,
            oldest_visible_age_s=oldest_visible_age_s,
            sent_total=sent_total,
            archived=None if archived is None else RowCount(archived, bool(archived_exact)),
            poison=poison,
            rates=Rates(enqueue_rate, processing_rate, None),
            health=health,
        )
    return LatestRound(finished_at=found.finished_at, queues=queues)

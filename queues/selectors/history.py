"""The metric history the sampler keeps (QueueSample): rates, sparklines and the queue page's charts.

Every query here uses the (queue_name, sampled_at) index and returns a bounded number of points,
whatever the range: samples are grouped into time buckets, and the last sample of each bucket
stands for it in sparklines, while the queue page's charts keep each bucket's lowest, mean and
highest. "Now" is the pgmq database's clock, the one the sampler stamps samples with.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import Case, Count, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce

from queues.health import SEVERITY, Silence
from queues.models import QueueSample, SamplerRound
from queues.selectors.epochs import epoch_sql, moment
from queues.selectors.stats import QueueStats, RowCount
from queues.watched import watched_name

RATE_WINDOW = timedelta(minutes=5)
SHORT_RATE_WINDOW = timedelta(minutes=1)  # follows a burst the five-minute rate smooths away
SHORTEST_RATE_WINDOW = timedelta(seconds=30)
SPARKLINE_WINDOW = timedelta(minutes=30)
SPARKLINE_POINTS = 30


@dataclasses.dataclass(frozen=True)
class Rates:
    enqueue: float | None  # messages sent per second, last 5 min
    processing: float | None  # messages removed from the queue (archived or deleted) per second, last 5 min
    window_s: float | None  # over how long; None when there is no history to compare with
    # The same over the last minute: what the queue does now, not what it did for five minutes.
    enqueue_1m: float | None = None
    processing_1m: float | None = None
    window_1m_s: float | None = None


@dataclasses.dataclass(frozen=True)
class HistoryPoint:
    """One time bucket of a queue's chart: the lowest, mean and highest of its samples. A bucket
    the sampler stored nothing in (it was not running) has samples == 0 and no figures: a gap."""

    at: datetime  # the bucket's start
    samples: int
    backlog: int | None  # the mean, rounded
    backlog_min: int | None
    backlog_max: int | None
    backlog_exact: bool
    visible: float | None  # means
    in_flight: float | None
    delayed: float | None
    enqueue_rate: float | None  # the mean of the rates between consecutive samples
    enqueue_rate_max: float | None
    processing_rate: float | None
    processing_rate_max: float | None


@dataclasses.dataclass(frozen=True)
class History:
    points: list[HistoryPoint]  # every bucket of the range, oldest first, gaps included
    bucket_s: float
    range_start: datetime
    sampling_since: datetime | None  # this queue's oldest sample kept; None: no history at all

    @property
    def shorter_than_range(self) -> bool:
        return self.sampling_since is not None and self.sampling_since > self.range_start + timedelta(
            seconds=self.bucket_s
        )


def rates(stats: list[QueueStats]) -> dict[str, Rates]:
    """Rates over the last five minutes and the last minute: today's cumulative counters against
    the oldest sample of each window (at least 30 s back, so a fresh sampler already gives a rate;
    while the history is shorter than a window, the window is as long as the history)."""
    if not stats:
        return {}
    now = max(queue.measured_at for queue in stats)
    names = [queue.name for queue in stats]
    long, short = _earliest_samples(names, now, RATE_WINDOW), _earliest_samples(names, now, SHORT_RATE_WINDOW)
    result = {}
    for queue in stats:
        enqueue, processing, window_s = _rates_since(queue, long.get(queue.name))
        enqueue_1m, processing_1m, window_1m_s = _rates_since(queue, short.get(queue.name))
        result[queue.name] = Rates(enqueue, processing, window_s, enqueue_1m, processing_1m, window_1m_s)
    return result


@dataclasses.dataclass(frozen=True)
class CounterSample:
    """A queue's counters as a sample kept them: what a rate is measured against."""

    sampled_at: datetime
    sent_total: int | None
    removed_total: int | None


def _earliest_samples(names: list[str], now: datetime, window: timedelta) -> dict[str, CounterSample]:
    # Plain rows for an array of names: at 10,000 queues a model instance per sample and an IN list
    # of 10,000 parameters took a tenth of a sampler round.
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT ON (queue_name) queue_name, {epoch_sql("sampled_at")}, sent_total, removed_total
            FROM {QueueSample._meta.db_table}
            WHERE database = %s AND queue_name = ANY(%s::text[]) AND sampled_at BETWEEN %s AND %s
            ORDER BY queue_name, sampled_at
            """,  # noqa: S608 (the table name is the model's own, not input)
            [watched_name(), names, now - window, now - SHORTEST_RATE_WINDOW],
        )
        return {name: CounterSample(moment(at), sent, removed) for name, at, sent, removed in cursor.fetchall()}


def _rates_since(queue: QueueStats, sample: CounterSample | None) -> tuple[float | None, float | None, float | None]:
    if sample is None:
        return None, None, None
    seconds = (queue.measured_at - sample.sampled_at).total_seconds()
    return (
        _per_second(queue.sent_total, sample.sent_total, seconds),
        _per_second(queue.live.removed_total, sample.removed_total, seconds),
        seconds,
    )


def _per_second(now_total: int | None, then_total: int | None, seconds: float) -> float | None:
    # A counter that went backwards was reset (pg_stat after a crash, a recreated queue): no rate.
    if now_total is None or then_total is None or seconds <= 0 or now_total < then_total:
        return None
    return (now_total - then_total) / seconds


@dataclasses.dataclass(frozen=True)
class BucketSample:
    queue_name: str
    sampled_at: datetime
    backlog: int
    sent_total: int | None
    removed_total: int | None


def last_sample_per_bucket(names: list[str], since: datetime, bucket_s: float) -> list[BucketSample]:
    """The last sample of each time bucket since `since`, per queue, oldest first: a history of a
    bounded length whatever the sampling interval."""
    return last_samples_per_bucket(names, [(since, bucket_s)])[0]


def last_samples_per_bucket(names: list[str], bucketings: list[tuple[datetime, float]]) -> list[list[BucketSample]]:
    """last_sample_per_bucket() for each (since, bucket_s), from one scan of the samples in the
    index's order: a sample is the last of its bucket when the queue's next one is in another.
    Plain rows for an array of names (model instances and an IN list cost a sampler round at 10,000
    queues a tenth of its time)."""
    last_of = [
        f"(s.sampled_at >= %(since_{n})s AND floor({epoch_sql('s.next_at')} / %(bucket_{n})s) "
        f"IS DISTINCT FROM floor({epoch_sql('s.sampled_at')} / %(bucket_{n})s)) AS last_of_{n}"
        for n in range(len(bucketings))
    ]
    parameters = {
        "database": watched_name(),
        "names": names,
        "since": min(since for since, _ in bucketings),
        **{f"since_{n}": since for n, (since, _) in enumerate(bucketings)},
        **{f"bucket_{n}": bucket_s for n, (_, bucket_s) in enumerate(bucketings)},
    }
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(
            f"""
            SELECT * FROM (
                SELECT s.queue_name, {epoch_sql("s.sampled_at")} AS at, s.backlog, s.sent_total, s.removed_total,
                       {", ".join(last_of)}
                FROM (SELECT queue_name, sampled_at, backlog, sent_total, removed_total,
                             lead(sampled_at) OVER (PARTITION BY queue_name ORDER BY sampled_at) AS next_at
                      FROM {QueueSample._meta.db_table}
                      WHERE database = %(database)s AND queue_name = ANY(%(names)s::text[])
                        AND sampled_at >= %(since)s) s) found
            WHERE {" OR ".join(f"found.last_of_{n}" for n in range(len(bucketings)))}
            ORDER BY found.queue_name, found.at
            """,  # noqa: S608 (the table name is the model's own, not input)
            parameters,
        )
        found: list[list[BucketSample]] = [[] for _ in bucketings]
        for name, at, backlog, sent_total, removed_total, *last in cursor.fetchall():
            sample = BucketSample(name, moment(at), backlog, sent_total, removed_total)
            for n, is_last in enumerate(last):
                if is_last:
                    found[n].append(sample)
        return found


def sparkline_bucketing(now: datetime) -> tuple[datetime, float]:
    """(since, bucket_s) of the sparklines: the last half hour, a point a minute."""
    return now - SPARKLINE_WINDOW, SPARKLINE_WINDOW.total_seconds() / SPARKLINE_POINTS


def sparklines(names: list[str], now: datetime) -> dict[str, list[int]]:
    """Backlog over the last half hour, a point a minute, for each queue that has history."""
    return sparklines_of(last_sample_per_bucket(names, *sparkline_bucketing(now)))


def sparklines_of(samples: list[BucketSample]) -> dict[str, list[int]]:
    lines: dict[str, list[int]] = {}
    for sample in samples:
        lines.setdefault(sample.queue_name, []).append(sample.backlog)
    return lines


# The rate between two samples, or NULL: a counter that went backwards was reset (see _per_second).
_RATE_SQL = """CASE WHEN {column} >= lag({column}) OVER w AND sampled_at > lag(sampled_at) OVER w
    THEN ({column} - lag({column}) OVER w) / extract(epoch FROM sampled_at - lag(sampled_at) OVER w) END"""


def queue_history(queue_name: str, *, now: datetime, range_s: float, points: int = 120) -> History:
    """The range cut into at most `points` buckets (aligned to the clock, so a refresh moves no
    bucket's edges), each bucket's lowest, mean and highest computed by PostgreSQL. A bucket spans
    at least three sampler intervals: a narrower one would sometimes hold no sample and draw a gap
    where the sampler missed nothing."""
    bucket_s = max(range_s / points, 3 * settings.SAMPLE_INTERVAL_SECONDS)
    start_epoch = (now.timestamp() - range_s) // bucket_s * bucket_s
    range_start = datetime.fromtimestamp(start_epoch, tz=UTC)
    buckets = math.ceil((now.timestamp() - start_epoch) / bucket_s)
    table = QueueSample._meta.db_table
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(
            f"""
            WITH samples AS (
                SELECT sampled_at, backlog, backlog_exact, visible, in_flight, delayed,
                    {_RATE_SQL.format(column="sent_total")} AS enqueue_rate,
                    {_RATE_SQL.format(column="removed_total")} AS processing_rate
                FROM {table}
                WHERE database = %(database)s AND queue_name = %(queue)s
                    AND sampled_at > %(start)s - make_interval(secs => %(bucket_s)s) AND sampled_at <= %(now)s
                WINDOW w AS (ORDER BY sampled_at)
            )
            SELECT bucket, count(sampled_at), round(avg(backlog)), min(backlog), max(backlog),
                coalesce(bool_and(backlog_exact), true), avg(visible), avg(in_flight), avg(delayed),
                avg(enqueue_rate), max(enqueue_rate), avg(processing_rate), max(processing_rate)
            FROM generate_series(0, %(buckets)s - 1) AS bucket
            LEFT JOIN samples ON least(
                floor(extract(epoch FROM sampled_at - %(start)s) / %(bucket_s)s), %(buckets)s - 1
            ) = bucket
            GROUP BY bucket ORDER BY bucket
            """,  # noqa: S608 (the table name is the model's own, not input)
            {
                "database": watched_name(),
                "queue": queue_name,
                "start": range_start,
                "now": now,
                "bucket_s": bucket_s,
                "buckets": buckets,
            },
        )
        rows = cursor.fetchall()
    points_ = [
        HistoryPoint(
            range_start + timedelta(seconds=bucket * bucket_s),
            samples,
            None if mean is None else int(mean),
            low,
            high,
            exact,
            *(None if value is None else float(value) for value in rest),
        )
        for bucket, samples, mean, low, high, exact, *rest in rows
    ]
    first = (
        QueueSample.objects.filter(database=watched_name(), queue_name=queue_name)
        .order_by("sampled_at")
        .values_list("sampled_at", flat=True)
        .first()
    )
    return History(points_, bucket_s, range_start, first)


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
    """One queue's figures in a round of the sampler, named as QueueStats names them."""

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
    not_visible_exact: bool


@dataclasses.dataclass(frozen=True)
class LatestRound:
    id: int
    finished_at: datetime


def latest_round() -> LatestRound | None:
    """The sampler's latest round in this database; None before its first."""
    found = (
        SamplerRound.objects.filter(database=watched_name())
        .order_by("-finished_at")
        .values_list("id", "finished_at")
        .first()
    )
    return LatestRound(*found) if found else None


def round_samples(latest: LatestRound, names: list[str] | None = None) -> QuerySet[QueueSample]:
    """The round's samples (of the named queues only, unless None)."""
    samples = QueueSample.objects.filter(round_id=latest.id)
    return samples if names is None else samples.filter(queue_name__in=names)


# A round is written whole in one transaction and never changed after: what is read of it is kept
# per process, by round, for the overview's refreshes within the round (at 10,000 queues, 6 ms for
# its names and 7 ms for its totals on each).
@functools.lru_cache(maxsize=8)
def round_names(latest: LatestRound) -> frozenset[str]:
    """The names the round sampled."""
    return frozenset(round_samples(latest).values_list("queue_name", flat=True))


@functools.lru_cache(maxsize=32)
def round_totals_leaving_out(
    latest: LatestRound, names: tuple[str, ...] | None, left_out: tuple[str, ...], counted_elsewhere: frozenset[str]
) -> RoundTotals:
    """round_totals() of the round's samples (of `names` only, unless None) but those of `left_out`."""
    samples = round_samples(latest, None if names is None else list(names)).exclude(queue_name__in=left_out)
    return round_totals(samples, counted_elsewhere=counted_elsewhere)


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
    "not_visible_exact",
    "enqueue_rate_1m",
    "processing_rate_1m",
)


def round_figures(latest: LatestRound) -> list[SampledQueue]:
    """Every queue's figures in the round, by name (for /metrics)."""
    figures = []
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
        not_visible_exact,
        enqueue_rate_1m,
        processing_rate_1m,
    ) in round_samples(latest).order_by("queue_name").values_list(*SAMPLED_FIELDS).iterator(chunk_size=5_000):
        figures.append(
            SampledQueue(
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
                rates=Rates(enqueue_rate, processing_rate, None, enqueue_rate_1m, processing_rate_1m, None),
                health=health,
                not_visible_exact=not_visible_exact,
            )
        )
    return figures


# The overview's sort keys a round can order by, as the sample's columns.
ROUND_SORT_COLUMNS = {
    "backlog": "backlog",
    "visible": "visible",
    "in_flight": "in_flight",
    "delayed": "delayed",
    "oldest": "oldest_visible_age_s",
    "newest": "newest_age_s",
    "sent": "sent_total",
    "archived": "archived",
    "enqueue_rate": "enqueue_rate",
    "processing_rate": "processing_rate",
    "poison": "poison",
    "drain_eta": "drain_eta_s",
}


def names_in_order(samples: QuerySet[QueueSample], sort: str, descending: bool) -> QuerySet:
    """The samples' queue names ordered by one of the overview's sort keys; unknown values last."""
    if sort == "health":
        key = Case(*(When(health=state, then=Value(rank)) for state, rank in SEVERITY.items()), default=None)
    else:
        key = F(ROUND_SORT_COLUMNS[sort])
    name = F("queue_name")
    ordering = (key.desc(nulls_last=True), name.desc()) if descending else (key.asc(nulls_last=True), name.asc())
    return samples.order_by(*ordering).values_list("queue_name", flat=True)


@dataclasses.dataclass(frozen=True)
class RoundTotals:
    samples: int  # every sample, those counted elsewhere too
    health: dict[str, int]  # samples per health state (a sample older than the field has none)
    queues: int
    backlog: RowCount
    visible: RowCount
    in_flight: int
    delayed: int
    archived: RowCount
    sent: int
    enqueue_rate: float | None
    processing_rate: float | None
    not_visible_exact: bool
    enqueue_rate_1m: float | None = None
    processing_rate_1m: float | None = None


def round_totals(samples: QuerySet[QueueSample], *, counted_elsewhere: Collection[str] = ()) -> RoundTotals:
    """The samples counted, by health too, and their figures summed but those of the names
    `counted_elsewhere` (whose table another name stands for): one statement, in the database."""
    counted = ~Q(queue_name__in=counted_elsewhere) if counted_elsewhere else Q()
    found = samples.aggregate(
        samples=Count("id"),
        **{f"health_{state}": Count("id", filter=Q(health=state)) for state in SEVERITY},
        queues=Count("id", filter=counted),
        backlog=Coalesce(Sum("backlog", filter=counted), 0),
        visible=Coalesce(Sum("visible", filter=counted), 0),
        estimated=Count("id", filter=counted & Q(backlog_exact=False)),
        in_flight=Coalesce(Sum("in_flight", filter=counted), 0),
        delayed=Coalesce(Sum("delayed", filter=counted), 0),
        archived=Coalesce(Sum("archived", filter=counted), 0),
        archived_estimated=Count("id", filter=counted & Q(archived_exact=False)),
        sent=Coalesce(Sum("sent_total", filter=counted), 0),
        enqueue_rate=Sum("enqueue_rate", filter=counted),
        processing_rate=Sum("processing_rate", filter=counted),
        enqueue_rate_1m=Sum("enqueue_rate_1m", filter=counted),
        processing_rate_1m=Sum("processing_rate_1m", filter=counted),
        not_visible_estimated=Count("id", filter=counted & Q(not_visible_exact=False)),
    )
    return RoundTotals(
        samples=found["samples"],
        health={state: found[f"health_{state}"] for state in SEVERITY if found[f"health_{state}"]},
        queues=found["queues"],
        backlog=RowCount(found["backlog"], found["estimated"] == 0),
        visible=RowCount(found["visible"], found["estimated"] == 0),
        in_flight=found["in_flight"],
        delayed=found["delayed"],
        archived=RowCount(found["archived"], found["archived_estimated"] == 0),
        sent=found["sent"],
        enqueue_rate=found["enqueue_rate"],
        processing_rate=found["processing_rate"],
        not_visible_exact=found["not_visible_estimated"] == 0,
        enqueue_rate_1m=found["enqueue_rate_1m"],
        processing_rate_1m=found["processing_rate_1m"],
    )


# How far back silence is looked for: past it, "nobody has read for over 15 min".
SILENCE_LOOKBACK = timedelta(minutes=15)
# Rounds of history beyond a level's threshold, so that a queue silent that long has a sample before it.
SILENCE_LEVEL_MARGIN = timedelta(minutes=1)


def consumer_silences(stats: list[QueueStats], *, levels_only: bool = False) -> dict[str, Silence]:
    """How long each queue with messages waiting and none in flight has shown no sign of a consumer
    in the sampler's history: a sample with messages in flight, or messages removed since (the live
    table's pg_stat count of deletes below today's). Queues with no sample in the lookback are left
    out: without history nothing tells silence from a consumer that just started.

    With `levels_only` (the sampler, which keeps each queue's level, not its words), history is read
    back only past the longest critical silence any rule sets: a queue silent that long is critical
    whatever came before. The rest (a sign of a consumer in that time, or too little history) are
    as the whole lookback gives them. At 10,000 silent queues that reads 6 of the 15 minutes."""
    waiting = [queue for queue in stats if queue.visible.value and not queue.in_flight]
    if not waiting:
        return {}
    now = max(queue.measured_at for queue in waiting)
    silences: dict[str, Silence] = {}
    critical = timedelta(seconds=max(rule.consumer_silence.critical for rule in settings.HEALTH_RULES))
    if levels_only and critical + SILENCE_LEVEL_MARGIN < SILENCE_LOOKBACK:
        recent = _silences(waiting, now, critical + SILENCE_LEVEL_MARGIN)
        silences = {
            name: silence
            for name, silence in recent.items()
            if not silence.at_least or silence.seconds >= critical.total_seconds()
        }
        waiting = [queue for queue in waiting if queue.name not in silences]
    return silences | (_silences(waiting, now, SILENCE_LOOKBACK) if waiting else {})


def _silences(waiting: list[QueueStats], now: datetime, lookback: timedelta) -> dict[str, Silence]:
    table = QueueSample._meta.db_table
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(
            f"""
            SELECT c.name,
                   {epoch_sql("max(s.sampled_at) FILTER (WHERE s.in_flight > 0 OR s.removed_total < c.removed)")},
                   {epoch_sql("min(s.sampled_at)")}
            FROM unnest(%s::text[], %s::bigint[]) AS c(name, removed)
            JOIN {table} s ON s.database = %s AND s.queue_name = c.name AND s.sampled_at >= %s
            GROUP BY c.name
            """,  # noqa: S608 (the table name is the model's own, not input)
            [
                [queue.name for queue in waiting],
                [queue.live.removed_total for queue in waiting],
                watched_name(),
                now - lookback,
            ],
        )
        found = {name: (moment(last_sign), moment(first)) for name, last_sign, first in cursor.fetchall()}
    silences = {}
    for queue in waiting:
        if queue.name in found:
            last_sign, first = found[queue.name]
            silences[queue.name] = Silence(
                (queue.measured_at - (last_sign or first)).total_seconds(), at_least=last_sign is None
            )
    return silences

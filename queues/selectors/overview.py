"""The overview: every queue's figures, health, rates and sparkline; searched, sorted, paged.

Names sharing one table (pgmq.TableSharing) each have their row, marked, and the totals count the
table once."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet

from queues.forecast import Forecast, Point
from queues.formatting import rate_unit
from queues.health import Health, is_bloated, queue_health
from queues.lineage import is_dead_letter_queue
from queues.models import QueueSample
from queues.pgmq import Queue, TableSharing, table_sharing
from queues.selectors import forecasts, history
from queues.selectors.alerts import firing_by_queue
from queues.selectors.diagnostics import stuck_fifo_groups
from queues.selectors.history import Rates
from queues.selectors.stats import QueueStats, RowCount, shared_queue_stats

QUEUES_PER_PAGE = 50


@dataclasses.dataclass(frozen=True)
class PoisonCount:
    value: int
    counted_at: datetime | None  # None: counted live for this page; else by the sampler at that time


@dataclasses.dataclass
class OverviewRow:
    stats: QueueStats
    rates: Rates
    poison: PoisonCount | None
    health: Health
    sparkline: list[int] = dataclasses.field(default_factory=list)
    table_sharing: TableSharing | None = None  # other names in pgmq.meta have this queue's tables
    forecast: Forecast | None = None  # when the backlog will be gone (queues/forecast.py)

    @property
    def shares_tables_with(self) -> list[str]:
        return list(self.table_sharing.others) if self.table_sharing else []


@dataclasses.dataclass(frozen=True)
class Totals:
    queues: int  # names listed in pgmq.meta
    tables: int  # their distinct tables: each figure below counts a table once
    backlog: RowCount
    visible: RowCount
    in_flight: int
    delayed: int
    archived: RowCount
    sent: int
    enqueue_rate: float | None
    processing_rate: float | None
    health: dict[str, int]
    # Above OVERVIEW_PROBE_ALL_UP_TO queues only the page's queues are probed; the others are
    # counted from the sampler's latest round (finished at sampled_at), or not at all (unsampled).
    sampled: int = 0
    sampled_at: datetime | None = None
    unsampled: int = 0
    not_visible_exact: bool = True  # False: in flight and delayed include an estimate
    enqueue_rate_1m: float | None = None
    processing_rate_1m: float | None = None


@dataclasses.dataclass(frozen=True)
class Overview:
    page: Page
    totals: Totals
    all_queues: int  # before the search
    sorted_by_sample_of: datetime | None = None  # the order (and health filter) came from that round

    @property
    def rate_units(self) -> dict[str, str]:
        """One unit for each column of rates, in (sent) and out (removed), and the totals above it."""
        rates = [row.rates for row in self.page]
        return {
            "in": rate_unit(
                [self.totals.enqueue_rate, self.totals.enqueue_rate_1m]
                + [value for found in rates for value in (found.enqueue, found.enqueue_1m)]
            ),
            "out": rate_unit(
                [self.totals.processing_rate, self.totals.processing_rate_1m]
                + [value for found in rates for value in (found.processing, found.processing_1m)]
            ),
        }


SORT_KEYS = {
    "name": lambda row: row.stats.name.casefold(),
    "health": lambda row: row.health.severity,
    "backlog": lambda row: row.stats.backlog.value,
    "visible": lambda row: row.stats.visible.value,
    "in_flight": lambda row: row.stats.in_flight,
    "delayed": lambda row: row.stats.delayed,
    "oldest": lambda row: row.stats.oldest_visible_age_s,
    "newest": lambda row: row.stats.newest_age_s,
    "sent": lambda row: row.stats.sent_total,
    "archived": lambda row: row.stats.archived.value if row.stats.archived else None,
    "enqueue_rate": lambda row: row.rates.enqueue,
    "processing_rate": lambda row: row.rates.processing,
    "poison": lambda row: row.poison.value if row.poison else None,
    "drain_eta": lambda row: row.forecast.eta_s if row.forecast else None,
}


def overview(
    *, search: str = "", sort: str = "name", descending: bool = False, page: int = 1, health: str = ""
) -> Overview:
    """The queues whose name contains `search`, sorted and paged; `health` keeps only queues in
    that state on the pages (the totals still count every queue searched)."""
    names = list(Queue.objects.values_list("queue_name", flat=True))
    wanted = [name for name in names if search.casefold() in name.casefold()]
    if len(wanted) > settings.OVERVIEW_PROBE_ALL_UP_TO:
        return _probing_the_page_only(wanted, sort, descending, page, health, all_queues=len(names))
    stats = shared_queue_stats(wanted) if wanted else []
    sharing = table_sharing(wanted) if wanted else {}
    rows = _rows(stats, sharing)
    shown = [row for row in rows if not health or row.health.state == health]
    page_of_rows = Paginator(_sorted(shown, sort, descending), QUEUES_PER_PAGE).get_page(page)
    _add_sparklines(page_of_rows)
    return Overview(page=page_of_rows, totals=_totals(rows, sharing), all_queues=len(names))


def _sorted(rows: list[OverviewRow], sort: str, descending: bool) -> list[OverviewRow]:
    key = SORT_KEYS[sort]
    # Unknown values (an empty queue's age, a rate without history) stay last either way.
    known = sorted(
        (row for row in rows if key(row) is not None), key=lambda row: (key(row), row.stats.name), reverse=descending
    )
    return [*known, *(row for row in rows if key(row) is None)]


def _add_sparklines(rows: Iterable[OverviewRow]) -> None:
    rows = list(rows)
    if rows:
        lines = history.sparklines([row.stats.name for row in rows], rows[0].stats.measured_at)
        for row in rows:
            row.sparkline = lines.get(row.stats.name, [])


class _NamesInOrder:
    """The sampled names in the round's order, then the unsampled ones: sliced by the paginator,
    so only one page of names is read from the database."""

    def __init__(self, sampled: QuerySet, unsampled: list[str]):
        self.sampled, self.unsampled = sampled, unsampled
        self.sampled_count = sampled.count()

    def __len__(self) -> int:
        return self.sampled_count + len(self.unsampled)

    def __getitem__(self, page: slice) -> list[str]:
        names = list(self.sampled[page]) if page.start < self.sampled_count else []
        rest = slice(max(page.start - self.sampled_count, 0), max(page.stop - self.sampled_count, 0))
        return [*names, *self.unsampled[rest]]


def _probing_the_page_only(
    wanted: list[str], sort: str, descending: bool, page: int, health: str, *, all_queues: int
) -> Overview:
    """Many queues: the order, the health filter and the totals come from the sampler's latest
    round, in the database; only the queues on the page are probed, and their live figures stand
    in for their samples. A queue the round does not have (created since, or no sampler running)
    sorts last and is counted as unsampled."""
    latest = history.latest_round()
    searched = None if len(wanted) == all_queues else wanted
    samples = history.round_samples(latest, searched) if latest else QueueSample.objects.none()
    sampled_names = set(history.round_names(latest)) if latest else set()
    if searched is not None:
        sampled_names.intersection_update(searched)
    unsampled = sorted((name for name in wanted if name not in sampled_names), key=str.casefold)
    shown = samples.filter(health=health) if health else samples
    listed = unsampled if not health else []  # a queue's health is unknown until it is sampled
    if sort == "name":
        shown_names = set(shown.values_list("queue_name", flat=True)) if health else sampled_names
        # By casefold, then by name where that ties (Foo, FOO): two stable sorts, a third of the time of
        # one by a (casefold, name) tuple, which at 10,000 queues took 12 ms.
        by_name = sorted([*shown_names, *listed], reverse=descending)
        order = sorted(by_name, key=str.casefold, reverse=descending)
    else:
        order = _NamesInOrder(history.names_in_order(shown, sort, descending), listed)
    paginator = Paginator(order, QUEUES_PER_PAGE)
    page_of_names = paginator.get_page(page)
    on_page = list(page_of_names)
    sharing = table_sharing()
    probed = {
        row.stats.name: row for row in _rows(shared_queue_stats(on_page) if on_page else [], sharing, sparklines=True)
    }
    page_rows = [probed[name] for name in on_page if name in probed]  # dropped meanwhile: left out
    elsewhere = frozenset(_counted_elsewhere(wanted, on_page, sharing))
    others = (
        history.round_totals_leaving_out(
            latest, None if searched is None else tuple(searched), tuple(on_page), elsewhere
        )
        if latest
        else history.round_totals(QueueSample.objects.none(), counted_elsewhere=elsewhere)
    )
    totals = _with_round(
        _totals(page_rows, sharing),
        others,
        unsampled=sum(1 for name in unsampled if name not in probed),
        sampled_at=latest.finished_at if latest else None,
    )
    return Overview(
        page=Page(page_rows, page_of_names.number, paginator),
        totals=totals,
        all_queues=all_queues,
        sorted_by_sample_of=latest.finished_at if latest and (sort != "name" or health) else None,
    )


def _counted_elsewhere(wanted: list[str], on_page: list[str], sharing: dict[str, TableSharing]) -> set[str]:
    """Names whose table the totals count under another name: where names share a table, the one
    on the page, else the first of them searched."""
    wanted_names, page_names = set(wanted), set(on_page)
    elsewhere = set()
    for names in {found.names for found in sharing.values()}:
        present = [name for name in names if name in wanted_names]
        elsewhere.update(present if page_names.intersection(present) else present[1:])
    return elsewhere


def _with_round(page: Totals, others: history.RoundTotals, *, unsampled: int, sampled_at: datetime | None) -> Totals:
    """The page's totals, probed, with the round's for the queues off the page."""
    sampled = others.samples
    return Totals(
        queues=page.queues + sampled + unsampled,
        tables=page.tables + others.queues + unsampled,
        backlog=page.backlog + others.backlog,
        visible=page.visible + others.visible,
        in_flight=page.in_flight + others.in_flight,
        delayed=page.delayed + others.delayed,
        archived=page.archived + others.archived,
        sent=page.sent + others.sent,
        enqueue_rate=_sum_rates([page.enqueue_rate, others.enqueue_rate]),
        processing_rate=_sum_rates([page.processing_rate, others.processing_rate]),
        health=dict(Counter(page.health) + Counter(others.health)),
        sampled=sampled,
        sampled_at=sampled_at if sampled else None,
        unsampled=unsampled,
        not_visible_exact=page.not_visible_exact and others.not_visible_exact,
        enqueue_rate_1m=_sum_rates([page.enqueue_rate_1m, others.enqueue_rate_1m]),
        processing_rate_1m=_sum_rates([page.processing_rate_1m, others.processing_rate_1m]),
    )


def _rows(stats: list[QueueStats], sharing: dict[str, TableSharing], *, sparklines: bool = False) -> list[OverviewRow]:
    """The rows of these queues; with `sparklines` (a page's rows), their sparklines too, read with
    the forecasts' history in one scan of the samples."""
    if not stats:
        return []
    rates = history.rates(stats)
    now_points = {
        queue.name: Point(queue.measured_at, queue.backlog.value, queue.sent_total, queue.live.removed_total)
        for queue in stats
    }
    lines: dict[str, list[int]] = {}
    if sparklines:
        now = max(queue.measured_at for queue in stats)
        forecast_history, sparkline_history = history.last_samples_per_bucket(
            list(now_points), [forecasts.bucketing(now), history.sparkline_bucketing(now)]
        )
        drains = forecasts.forecasts(now_points, forecast_history)
        lines = history.sparklines_of(sparkline_history)
    else:
        drains = forecasts.forecasts(now_points)
    poison_counts = poison_by_queue(stats)
    health = verdicts(stats, {name: count.value for name, count in poison_counts.items()})
    return [
        OverviewRow(
            stats=queue,
            rates=rates[queue.name],
            poison=poison_counts.get(queue.name),
            health=health[queue.name],
            table_sharing=sharing.get(queue.name),
            forecast=drains[queue.name],
            sparkline=lines.get(queue.name, []),
        )
        for queue in stats
    ]


def verdicts(stats: list[QueueStats], poison: dict[str, int | None], *, levels_only: bool = False) -> dict[str, Health]:
    """Each queue's health from every signal: its figures, the sampler's history (no consumer), its
    FIFO groups, its firing alerts and its table's dead rows. The overview's rows, the queue page,
    the API and the sampler's stored health (by which many queues are sorted and counted) all come
    from here, so they agree. With `levels_only` (the sampler) the levels are the same, but a
    cause's words may say less (see history.consumer_silences)."""
    silences = history.consumer_silences(stats, levels_only=levels_only)
    stuck = stuck_fifo_groups(stats, poison)
    firing = firing_by_queue([queue.name for queue in stats])
    return {
        queue.name: queue_health(
            queue.name,
            oldest_visible_age_s=queue.oldest_visible_age_s,
            backlog=queue.backlog.value,
            poison=poison.get(queue.name),
            in_default_partition=queue.in_default_partition,
            visible=queue.visible.value,
            # Nobody consumes a dead-letter queue: its waiting is not a missing consumer.
            silence=None if is_dead_letter_queue(queue.name) else silences.get(queue.name),
            stuck_group=stuck.get(queue.name),
            firing_alerts=firing.get(queue.name, ()),
            bloated_tables=((queue.live.name, queue.live.dead_rows),)
            if is_bloated(queue.live.dead_rows, queue.live.estimated_rows)
            else (),
        )
        for queue in stats
    }


def poison_by_queue(stats: list[QueueStats]) -> dict[str, PoisonCount]:
    """Each queue's poison count as the overview shows it: counted live where the table is small,
    else the sampler's latest count; a queue with neither is left out."""
    if not stats:
        return {}
    now = max(queue.measured_at for queue in stats)
    unknown = [queue.name for queue in stats if queue.poison is None]
    sampled = history.latest_poison_counts(unknown, now) if unknown else {}
    counts = {queue.name: PoisonCount(queue.poison, None) for queue in stats if queue.poison is not None}
    counts.update({name: PoisonCount(*found) for name, found in sampled.items()})
    return counts


@dataclasses.dataclass(frozen=True)
class EveryQueue:
    figures: list[QueueStats | history.SampledQueue]
    poison: dict[str, PoisonCount]
    sampled_at: datetime | None  # None: probed now; else the sampler's round that finished then


def every_queue() -> EveryQueue:
    """Every queue's figures for /metrics: probed as the unsearched overview probes them (the
    same shared computation), or, above OVERVIEW_PROBE_ALL_UP_TO queues, the sampler's latest
    round (a queue created since is missing until the next one)."""
    names = list(Queue.objects.values_list("queue_name", flat=True))
    latest = history.latest_round() if len(names) > settings.OVERVIEW_PROBE_ALL_UP_TO else None
    if latest is not None:
        listed = set(names)
        figures = [queue for queue in history.round_figures(latest) if queue.name in listed]
        poison = {
            queue.name: PoisonCount(queue.poison, queue.sampled_at) for queue in figures if queue.poison is not None
        }
        return EveryQueue(figures, poison, latest.finished_at)
    stats = shared_queue_stats(names) if names else []
    return EveryQueue(stats, poison_by_queue(stats), None)


def row_for(stats: QueueStats) -> OverviewRow:
    """One queue's row, as the overview would show it."""
    return _rows([stats], table_sharing([stats.name]))[0]


def _sum_rates(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _totals(rows: list[OverviewRow], sharing: dict[str, TableSharing]) -> Totals:
    zero = RowCount(0, exact=True)
    backlog, visible, archived = zero, zero, zero
    # Names sharing a table count it once: the first of them in `rows` stands for it.
    seen: set[str] = set()
    tables = []
    for row in rows:
        table = sharing[row.stats.name].live_table if row.stats.name in sharing else row.stats.name
        if table not in seen:
            seen.add(table)
            tables.append(row)
    for row in tables:
        backlog += row.stats.backlog
        visible += row.stats.visible
        archived += row.stats.archived or zero
    return Totals(
        queues=len(rows),
        tables=len(tables),
        backlog=backlog,
        visible=visible,
        in_flight=sum(row.stats.in_flight for row in tables),
        delayed=sum(row.stats.delayed for row in tables),
        archived=archived,
        sent=sum(row.stats.sent_total for row in tables),
        enqueue_rate=_sum_rates([row.rates.enqueue for row in tables]),
        processing_rate=_sum_rates([row.rates.processing for row in tables]),
        health=dict(Counter(row.health.state for row in rows if row.health)),
        not_visible_exact=all(row.stats.not_visible_exact for row in tables),
        enqueue_rate_1m=_sum_rates([row.rates.enqueue_1m for row in tables]),
        processing_rate_1m=_sum_rates([row.rates.processing_1m for row in tables]),
    )

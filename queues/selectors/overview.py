"""The overview: every queue's figures, health, rates and sparkline; searched, sorted, paged.

Names sharing one table (pgmq.TableSharing) each have their row, marked, and the totals count the
table once."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime

from django.core.paginator import Page, Paginator

from queues.health import Health, queue_health
from queues.pgmq import Queue, TableSharing, table_sharing
from queues.selectors import history
from queues.selectors.history import Rates
from queues.selectors.stats import QueueStats, RowCount, one_per_table, shared_queue_stats

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


@dataclasses.dataclass(frozen=True)
class Overview:
    page: Page
    totals: Totals
    all_queues: int  # before the search


SORT_KEYS = {
    "name": lambda row: row.stats.name.casefold(),
    "health": lambda row: row.health.severity,
    "backlog": lambda row: row.stats.backlog.value,
    "visible": lambda row: row.stats.visible.value,
    "in_flight": lambda row: row.stats.in_flight,
    "delayed": lambda row: row.stats.delayed,
    "oldest": lambda row: row.stats.oldest_age_s,
    "newest": lambda row: row.stats.newest_age_s,
    "sent": lambda row: row.stats.sent_total,
    "archived": lambda row: row.stats.archived.value if row.stats.archived else None,
    "enqueue_rate": lambda row: row.rates.enqueue,
    "processing_rate": lambda row: row.rates.processing,
    "poison": lambda row: row.poison.value if row.poison else None,
}


def overview(*, search: str = "", sort: str = "name", descending: bool = False, page: int = 1) -> Overview:
    names = list(Queue.objects.values_list("queue_name", flat=True))
    wanted = [name for name in names if search.casefold() in name.casefold()]
    stats = shared_queue_stats(wanted) if wanted else []
    rows = _rows(stats, table_sharing(wanted) if wanted else {})
    key = SORT_KEYS[sort]
    # Unknown values (an empty queue's age, a rate without history) stay last either way.
    known = sorted(
        (row for row in rows if key(row) is not None), key=lambda row: (key(row), row.stats.name), reverse=descending
    )
    unknown = [row for row in rows if key(row) is None]
    page_of_rows = Paginator([*known, *unknown], QUEUES_PER_PAGE).get_page(page)
    if stats:
        lines = history.sparklines([row.stats.name for row in page_of_rows], stats[0].measured_at)
        for row in page_of_rows:
            row.sparkline = lines.get(row.stats.name, [])
    return Overview(page=page_of_rows, totals=_totals(rows), all_queues=len(names))


def _rows(stats: list[QueueStats], sharing: dict[str, TableSharing]) -> list[OverviewRow]:
    if not stats:
        return []
    rates = history.rates(stats)
    poison_counts = poison_by_queue(stats)
    rows = []
    for queue in stats:
        poison = poison_counts.get(queue.name)
        health = queue_health(
            queue.name,
            oldest_visible_age_s=queue.oldest_visible_age_s,
            backlog=queue.backlog.value,
            poison=poison.value if poison else None,
        )
        rows.append(
            OverviewRow(
                stats=queue,
                rates=rates[queue.name],
                poison=poison,
                health=health,
                table_sharing=sharing.get(queue.name),
            )
        )
    return rows


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


def all_queue_stats() -> list[QueueStats]:
    """Every queue's figures, exactly as the unsearched overview gets them (the same shared
    computation: a scrape and an open overview within STATS_CACHE_SECONDS see the same figures)."""
    names = list(Queue.objects.values_list("queue_name", flat=True))
    return shared_queue_stats(names) if names else []


def row_for(stats: QueueStats) -> OverviewRow:
    """One queue's row, as the overview would show it."""
    return _rows([stats], table_sharing([stats.name]))[0]


def _sum_rates(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _totals(rows: list[OverviewRow]) -> Totals:
    zero = RowCount(0, exact=True)
    backlog, visible, archived = zero, zero, zero
    kept = {id(stats) for stats in one_per_table([row.stats for row in rows])}
    tables = [row for row in rows if id(row.stats) in kept]  # names sharing a table: it counts once
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
        health=dict(Counter(row.health.state for row in rows)),
    )

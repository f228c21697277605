"""Every figure of every queue, for the overview, the queue page and the sampler, in two steps:

1. One catalog query for all queues: table sizes and row estimates, and pg_stat's cumulative
   counter of rows removed from the live table.
2. Per-queue probes, many queues per statement: in flight and delayed through pgmq's index on vt
   (counted up to EXACT_COUNT_LIMIT, then estimated from a sample of the table's pages), the oldest
   and newest message through the primary key, the msg_id sequence (messages ever sent), and exact
   counts for tables small enough (settings.EXACT_COUNT_LIMIT rows), with the poison count from the
   same scan.

Nothing here scans a big table: above the limit a figure is an estimate, shown with ≈.
Ages are computed by the database's clock.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connections
from psycopg import sql

from dashboard.databases import took_too_long
from queues.pgmq import PGMQ_SCHEMA, Queue
from queues.selectors.epochs import epoch_sql, moment
from queues.watched import watched_alias

logger = logging.getLogger(__name__)

# For a table with no statistics yet the row density is unknown; this is what pgmq rows with
# ~250-byte payloads come to per 8 kB page.
ROWS_PER_PAGE_GUESS = 30
# Queues probed per statement: one round trip for many queues, and plans that stay small.
PROBES_PER_STATEMENT = 100
# A table estimated at up to this many rows is read in one scan for all its figures: cheaper to plan
# and run than its index probes (thousands of small queues make the sampler's round).
ONE_SCAN_ROWS = 1_000
# Below this many statements per connection, a connection of its own costs more than it saves.
PROBES_PER_CONNECTION_AT_LEAST = 5
# The oldest visible message is looked for among this many oldest messages; when all of them are
# in flight or delayed, the visible message with the earliest vt stands for it (≈).
OLDEST_VISIBLE_HEAD = 10_000
# Above EXACT_COUNT_LIMIT messages not visible, in flight and delayed are estimated from about this
# many rows, read from pages picked at random (TABLESAMPLE SYSTEM): a bounded cost at any size.
SAMPLED_ROWS = 30_000


@dataclasses.dataclass(frozen=True)
class RowCount:
    value: int
    exact: bool  # False: PostgreSQL's estimate, shown with ≈

    def __add__(self, other: RowCount) -> RowCount:
        return RowCount(self.value + other.value, self.exact and other.exact)


@dataclasses.dataclass(frozen=True)
class TableFacts:
    """One of pgmq's tables as the catalog and pg_stat describe it (leaf partitions summed)."""

    name: str
    estimated_rows: float
    dead_rows: int
    removed_total: int  # rows ever deleted (n_tup_del): archived or deleted, for the live table
    last_autovacuum: datetime | None
    last_autoanalyze: datetime | None
    default_partition: str | None = None  # a partitioned table's default partition (pgmq.create_partitioned)
    default_partition_readable: bool = True


@dataclasses.dataclass(frozen=True)
class QueueStats:
    queue: Queue
    measured_at: datetime  # the database's now() for the probes
    live: TableFacts
    archive: TableFacts | None
    backlog: RowCount
    visible: RowCount
    in_flight: int
    delayed: int
    oldest_age_s: float | None  # None: the queue is empty
    newest_age_s: float | None
    oldest_visible_age_s: float | None  # the oldest message a consumer could take now
    sent_total: int  # the msg_id sequence: every message ever sent
    archived: RowCount | None
    poison: int | None  # read_ct >= POISON_READ_COUNT; counted only where the table is small
    # False: more than EXACT_COUNT_LIMIT messages are not visible, so in flight and delayed are
    # estimated from a sample of the table's pages (shown with ≈); or no message among the first
    # OLDEST_VISIBLE_HEAD is visible, so the oldest visible one is found through the vt index.
    not_visible_exact: bool = True
    oldest_visible_exact: bool = True
    # Messages in the default partitions of the live and archive tables, counted up to
    # EXACT_COUNT_LIMIT + 1: rows no partition was made for (see selectors/partitions.py).
    in_default_partition: int = 0

    @property
    def name(self) -> str:
        return self.queue.queue_name


def _quoted(table_name: str) -> sql.Composable:
    return sql.Identifier(PGMQ_SCHEMA, table_name)


# A leaf table's row estimate. pg_stat's running count is kept by every insert and delete once
# the table has statistics; before that, the planner's arithmetic: rows per page at the last
# ANALYZE times pages now (or a typical density when it was never analyzed).
ESTIMATED_ROWS = """
    CASE WHEN pg_stat_get_tuples_inserted(leaf.oid) > 0 OR pg_stat_get_last_analyze_time(leaf.oid) IS NOT NULL
              OR pg_stat_get_last_autoanalyze_time(leaf.oid) IS NOT NULL
         THEN pg_stat_get_live_tuples(leaf.oid)
         WHEN leaf.relpages > 0 AND leaf.reltuples >= 0
         THEN leaf.reltuples / leaf.relpages * pg_relation_size(leaf.oid) / current_setting('block_size')::int
         ELSE %(rows_per_page_guess)s * pg_relation_size(leaf.oid) / current_setting('block_size')::int
    END"""
# Each pgmq table with its leaf partitions (itself when it is not partitioned). LATERAL, so each
# table finds its leaves by oid: a join condition with IN (...) here makes the planner compare
# every table with every row of pg_class, a second for a thousand queues.
LEAVES = """
    CROSS JOIN LATERAL (
        SELECT t.oid, t.relpages, t.reltuples WHERE t.relkind <> 'p'
        UNION ALL
        SELECT c.oid, c.relpages, c.reltuples FROM pg_class c
        WHERE t.relkind = 'p' AND c.oid IN (SELECT relid FROM pg_partition_tree(t.oid) WHERE isleaf)) AS leaf"""

# Its times are epoch seconds (see selectors/epochs.py): a round at 10,000 queues reads 50,000.
CATALOG_QUERY = (
    """
    WITH queues AS (
        SELECT m.queue_name, m.is_partitioned, m.is_unlogged, """
    + epoch_sql("m.created_at")
    + """ AS created_at,
               lower('q_' || m.queue_name) AS live_table, lower('a_' || m.queue_name) AS archive_table
        FROM pgmq.meta m
        WHERE %(names)s::text[] IS NULL OR m.queue_name = ANY(%(names)s::text[])
    ),
    tables AS (
        SELECT t.oid, t.relname,
               sum("""
    + ESTIMATED_ROWS
    + """) AS estimated_rows,
               sum(pg_stat_get_dead_tuples(leaf.oid)) AS dead_rows,
               sum(pg_stat_get_tuples_deleted(leaf.oid)) AS removed_total,
               """
    + epoch_sql("max(pg_stat_get_last_autovacuum_time(leaf.oid))")
    + """ AS last_autovacuum,
               """
    + epoch_sql("max(pg_stat_get_last_autoanalyze_time(leaf.oid))")
    + """ AS last_autoanalyze,
               (SELECT d.relname FROM pg_partitioned_table p JOIN pg_class d ON d.oid = p.partdefid
                WHERE p.partrelid = t.oid) AS default_partition,
               (SELECT has_table_privilege(p.partdefid, 'SELECT') FROM pg_partitioned_table p
                WHERE p.partrelid = t.oid AND p.partdefid <> 0) AS default_partition_readable
        FROM pg_class t """
    + LEAVES
    + """
        WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'pgmq')
          AND t.relkind IN ('r', 'p')
          AND t.relname IN (SELECT live_table FROM queues UNION ALL SELECT archive_table FROM queues)
        GROUP BY t.oid, t.relname
    )
    SELECT q.queue_name, q.is_partitioned, q.is_unlogged, q.created_at,
           q.live_table, live.estimated_rows, live.dead_rows, live.removed_total,
           live.last_autovacuum, live.last_autoanalyze,
           q.archive_table, archive.estimated_rows, archive.dead_rows, archive.removed_total,
           archive.last_autovacuum, archive.last_autoanalyze,
           pg_get_serial_sequence(format('%%I.%%I', 'pgmq', q.live_table), 'msg_id'),
           live.default_partition, live.default_partition_readable,
           archive.default_partition, archive.default_partition_readable
    FROM queues q
    JOIN tables live ON live.relname = q.live_table
    LEFT JOIN tables archive ON archive.relname = q.archive_table
    ORDER BY q.queue_name
"""
)


def _table_facts(row: tuple, default_partition: tuple[str | None, bool | None]) -> TableFacts | None:
    name, estimated_rows, dead_rows, removed_total, last_autovacuum, last_autoanalyze = row
    if estimated_rows is None:
        return None
    return TableFacts(
        name,
        float(estimated_rows),
        int(dead_rows),
        int(removed_total),
        moment(last_autovacuum),
        moment(last_autoanalyze),
        default_partition[0],
        default_partition[1] is not False,
    )


@dataclasses.dataclass(frozen=True)
class _CatalogEntry:
    queue: Queue
    live: TableFacts
    archive: TableFacts | None
    sequence: str | None  # the msg_id sequence, as a regclass name


def _catalog(names: list[str] | None) -> list[_CatalogEntry]:
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(CATALOG_QUERY, {"names": names, "rows_per_page_guess": ROWS_PER_PAGE_GUESS})
        return [
            _CatalogEntry(
                queue=Queue(queue_name=row[0], is_partitioned=row[1], is_unlogged=row[2], created_at=moment(row[3])),
                live=_table_facts(row[4:10], row[17:19]),
                archive=_table_facts(row[10:16], row[19:21]),
                sequence=row[16],
            )
            for row in cursor.fetchall()
        ]


@functools.lru_cache(maxsize=20_000)  # about 1 KB each: 10,000 queues keep 11 MB
def _probe_query(
    table: str,
    archive_table: str | None,
    sequence: str | None,
    *,
    count_live: bool,
    count_archive: bool,
    default_partitions: tuple[tuple[str, bool], ...],
    one_scan: bool,
    poison_read_count: int,
    exact_count_limit: int,
) -> str:
    """One queue's probes as one row. Every part is an index lookup but the opt-in exact counts;
    with `one_scan` (a table of a few rows) every figure of the live table comes from one scan.

    The msg_id sequence is read in the same statement, after its snapshot is taken: sent is then
    never below backlog + archived, whatever producers do meanwhile.

    Kept for the next call with the same arguments: building 10,000 queues' probes took a sampler
    round (and /metrics) 0.9 s, and from one call to the next they rarely change.
    """
    live = _quoted(table)
    shared = {
        "key": sql.Literal(table),
        "live": live,
        "archived": _archived_count(archive_table, count_archive),
        "sent": _sent(sequence),
        "in_default": sql.SQL(" + ").join(
            default_partition_rows(name, readable=readable) for name, readable in default_partitions
        )
        if default_partitions
        else sql.SQL("0::bigint"),
    }
    if one_scan:
        return (
            sql.SQL("""
            SELECT {key}::text, s.total, s.poison, s.in_flight, s.delayed,
                   extract(epoch FROM now() - s.oldest), extract(epoch FROM now() - s.newest),
                   extract(epoch FROM now() - s.oldest_visible),
                   {archived}, {sent}, now(), true, true, {in_default}
            FROM (SELECT count(*) AS total, count(*) FILTER (WHERE read_ct >= {poison}) AS poison,
                         count(*) FILTER (WHERE vt > now() AND read_ct > 0) AS in_flight,
                         count(*) FILTER (WHERE vt > now() AND read_ct = 0) AS delayed,
                         (array_agg(enqueued_at ORDER BY msg_id))[1] AS oldest,
                         (array_agg(enqueued_at ORDER BY msg_id DESC))[1] AS newest,
                         (array_agg(enqueued_at ORDER BY msg_id) FILTER (WHERE vt <= now()))[1] AS oldest_visible
                  FROM {live}) s
        """)
            .format(poison=sql.Literal(poison_read_count), **shared)
            .as_string()
        )
    counts = (
        sql.SQL("SELECT count(*) AS total, count(*) FILTER (WHERE read_ct >= {poison}) AS poison FROM {live}").format(
            live=live, poison=sql.Literal(poison_read_count)
        )
        if count_live
        else sql.SQL("SELECT NULL::bigint AS total, NULL::bigint AS poison")
    )
    return (
        sql.SQL("""
        SELECT {key}::text, counts.total, counts.poison, not_visible.in_flight, not_visible.delayed,
               extract(epoch FROM now() - (SELECT enqueued_at FROM {live} ORDER BY msg_id LIMIT 1)),
               extract(epoch FROM now() - (SELECT enqueued_at FROM {live} ORDER BY msg_id DESC LIMIT 1)),
               extract(epoch FROM now() - coalesce(head.oldest_visible, fallback.oldest_visible)),
               {archived}, {sent}, now(),
               not_visible.counted <= {not_visible_limit},
               head.oldest_visible IS NOT NULL OR fallback.oldest_visible IS NULL,
               {in_default}
        FROM ({counts}) counts,
             (SELECT count(*) FILTER (WHERE read_ct > 0) AS in_flight,
                     count(*) FILTER (WHERE read_ct = 0) AS delayed,
                     count(*) AS counted
              FROM (SELECT read_ct FROM {live} WHERE vt > now() LIMIT {not_visible_limit} + 1) bounded) not_visible,
             (SELECT (SELECT enqueued_at FROM (SELECT msg_id, enqueued_at, vt FROM {live} ORDER BY msg_id LIMIT {head})
                      oldest WHERE vt <= now() ORDER BY msg_id LIMIT 1) AS oldest_visible
              OFFSET 0) head,  -- OFFSET 0: computed once, not again for each column that reads it
             LATERAL (SELECT CASE WHEN head.oldest_visible IS NULL THEN
                        (SELECT enqueued_at FROM {live} WHERE vt <= now() ORDER BY vt LIMIT 1)
                      END AS oldest_visible) fallback
    """)
        .format(
            not_visible_limit=sql.Literal(exact_count_limit),
            head=sql.Literal(OLDEST_VISIBLE_HEAD),
            counts=counts,
            **shared,
        )
        .as_string()
    )


def _archived_count(archive_table: str | None, count_archive: bool) -> sql.Composable:
    if count_archive and archive_table:
        return sql.SQL("(SELECT count(*) FROM {})").format(_quoted(archive_table))
    return sql.SQL("NULL::bigint")


def _sent(sequence: str | None) -> sql.Composable:
    if not sequence:
        return sql.SQL("NULL::bigint")
    return sql.SQL(
        "(SELECT CASE WHEN has_sequence_privilege({seq}::regclass, 'SELECT') "
        "THEN pg_sequence_last_value({seq}::regclass) END)"
    ).format(seq=sql.Literal(sequence))


def default_partition_rows(name: str, *, readable: bool) -> sql.Composable:
    """The rows in a default partition, counted up to EXACT_COUNT_LIMIT + 1; pg_stat's count where
    the dashboard's role may not read it (pg_partman makes partitions without the parent's grants
    unless told to, and a query naming a table it cannot read fails whole)."""
    if not readable:
        return sql.SQL("greatest(pg_stat_get_live_tuples({}::regclass), 0)").format(
            sql.Literal(_quoted(name).as_string())
        )
    return sql.SQL("(SELECT count(*) FROM (SELECT FROM {} LIMIT {}) d)").format(
        _quoted(name), sql.Literal(settings.EXACT_COUNT_LIMIT + 1)
    )


def _run_probes(statements: list[str]) -> list[tuple]:
    """Every statement's rows. Many statements (a round of the sampler over thousands of queues) are
    shared among PROBE_CONNECTIONS connections of their own, closed after: the database plans and
    runs them side by side instead of one after the other."""
    workers = min(settings.PROBE_CONNECTIONS, len(statements) // PROBES_PER_CONNECTION_AT_LEAST)
    if workers <= 1:
        return _probed(statements)
    shares = [statements[worker::workers] for worker in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Each thread runs in a copy of this context: the watched database is a context variable.
        found = pool.map(lambda share: contextvars.copy_context().run(_probed_and_closed, share), shares)
        return [row for rows in found for row in rows]


def _probed(statements: list[str]) -> list[tuple]:
    rows = []
    with connections[watched_alias()].cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
            rows.extend(cursor.fetchall())
    return rows


def _probed_and_closed(statements: list[str]) -> list[tuple]:
    try:
        return _probed(statements)
    finally:
        connections[watched_alias()].close()


def _estimate(facts: TableFacts) -> RowCount:
    return RowCount(max(round(facts.estimated_rows), 0), exact=False)


def _is_small(facts: TableFacts | None) -> bool:
    return facts is not None and facts.estimated_rows <= settings.EXACT_COUNT_LIMIT


def queue_stats(names: Iterable[str] | None = None) -> list[QueueStats]:
    """Figures for the named queues (all queues when None), ordered by name.

    A queue whose live table is missing (dropped in between) is left out.
    """
    catalog = _catalog(list(names) if names is not None else None)
    tables = list({entry.live.name: entry for entry in catalog}.values())  # names sharing a table: probed once
    statements = [
        " UNION ALL ".join(
            _probe_query(
                entry.live.name,
                entry.archive.name if entry.archive else None,
                entry.sequence,
                count_live=_is_small(entry.live),
                count_archive=_is_small(entry.archive),
                one_scan=_is_small(entry.live)
                and entry.live.estimated_rows <= ONE_SCAN_ROWS
                and not entry.queue.is_partitioned,
                default_partitions=tuple(
                    (facts.default_partition, facts.default_partition_readable)
                    for facts in (entry.live, entry.archive)
                    if facts and facts.default_partition
                ),
                poison_read_count=settings.POISON_READ_COUNT,
                exact_count_limit=settings.EXACT_COUNT_LIMIT,
            )
            for entry in tables[start : start + PROBES_PER_STATEMENT]
        )
        for start in range(0, len(tables), PROBES_PER_STATEMENT)
    ]
    probes = {probe[0]: probe for probe in _run_probes(statements)}

    stats = []
    for entry in catalog:
        (
            _,
            total,
            poison,
            in_flight,
            delayed,
            oldest_age_s,
            newest_age_s,
            oldest_visible_age_s,
            archived_total,
            sent_total,
            measured_at,
            not_visible_exact,
            oldest_visible_exact,
            in_default_partition,
        ) = probes[entry.live.name]
        backlog = RowCount(total, exact=True) if total is not None else _estimate(entry.live)
        if not not_visible_exact:
            in_flight, delayed = _sampled_not_visible(entry.live, backlog.value, at_least=in_flight + delayed)
        stats.append(
            QueueStats(
                queue=entry.queue,
                measured_at=measured_at,
                live=entry.live,
                archive=entry.archive,
                backlog=backlog,
                visible=RowCount(
                    max(backlog.value - in_flight - delayed, 0), exact=backlog.exact and not_visible_exact
                ),
                in_flight=in_flight,
                delayed=delayed,
                oldest_age_s=_seconds(oldest_age_s),
                newest_age_s=_seconds(newest_age_s),
                oldest_visible_age_s=_seconds(oldest_visible_age_s),
                sent_total=sent_total or 0,
                archived=(
                    RowCount(archived_total, exact=True)
                    if archived_total is not None
                    else _estimate(entry.archive)
                    if entry.archive
                    else None
                ),
                poison=poison,
                not_visible_exact=not_visible_exact,
                oldest_visible_exact=oldest_visible_exact,
                in_default_partition=in_default_partition,
            )
        )
    return stats


def _sampled_not_visible(live: TableFacts, rows: int, *, at_least: int) -> tuple[int, int]:
    """In flight and delayed in a table with more than EXACT_COUNT_LIMIT of them, estimated from a
    sample of its pages, never below the `at_least` counted before the count stopped."""
    percent = min(100.0, 100.0 * SAMPLED_ROWS / max(rows, 1))
    statement = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE vt > now() AND read_ct > 0), "
        "count(*) FILTER (WHERE vt > now() AND read_ct = 0) FROM {live} TABLESAMPLE SYSTEM ({percent})"
    ).format(live=_quoted(live.name), percent=sql.Literal(percent))
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(statement.as_string())
        sampled, in_flight, delayed = cursor.fetchone()
    if not sampled:
        return at_least, 0
    in_flight, delayed = round(in_flight / sampled * rows), round(delayed / sampled * rows)
    if in_flight + delayed < at_least:  # the sample saw fewer than were counted: scale both up
        scale = at_least / max(in_flight + delayed, 1)
        in_flight, delayed = round(in_flight * scale), at_least - round(in_flight * scale)
    return in_flight, delayed


def shared_queue_stats(names: list[str]) -> list[QueueStats]:
    """queue_stats() for the overview, shared for STATS_CACHE_SECONDS by every request of this
    process: ten tabs refreshing a thousand queues cost the database one computation, not ten."""
    if settings.STATS_CACHE_SECONDS <= 0:
        return queue_stats(names)
    key = f"queue-stats:{watched_alias()}:" + hashlib.sha256("\0".join(names).encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = queue_stats(names)
        cache.set(key, found, settings.STATS_CACHE_SECONDS)
    return found


def one_per_table(stats: list[QueueStats]) -> list[QueueStats]:
    """Each live table once: of names sharing one (see pgmq.TableSharing), the first in `stats` stands for it."""
    seen: set[str] = set()
    kept = []
    for queue in stats:
        if queue.live.name not in seen:
            seen.add(queue.live.name)
            kept.append(queue)
    return kept


def _seconds(value: object) -> float | None:
    return None if value is None else max(float(value), 0.0)


def single_queue_stats(queue_name: str) -> QueueStats | None:
    found = queue_stats([queue_name])
    return found[0] if found else None


def poison_counts(stats: list[QueueStats]) -> dict[str, int]:
    """read_ct >= POISON_READ_COUNT counted in each queue's table, for the sampler's slow round
    only: no index serves read_ct, so each table is read whole. One statement per table, so each
    stays within the statement timeout; a table that does not is left out (and logged)."""
    counts = {}
    for queue in stats:
        statement = sql.SQL("SELECT count(*) FROM {live} WHERE read_ct >= {poison}").format(
            live=_quoted(queue.live.name), poison=sql.Literal(settings.POISON_READ_COUNT)
        )
        try:
            with connections[watched_alias()].cursor() as cursor:
                cursor.execute(statement.as_string())
                counts[queue.name] = cursor.fetchone()[0]
        except OperationalError as error:
            if not took_too_long(error):
                raise
            logger.warning("poison count of queue %r skipped: %s", queue.name, str(error).strip())
    return counts


def estimated_rows(table_names: list[str]) -> dict[str, float]:
    """PostgreSQL's estimate of the rows in each of pgmq's tables (partitions summed), from the
    catalog alone. Tables that do not exist are left out."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, sum("
            + ESTIMATED_ROWS
            + ") FROM pg_class t "
            + LEAVES
            + """
             WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'pgmq')
               AND t.relname = ANY(%(names)s) GROUP BY t.relname""",
            {"names": table_names, "rows_per_page_guess": ROWS_PER_PAGE_GUESS},
        )
        return {name: float(estimate or 0) for name, estimate in cursor.fetchall()}


def table_row_counts(table_names: list[str]) -> dict[str, RowCount]:
    """Rows in each of pgmq's tables: exact up to EXACT_COUNT_LIMIT, PostgreSQL's estimate above.
    Tables that do not exist are left out."""
    if not table_names:
        return {}
    estimates = estimated_rows(table_names)
    counts = {name: RowCount(max(round(estimate), 0), exact=False) for name, estimate in estimates.items()}
    small = [name for name, estimate in estimates.items() if estimate <= settings.EXACT_COUNT_LIMIT]
    if small:
        statement = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, count(*) FROM {}").format(sql.Literal(name), _quoted(name)) for name in small
        )
        with connections[watched_alias()].cursor() as cursor:
            cursor.execute(statement.as_string())
            counts.update({name: RowCount(count, exact=True) for name, count in cursor.fetchall()})
    return counts

"""How a queue's live messages spread by age and by read_ct, and its worst poison messages.

Both distributions come from one pass over the table. A table above EXACT_COUNT_LIMIT rows is not
read whole: a TABLESAMPLE of about SAMPLE_ROWS rows stands for it, scaled up and marked ≈.
"""

from __future__ import annotations

import dataclasses

from django.conf import settings
from django.db import connections
from psycopg import sql

from queues.pgmq import LIVE, PGMQ_SCHEMA, Message, Queue
from queues.selectors.messages import listing
from queues.selectors.stats import QueueStats, estimated_rows
from queues.watched import watched_alias

SAMPLE_ROWS = 20_000
# Upper bounds (exclusive) of each bucket; the last bucket is open-ended.
AGE_BUCKETS = [
    (60, "< 1 min"),
    (300, "1–5 min"),
    (900, "5–15 min"),
    (3600, "15 min–1 h"),
    (21_600, "1–6 h"),
    (86_400, "6–24 h"),
    (None, "> 1 d"),
]
READ_CT_BUCKETS = [(1, "0"), (2, "1"), (3, "2"), (5, "3–4"), (10, "5–9"), (20, "10–19"), (None, "20+")]


@dataclasses.dataclass(frozen=True)
class Distribution:
    labels: list[str]
    counts: list[int]
    exact: bool
    sampled_rows: int | None  # how many rows the estimate stands on; None when exact


@dataclasses.dataclass(frozen=True)
class Distributions:
    age: Distribution
    read_ct: Distribution


def _bounds(buckets: list[tuple[int | None, str]]) -> list[int]:
    return [bound for bound, _ in buckets if bound is not None]


def distributions(stats: QueueStats) -> Distributions:
    estimated = stats.backlog.value
    sample_percent = None if stats.backlog.exact else min(100.0, 100.0 * SAMPLE_ROWS / max(estimated, 1))
    source = sql.Identifier(PGMQ_SCHEMA, stats.live.name)
    if sample_percent is not None:
        source = sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(source, sql.Literal(sample_percent))
    query = sql.SQL("""
        SELECT width_bucket(extract(epoch FROM now() - enqueued_at), {age_bounds}::float8[]),
               width_bucket(read_ct, {read_bounds}::int[]),
               count(*)
        FROM {source}
        GROUP BY 1, 2
    """).format(
        age_bounds=sql.Literal(_bounds(AGE_BUCKETS)), read_bounds=sql.Literal(_bounds(READ_CT_BUCKETS)), source=source
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(query.as_string())
        groups = cursor.fetchall()

    scale = 100.0 / sample_percent if sample_percent else 1.0
    sampled = sum(count for _, _, count in groups)

    def histogram(buckets: list[tuple[int | None, str]], position: int) -> Distribution:
        counts = [0] * len(buckets)
        for group in groups:
            counts[group[position]] += group[2]
        return Distribution(
            labels=[label for _, label in buckets],
            counts=[round(c * scale) for c in counts],
            exact=sample_percent is None,
            sampled_rows=None if sample_percent is None else sampled,
        )

    return Distributions(age=histogram(AGE_BUCKETS, 0), read_ct=histogram(READ_CT_BUCKETS, 1))


# On a big table with no index on read_ct, the poison list looks at this many of the oldest
# messages and as many of those in flight or delayed that turn visible next: where messages read
# again and again are (stuck at the head, or leased over and over).
POISON_SCAN_ROWS = 50_000


@dataclasses.dataclass(frozen=True)
class PoisonList:
    messages: list[Message]
    complete: bool  # False: only the oldest and the next-visible POISON_SCAN_ROWS were looked at
    scanned_rows: int
    index_sql: str  # the index that makes the list complete at any size


def top_poison(queue: Queue, *, limit: int = 10, redacted: bool = False) -> PoisonList:
    """The messages read most often (at least POISON_READ_COUNT times), worst first.

    Exact where the table is small or an index leads with read_ct; else a bounded look (see
    POISON_SCAN_ROWS), said to be one: no index serves read_ct by default, and reading a table of
    millions whole takes seconds."""
    table = queue.tables[LIVE].name
    threshold = settings.POISON_READ_COUNT
    index_sql = sql.SQL("CREATE INDEX CONCURRENTLY ON {} (read_ct) WHERE read_ct >= {};").format(
        sql.Identifier(PGMQ_SCHEMA, table), sql.Literal(threshold)
    )
    messages = queue.live_messages.objects.filter(read_ct__gte=threshold).order_by("-read_ct", "msg_id")
    complete = estimated_rows([table]).get(table, 0) <= settings.EXACT_COUNT_LIMIT or _read_ct_indexed(table)
    if not complete:
        messages = messages.filter(msg_id__in=_poison_candidates(table, threshold))
    return PoisonList(
        messages=list(listing(messages, redacted=redacted)[:limit]),
        complete=complete,
        scanned_rows=POISON_SCAN_ROWS,
        index_sql=index_sql.as_string(),
    )


def _read_ct_indexed(table: str) -> bool:
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_index i
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                WHERE i.indrelid = to_regclass(%s) AND a.attname = 'read_ct')""",
            [sql.Identifier(PGMQ_SCHEMA, table).as_string()],
        )
        return cursor.fetchone()[0]


def _poison_candidates(table: str, threshold: int) -> list[int]:
    statement = sql.SQL("""
        SELECT msg_id FROM (SELECT msg_id, read_ct FROM {live} ORDER BY msg_id LIMIT {rows}) oldest
        WHERE read_ct >= {threshold}
        UNION
        SELECT msg_id FROM (SELECT msg_id, read_ct FROM {live} WHERE vt > now() ORDER BY vt LIMIT {rows}) next
        WHERE read_ct >= {threshold}
    """).format(
        live=sql.Identifier(PGMQ_SCHEMA, table), rows=sql.Literal(POISON_SCAN_ROWS), threshold=sql.Literal(threshold)
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(statement.as_string())
        return [row[0] for row in cursor.fetchall()]

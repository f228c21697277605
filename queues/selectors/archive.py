"""Archive history: messages archived per time bucket, and how long they took from enqueued to
archived (p50, p95, p99), overall and per bucket, over a chosen range.

Counts always come from pgmq's index on archived_at. Percentiles need every row's enqueued_at:
up to ARCHIVE_EXACT_ROWS rows in the range they are exact, beyond it they come from the first
SAMPLE_PER_BUCKET rows of each bucket (marked ≈), so a busy day never means reading it whole.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta

from django.db import connections
from psycopg import sql

from queues.pgmq import ARCHIVE, PGMQ_SCHEMA, Queue
from queues.watched import watched_alias

ARCHIVE_EXACT_ROWS = 50_000
SAMPLE_PER_BUCKET = 200
BUCKETS = 60


@dataclasses.dataclass(frozen=True)
class LatencyPoint:
    at: datetime
    archived: int
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


@dataclasses.dataclass(frozen=True)
class ArchiveHistory:
    points: list[LatencyPoint]
    archived: int  # in the whole range
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    percentiles_exact: bool
    bucket_s: float


def planner_rows(query: sql.Composable) -> float:
    """The planner's row estimate for a query, without running it."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query).as_string())
        plan = cursor.fetchone()[0]
    return float((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])


def archive_history(queue: Queue, *, range_s: float) -> ArchiveHistory:
    table = sql.Identifier(PGMQ_SCHEMA, queue.tables[ARCHIVE].name)
    bucket_s = max(range_s / BUCKETS, 1.0)
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    # Values go in as literals, not parameters: with parameters, psycopg would read a % in the
    # table's name (queue "50%") as a placeholder.
    since = sql.Literal(now - timedelta(seconds=range_s))
    bucket_seconds = sql.Literal(bucket_s)
    exact = planner_rows(sql.SQL("SELECT 1 FROM {} WHERE archived_at >= {}").format(table, since)) <= ARCHIVE_EXACT_ROWS

    latency = sql.SQL("extract(epoch FROM archived_at - enqueued_at)")
    bucket = sql.SQL("floor(extract(epoch FROM archived_at) / {})::bigint").format(bucket_seconds)
    if exact:
        rows_for_percentiles = sql.SQL("SELECT archived_at, enqueued_at FROM {table} WHERE archived_at >= {since}")
    else:
        # The first rows of each bucket, found through the archived_at index.
        rows_for_percentiles = sql.SQL("""
            SELECT sampled.archived_at, sampled.enqueued_at
            FROM generate_series(0, {buckets}) AS b(n)
            CROSS JOIN LATERAL (
                SELECT archived_at, enqueued_at FROM {table}
                WHERE archived_at >= {since} + b.n * make_interval(secs => {bucket_seconds})
                  AND archived_at < {since} + (b.n + 1) * make_interval(secs => {bucket_seconds})
                ORDER BY archived_at LIMIT {per_bucket}) AS sampled""")
    query = sql.SQL("""
        WITH counts AS (
            SELECT {bucket} AS b, count(*) AS archived FROM {table} WHERE archived_at >= {since} GROUP BY 1
        ),
        latencies AS (
            SELECT {bucket} AS b,
                   percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {latency}) AS p
            FROM ({rows}) AS r
            GROUP BY GROUPING SETS ((1), ())
        )
        SELECT c.b, coalesce(c.archived, 0), l.p
        FROM latencies l FULL JOIN counts c ON c.b = l.b
        ORDER BY c.b NULLS FIRST
    """).format(
        bucket=bucket,
        table=table,
        latency=latency,
        since=since,
        rows=rows_for_percentiles.format(
            table=table,
            since=since,
            bucket_seconds=bucket_seconds,
            buckets=sql.Literal(BUCKETS),
            per_bucket=sql.Literal(SAMPLE_PER_BUCKET),
        ),
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(query.as_string())
        rows = cursor.fetchall()

    overall: list[float | None] = [None, None, None]
    points = []
    for bucket_number, archived, percentiles in rows:
        if bucket_number is None:
            overall = list(percentiles or overall)
            continue
        p50, p95, p99 = percentiles or (None, None, None)
        points.append(
            LatencyPoint(
                at=datetime.fromtimestamp(bucket_number * bucket_s, tz=now.tzinfo),
                archived=archived,
                p50_s=p50,
                p95_s=p95,
                p99_s=p99,
            )
        )
    return ArchiveHistory(
        points=points,
        archived=sum(point.archived for point in points),
        p50_s=overall[0],
        p95_s=overall[1],
        p99_s=overall[2],
        percentiles_exact=exact,
        bucket_s=bucket_s,
    )

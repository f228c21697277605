"""Every read the pages make of pgmq's tables. Plain SELECTs only: browsing never changes a message.

Counting is the expensive part on queues of millions of rows, so a table is counted exactly only
while it is small (settings.EXACT_COUNT_LIMIT rows); above that the planner's own estimate is used
and marked as such. A message's state comes from the database's clock, never the browser's.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connections
from django.db.models import Case, CharField, Count, Q, QuerySet, Value, When
from django.db.models.functions import Now
from psycopg import sql

from queues.pgmq import ARCHIVE, LIVE, PGMQ_DATABASE, PGMQ_SCHEMA, Message, Queue

# For a table never analyzed (reltuples = -1) the row density is unknown; this is what pgmq rows
# with ~250-byte payloads come to per 8 kB page.
ROWS_PER_PAGE_GUESS = 30

VISIBLE = "visible"
IN_FLIGHT = "in flight"
DELAYED = "delayed"


@dataclass(frozen=True)
class RowCount:
    value: int
    exact: bool  # False: the planner's estimate, shown with ≈


@dataclass(frozen=True)
class QueueOverviewRow:
    queue: Queue
    backlog: RowCount | None  # None when the live table is missing


@dataclass(frozen=True)
class QueueStateCounts:
    backlog: RowCount
    visible: RowCount  # the backlog less in flight and delayed: estimated when the backlog is
    in_flight: int
    delayed: int
    archived: RowCount | None  # None when the archive table is missing


def _quoted(table_name: str) -> sql.Composable:
    return sql.Identifier(PGMQ_SCHEMA, table_name)


def estimated_row_counts(table_names: list[str]) -> dict[str, float]:
    """The planner's row estimate of each existing table, scaled to the table's current size.

    The same arithmetic as the planner: rows per page at the last ANALYZE times pages now.
    A partitioned table (relkind p) is the sum of its leaf partitions.
    """
    if not table_names:
        return {}
    with connections[PGMQ_DATABASE].cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname,
                   sum(CASE WHEN leaf.relpages > 0 AND leaf.reltuples >= 0
                            THEN leaf.reltuples / leaf.relpages
                            ELSE %(rows_per_page_guess)s END
                       * (pg_relation_size(leaf.oid) / current_setting('block_size')::float))
            FROM pg_class t
            JOIN pg_class leaf ON leaf.oid IN (
                SELECT t.oid WHERE t.relkind <> 'p'
                UNION ALL
                SELECT relid FROM pg_partition_tree(t.oid) WHERE isleaf AND t.relkind = 'p')
            WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
              AND t.relname = ANY(%(names)s)
            GROUP BY t.relname
            """,
            {"rows_per_page_guess": ROWS_PER_PAGE_GUESS, "schema": PGMQ_SCHEMA, "names": table_names},
        )
        return {relname: float(estimate or 0) for relname, estimate in cursor.fetchall()}


def exact_row_counts(table_names: list[str]) -> dict[str, int]:
    """count(*) of each table, all in one statement (one round trip, one snapshot)."""
    if not table_names:
        return {}
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {name}, count(*) FROM {table}").format(name=sql.Literal(name), table=_quoted(name))
        for name in table_names
    )
    with connections[PGMQ_DATABASE].cursor() as cursor:
        cursor.execute(query.as_string())
        return dict(cursor.fetchall())


def row_counts(table_names: list[str]) -> dict[str, RowCount]:
    """Exact counts for small tables, estimates for big ones; tables that do not exist are left out."""
    estimates = estimated_row_counts(table_names)
    small = [name for name, estimate in estimates.items() if estimate <= settings.EXACT_COUNT_LIMIT]
    counts = {name: RowCount(round(estimate), exact=False) for name, estimate in estimates.items()}
    counts.update({name: RowCount(count, exact=True) for name, count in exact_row_counts(small).items()})
    return counts


def queue_overview() -> list[QueueOverviewRow]:
    queues = list(Queue.objects.with_table_names())
    counts = row_counts([queue.live_table for queue in queues])
    return [QueueOverviewRow(queue=queue, backlog=counts.get(queue.live_table)) for queue in queues]


def queue_state_counts(queue: Queue) -> QueueStateCounts:
    """Backlog split by state. In flight and delayed are always exact: pgmq's index on vt finds them."""
    live_table, archive_table = queue.tables[LIVE].name, queue.tables[ARCHIVE].name
    counts = row_counts([live_table, archive_table])
    backlog = counts[live_table]
    not_visible = queue.live_messages.objects.filter(vt__gt=Now()).aggregate(
        in_flight=Count("pk", filter=Q(read_ct__gt=0)),
        delayed=Count("pk", filter=Q(read_ct=0)),
    )
    visible = max(backlog.value - not_visible["in_flight"] - not_visible["delayed"], 0)
    return QueueStateCounts(backlog=backlog, visible=RowCount(visible, exact=backlog.exact),
                            archived=counts.get(archive_table), **not_visible)


def with_state(messages: QuerySet[Message]) -> QuerySet[Message]:
    """Annotate each message with its state by the database's clock."""
    return messages.annotate(
        state=Case(
            When(vt__lte=Now(), then=Value(VISIBLE)),
            When(read_ct__gt=0, then=Value(IN_FLIGHT)),
            default=Value(DELAYED),
            output_field=CharField(),
        )
    )


def latest_messages(queue: Queue, *, limit: int = 20) -> list[Message]:
    return list(with_state(queue.live_messages.objects.order_by("-msg_id"))[:limit])

"""Where the copies a move, a requeue or an edit-and-resend made of a message went: as the copies
table the actions write says (what a requeue checks), and as the messages' own headers say
(queues/lineage.py: what the message page shows, both ways)."""

from __future__ import annotations

import dataclasses
import json
import time

from django.db import OperationalError, connections
from psycopg import sql

from dashboard.databases import took_too_long
from queues.lineage import ORIGIN_KEY, Origin, origin_filter, origins
from queues.models import MessageCopy
from queues.pgmq import ARCHIVE, LIVE, PGMQ_SCHEMA, Queue
from queues.watched import statement_budget, watched_alias, watched_name


def copies_of(
    queue: Queue, msg_ids: list[int], *, action: str | None = None, using: str | None = None
) -> dict[int, dict]:
    """Where copies of these messages of `queue` went (the latest of each), as the copies table says
    (read through `using`, else where the dashboard's tables are)."""
    found = MessageCopy.objects.using(using).filter(
        database=watched_name(), queue_name=queue.queue_name, msg_id__in=msg_ids
    )
    if action:
        found = found.filter(action=action)
    return {
        copy.msg_id: {
            "queue": copy.copy_queue,
            "msg_id": copy.copy_msg_id,
            "at": copy.at.isoformat(),
            "by": copy.username,
            "action": copy.action,
        }
        for copy in found.order_by("id")
    }


# Lineage read from the messages' own headers (queues/lineage.py): what pgmq's tables say now.

COPIES_SHOWN = 50
TABLES_SEARCHED = 500


@dataclasses.dataclass(frozen=True)
class LinkedOrigin:
    """An origin a copy records, and where that message is now (live, archive, or None: gone)."""

    origin: Origin
    where: str | None


def origin_chain(queue: Queue, source: str, msg_id: int) -> list[LinkedOrigin]:
    """Where this message came from, oldest first, each with where it is now (its link)."""
    table = queue.tables[source]
    if "headers" not in table.columns:
        return []
    statement = sql.SQL("SELECT (headers -> {})::text FROM {} WHERE msg_id = {}").format(
        sql.Literal(ORIGIN_KEY), sql.Identifier(PGMQ_SCHEMA, table.name), sql.Literal(msg_id)
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(statement.as_string())
        row = cursor.fetchone()
    chain = origins({ORIGIN_KEY: json.loads(row[0])} if row and row[0] is not None else None)
    return [LinkedOrigin(origin, _where_now(origin.queue, origin.msg_id)) for origin in chain]


def _where_now(queue_name: str, msg_id: int) -> str | None:
    queue = Queue.objects.filter(queue_name=queue_name).first()
    if queue is None:
        return None
    for kind in (LIVE, ARCHIVE):
        if (
            queue.tables[kind].exists
            and (queue.live_messages if kind == LIVE else queue.archived_messages)
            .objects.filter(msg_id=msg_id)
            .exists()
        ):
            return kind
    return None


@dataclasses.dataclass(frozen=True)
class FoundCopy:
    queue: str
    msg_id: int
    source: str  # live or archive: where the copy is now
    origin: Origin  # the copy's record of this message
    direct: bool  # copied from this message itself, not from one of its copies


@dataclasses.dataclass(frozen=True)
class CopiesFound:
    copies: list[FoundCopy]
    tables_searched: int
    tables: int
    cut_at_limit: bool  # more than COPIES_SHOWN

    @property
    def partial(self) -> bool:
        return self.tables_searched < self.tables


def copies_in_headers(queue_name: str, msg_id: int, *, budget_ms: int) -> CopiesFound:
    """The messages whose headers say they are copies of `queue_name` #`msg_id` (or copies of its
    copies), in every queue's live table and archive. No index serves headers: each table is read
    whole, so the search stops when `budget_ms` is spent, and says how many tables it got through."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT ON (c.relname) m.queue_name, t.kind, c.relname
            FROM pgmq.meta m
            CROSS JOIN LATERAL (VALUES (%(live)s, lower('q_' || m.queue_name)),
                                       (%(archive)s, lower('a_' || m.queue_name))) AS t (kind, relname)
            JOIN pg_class c ON c.relname = t.relname AND c.relnamespace = %(schema)s::regnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'headers' AND NOT a.attisdropped
            ORDER BY c.relname, m.queue_name
            LIMIT %(tables)s
            """,
            {"live": LIVE, "archive": ARCHIVE, "schema": PGMQ_SCHEMA, "tables": TABLES_SEARCHED + 1},
        )
        tables = cursor.fetchall()
    wanted = json.dumps(origin_filter(queue_name, msg_id))
    deadline = time.monotonic() + budget_ms / 1000
    copies: list[FoundCopy] = []
    searched = 0
    for copy_queue, kind, relname in tables[:TABLES_SEARCHED]:
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms < 1 or len(copies) > COPIES_SHOWN:
            break
        statement = sql.SQL(
            "SELECT msg_id, (headers -> {key})::text FROM {table} "
            "WHERE headers @> {wanted}::jsonb ORDER BY msg_id LIMIT {limit}"
        ).format(
            key=sql.Literal(ORIGIN_KEY),
            table=sql.Identifier(PGMQ_SCHEMA, relname),
            wanted=sql.Literal(wanted),
            limit=sql.Literal(COPIES_SHOWN + 1),
        )
        try:
            with statement_budget(left_ms), connections[watched_alias()].cursor() as cursor:
                cursor.execute(statement.as_string())
                rows = cursor.fetchall()
        except OperationalError as error:
            if not took_too_long(error):
                raise
            break
        searched += 1
        for copy_msg_id, chain_text in rows:
            chain = origins({ORIGIN_KEY: json.loads(chain_text)})
            mine = [o for o in chain if (o.queue, o.msg_id) == (queue_name, msg_id)]
            if mine:
                copies.append(FoundCopy(copy_queue, copy_msg_id, kind, mine[-1], direct=chain[-1] == mine[-1]))
    return CopiesFound(
        copies=copies[:COPIES_SHOWN],
        tables_searched=searched,
        tables=len(tables),
        cut_at_limit=len(copies) > COPIES_SHOWN,
    )

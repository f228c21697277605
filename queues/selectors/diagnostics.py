"""PostgreSQL's side of a queue, which no generic queue dashboard shows: bloat and vacuum, the
oldest open transaction and whether it holds vacuum back, the sessions reading the queue, when it
was last read, and its FIFO groups. Each finding says in one line what it means and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime

from django.conf import settings
from django.db import connections
from psycopg import sql

from queues.formatting import duration
from queues.health import StuckGroup, is_bloated
from queues.pgmq import ARCHIVE, LIVE, PGMQ_SCHEMA, Queue
from queues.selectors.partitions import QueuePartitioning, queue_partitioning
from queues.selectors.stats import QueueStats, TableFacts
from queues.watched import watched_alias

FIFO_HEADER = "x-pgmq-group"
DEFAULT_FIFO_GROUP = "_default_fifo_group"  # pgmq's own name for messages without the header
FIFO_SAMPLE_ROWS = 20_000
LONG_TRANSACTION_S = 300
VERY_LONG_TRANSACTION_S = 3600
SILENT_READERS_S = 600
INFO, WARNING, CRITICAL = "info", "warning", "critical"


@dataclasses.dataclass(frozen=True)
class Finding:
    level: str
    meaning: str  # one line: what is wrong and why it matters
    action: str  # one line: what to do
    sql: str = ""  # the statements that do it, when there are some to paste into psql


@dataclasses.dataclass(frozen=True)
class Session:
    pid: int
    application_name: str
    client: str
    state: str | None
    state_for_s: float | None
    transaction_for_s: float | None
    query: str


@dataclasses.dataclass(frozen=True)
class FifoGroup:
    name: str
    backlog: int
    head_msg_id: int | None
    head_read_ct: int | None
    head_visible: bool | None

    @property
    def head_failing(self) -> bool:
        return self.head_read_ct is not None and self.head_read_ct >= settings.POISON_READ_COUNT


@dataclasses.dataclass(frozen=True)
class TableReport:
    facts: TableFacts
    total_bytes: int  # with its indexes and TOAST, and its partitions'


@dataclasses.dataclass(frozen=True)
class Diagnostics:
    tables: list[TableReport]
    oldest_transaction: Session | None
    oldest_transaction_holds_vacuum: bool
    readers: list[Session]  # sessions whose query or application name names this queue
    unattributed_readers: list[Session]  # pgmq sessions reading a queue given as a parameter
    last_read_at: datetime | None
    records_reads: bool  # the table has last_read_at (pgmq 1.10 and later)
    fifo_groups: list[FifoGroup] | None  # None: the queue does not use FIFO groups
    fifo_exact: bool
    findings: list[Finding]
    partitioning: QueuePartitioning | None  # None: the queue's tables are not partitioned


def _fetch(query: str | sql.Composable, params: list | dict | None = None) -> list[tuple]:
    """Run a query; one that names a pgmq table must take no params (a % in a queue's name would
    read as a placeholder): its values go in as sql.Literal."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(query if isinstance(query, str) else query.as_string(), params)
        return cursor.fetchall()


SESSIONS_QUERY = """
    SELECT pid, coalesce(application_name, ''), coalesce(host(client_addr), 'local socket'), state,
           extract(epoch FROM now() - state_change), extract(epoch FROM now() - xact_start),
           left(coalesce(query, ''), 300),
           -- a snapshot (xmin) or a transaction id (xid) keeps vacuum's horizon back
           backend_xmin IS NOT NULL OR backend_xid IS NOT NULL
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


def _session(row: tuple) -> Session:
    return Session(
        pid=row[0],
        application_name=row[1],
        client=row[2],
        state=row[3],
        state_for_s=row[4],
        transaction_for_s=row[5],
        query=row[6],
    )


def _names_in(text: str, names: list[str]) -> str | None:
    """The longest queue name standing alone in text (orders-dlq wins over orders in
    orders-dlq-consumer)."""
    for name in sorted(names, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE):
            return name
    return None


def _reader_queue(session: Session, names: list[str]) -> str | None:
    for name in sorted(names, key=len, reverse=True):
        table = f"q_{name.lower()}"
        if f"'{name}'" in session.query or table in session.query.lower():
            return name
    return _names_in(session.application_name, names)


def diagnostics(stats: QueueStats) -> Diagnostics:
    queue = Queue(queue_name=stats.name)
    names = [row[0] for row in _fetch("SELECT queue_name FROM pgmq.meta")]
    sessions = _fetch(SESSIONS_QUERY)
    oldest_row = max((row for row in sessions if row[5] is not None), key=lambda row: row[5], default=None)
    oldest = _session(oldest_row) if oldest_row else None
    holds_vacuum = bool(oldest_row and oldest_row[7])

    readers, unattributed = [], []
    for row in sessions:
        session = _session(row)
        if session.application_name == "pgmq-dashboard":
            continue
        owner = _reader_queue(session, names)
        if owner == stats.name:
            readers.append(session)
        elif owner is None and "pgmq." in session.query:
            unattributed.append(session)

    records_reads = "last_read_at" in queue.tables[LIVE].columns
    last_read_at = _last_read_at(queue) if records_reads else None
    fifo_groups, fifo_exact = _fifo_groups(queue, stats)
    tables = [facts for facts in (stats.live, stats.archive) if facts is not None]
    # A partitioned table has no storage of its own: its size is its partitions'. (pg_partition_tree
    # lists nothing for a table that is not partitioned.)
    sizes = dict(
        _fetch(
            "SELECT relname, CASE WHEN relkind = 'p' "
            "THEN (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(oid)) "
            "ELSE pg_total_relation_size(oid) END "
            "FROM pg_class WHERE relnamespace = 'pgmq'::regnamespace AND relname = ANY(%s)",
            [[table.name for table in tables]],
        )
    )
    partitioning = queue_partitioning(queue)
    findings = _findings(
        stats, tables, oldest, holds_vacuum, readers, unattributed, last_read_at, records_reads, fifo_groups
    ) + _partition_findings(partitioning)
    return Diagnostics(
        tables=[TableReport(table, int(sizes.get(table.name) or 0)) for table in tables],
        oldest_transaction=oldest,
        oldest_transaction_holds_vacuum=holds_vacuum,
        readers=readers,
        unattributed_readers=unattributed,
        last_read_at=last_read_at,
        records_reads=records_reads,
        fifo_groups=fifo_groups,
        fifo_exact=fifo_exact,
        findings=findings,
        partitioning=partitioning,
    )


def _last_read_at(queue: Queue) -> datetime | None:
    """The latest last_read_at among messages in flight (found through the vt index: a read pushes
    vt forward) and the message archived last (through the archived_at index)."""
    live = sql.Identifier(PGMQ_SCHEMA, queue.tables[LIVE].name)
    archive = sql.Identifier(PGMQ_SCHEMA, queue.tables[ARCHIVE].name)
    archive_part = (
        sql.SQL("(SELECT last_read_at FROM {} ORDER BY archived_at DESC LIMIT 1)").format(archive)
        if "last_read_at" in queue.tables[ARCHIVE].columns
        else sql.SQL("NULL::timestamptz")
    )
    query = sql.SQL("""
        SELECT greatest(
            (SELECT max(last_read_at) FROM (SELECT last_read_at FROM {live} WHERE vt > now()
                                            ORDER BY vt DESC LIMIT 1000) AS in_flight),
            {archive_part})
    """).format(live=live, archive_part=archive_part)
    return _fetch(query)[0][0]


def _has_fifo_index(table: str) -> bool:
    """pgmq.create_fifo_index() makes a GIN index on headers: containment queries can use it."""
    return bool(
        _fetch(
            """
        SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ix ON ix.oid = i.indexrelid
        JOIN pg_am am ON am.oid = ix.relam JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)
        WHERE t.relname = %s AND t.relnamespace = 'pgmq'::regnamespace AND am.amname = 'gin' AND a.attname = 'headers'
    """,
            [table],
        )
    )


def _fifo_groups(queue: Queue, stats: QueueStats) -> tuple[list[FifoGroup] | None, bool]:
    """Backlog per FIFO group and each group's head, the way pgmq's read_grouped sees them (the
    head is the group's lowest msg_id, visible or not). Exact on small tables; on big ones the
    groups come from a sample, and heads are looked up only where pgmq's FIFO index exists."""
    table = queue.tables[LIVE]
    if "headers" not in table.columns or stats.backlog.value == 0:
        return None, True
    source = sql.Identifier(PGMQ_SCHEMA, table.name)
    exact = stats.backlog.exact
    scale = 1.0
    if not exact:
        percent = min(100.0, 100.0 * FIFO_SAMPLE_ROWS / max(stats.backlog.value, 1))
        source = sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(source, sql.Literal(percent))
        scale = 100.0 / percent
    groups = _fetch(
        sql.SQL("""
        SELECT coalesce(headers->>{header}, {default}), count(*), min(msg_id)
        FROM {source} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50
    """).format(header=sql.Literal(FIFO_HEADER), default=sql.Literal(DEFAULT_FIFO_GROUP), source=source)
    )
    if not groups or all(name == DEFAULT_FIFO_GROUP for name, _, _ in groups):
        return None, exact

    heads: dict[str, int | None] = {name: head for name, _, head in groups} if exact else {}
    if not exact and _has_fifo_index(table.name):
        live = sql.Identifier(PGMQ_SCHEMA, table.name)
        for name, _, _ in groups:
            if name != DEFAULT_FIFO_GROUP:
                heads[name] = _fetch(
                    sql.SQL("SELECT min(msg_id) FROM {} WHERE headers @> {}::jsonb").format(
                        live, sql.Literal(json.dumps({FIFO_HEADER: name}))
                    )
                )[0][0]
    head_rows = {}
    known_heads = [head for head in heads.values() if head is not None]
    if known_heads:
        head_rows = {
            row[0]: row
            for row in _fetch(
                sql.SQL("SELECT msg_id, read_ct, vt <= now() FROM {} WHERE msg_id = ANY({})").format(
                    sql.Identifier(PGMQ_SCHEMA, table.name), sql.Literal(known_heads)
                )
            )
        }
    result = []
    for name, count, _ in groups:
        head = heads.get(name)
        row = head_rows.get(head)
        result.append(
            FifoGroup(
                name=name,
                backlog=round(count * scale),
                head_msg_id=head,
                head_read_ct=row[1] if row else None,
                head_visible=row[2] if row else None,
            )
        )
    return result, exact


def stuck_fifo_groups(stats: list[QueueStats], poison: dict[str, int | None]) -> dict[str, StuckGroup]:
    """Each queue's FIFO group stuck the longest behind a failing head (read POISON_READ_COUNT times
    or more), as _fifo_groups sees it. Asked only of queues with poison counted and small enough to
    read whole (a stuck head is a poison message): one scan each, never of a big table."""
    stuck = {}
    for queue in stats:
        if not poison.get(queue.name) or not queue.backlog.exact:
            continue
        live = queue.queue.tables[LIVE]
        if "headers" not in live.columns:
            continue
        found = _fetch(
            sql.SQL("""
            SELECT g.name, q.msg_id, q.read_ct, g.messages - 1
            FROM (SELECT headers->>{header} AS name, min(msg_id) AS head, count(*) AS messages FROM {live}
                  WHERE headers ? {header} GROUP BY 1) AS g
            JOIN {live} q ON q.msg_id = g.head
            WHERE q.read_ct >= {poison} ORDER BY q.read_ct DESC, g.messages DESC LIMIT 1
        """).format(
                header=sql.Literal(FIFO_HEADER),
                live=sql.Identifier(PGMQ_SCHEMA, live.name),
                poison=sql.Literal(settings.POISON_READ_COUNT),
            )
        )
        if found:
            stuck[queue.name] = StuckGroup(*found[0])
    return stuck


def _findings(
    stats: QueueStats,
    tables: list[TableFacts],
    oldest: Session | None,
    holds_vacuum: bool,
    readers: list[Session],
    unattributed: list[Session],
    last_read_at: datetime | None,
    records_reads: bool,
    fifo_groups: list[FifoGroup] | None,
) -> list[Finding]:
    findings = []
    for table in tables:
        live_rows = max(table.estimated_rows, 1)
        if is_bloated(table.dead_rows, table.estimated_rows):
            vacuumed = (
                f"autovacuum last ran {duration((stats.measured_at - table.last_autovacuum).total_seconds())} ago"
                if table.last_autovacuum
                else "autovacuum has never run on it"
            )
            findings.append(
                Finding(
                    WARNING,
                    f"pgmq.{table.name} carries {table.dead_rows:,} dead rows "
                    f"({table.dead_rows / live_rows:.0%} of the live ones): every read steps over them, and the "
                    f"table keeps growing; {vacuumed}.",
                    "Check the oldest transaction below (it may be holding vacuum back), then run "
                    f"VACUUM {sql.Identifier(PGMQ_SCHEMA, table.name).as_string()}; if it keeps coming back, lower "
                    "autovacuum_vacuum_scale_factor for this table.",
                )
            )
    if oldest and oldest.transaction_for_s and oldest.transaction_for_s >= LONG_TRANSACTION_S:
        level = CRITICAL if oldest.transaction_for_s >= VERY_LONG_TRANSACTION_S else WARNING
        who = f"pid {oldest.pid}, {oldest.application_name or 'no application name'} from {oldest.client}"
        effect = (
            "holds back vacuum: dead rows pile up in every queue of this database until it ends"
            if holds_vacuum
            else "holds locks and a connection"
        )
        findings.append(
            Finding(
                level,
                f"A transaction has been open for {duration(oldest.transaction_for_s)} ({who}, {oldest.state}); "
                f"it {effect}.",
                f"Find out why it is open; if it is stuck, end it: SELECT pg_terminate_backend({oldest.pid});",
            )
        )
    waiting = stats.visible.value
    if records_reads and waiting and last_read_at is not None:
        silent_for = (stats.measured_at - last_read_at).total_seconds()
        if silent_for >= SILENT_READERS_S:
            findings.append(
                Finding(
                    WARNING,
                    f"Nothing has read this queue for {duration(silent_for)} while {waiting:,} messages wait.",
                    "Check that its consumers are running and connected to this database.",
                )
            )
    elif waiting and not readers and not unattributed and (stats.oldest_visible_age_s or 0) >= SILENT_READERS_S:
        findings.append(
            Finding(
                WARNING,
                f"No session is reading this queue and its oldest waiting message is "
                f"{duration(stats.oldest_visible_age_s)} old.",
                "Check that its consumers are running and connected to this database.",
            )
        )
    for group in fifo_groups or []:
        if group.head_failing:
            behind = max(group.backlog - 1, 0)
            findings.append(
                Finding(
                    CRITICAL if (group.head_read_ct or 0) >= 2 * settings.POISON_READ_COUNT else WARNING,
                    f"FIFO group {group.name} is stuck behind message {group.head_msg_id}, read "
                    f"{group.head_read_ct} times: pgmq's grouped reads hand out nothing else of the group, "
                    f"so {behind:,} messages wait behind it.",
                    f"Open message {group.head_msg_id}: fix what makes its consumer fail, or archive it to let "
                    "the group move.",
                )
            )
    if stats.queue.is_unlogged:
        findings.append(
            Finding(
                INFO,
                "This queue is unlogged: a database crash empties it.",
                "Use it only for messages you can afford to lose.",
            )
        )
    return findings


def _partition_findings(partitioning: QueuePartitioning | None) -> list[Finding]:
    findings = []
    for table in partitioning.tables.values() if partitioning else []:
        if table.default_rows:
            default = sql.Identifier(PGMQ_SCHEMA, table.default_partition).as_string()
            verb = "is" if table.default_rows == 1 else "are"
            meaning = (
                f"{table.default_rows_label.capitalize()} {verb} in {default}, the default partition of "
                f"{table.quoted}: no partition was made for them (a burst past the partitions "
                "made ahead, or maintenance not running), and pg_partman's run_maintenance() fails on this table "
                "until they are moved, so no new partition is made and retention drops nothing."
            )
            findings.append(
                Finding(
                    WARNING,
                    meaning,
                    "Move them into partitions of their own, then let maintenance run (in psql, outside a "
                    "transaction; the move goes in batches, one partition each); then make maintenance run more "
                    "often, or raise premake, so partitions are made before messages reach them:",
                    table.fix_sql,
                )
                if table.config
                else Finding(
                    WARNING,
                    meaning,
                    "pg_partman does not manage this table here (or its part_config is unreadable): create "
                    "partitions covering these messages, moving them out of the default partition first.",
                )
            )
        elif table.ahead == 0 and table.config:
            findings.append(
                Finding(
                    WARNING,
                    f"No partition of {table.quoted} is made ahead of the current one: the next messages past it "
                    "land in the default partition, and pg_partman's maintenance then fails.",
                    "Run maintenance now, and check that it runs regularly (pg_partman's background worker or "
                    "pg_cron), more often than a partition fills up:",
                    f"SELECT {table.config.call('run_maintenance')};",
                )
            )
    return findings

"""How a partitioned queue's tables are partitioned (pgmq.create_partitioned, by pg_partman): the
control column and interval from PostgreSQL's catalog and pg_partman's part_config, how many
partitions exist ahead of the current one, and the messages in the default partition, which has
them when a burst outruns the partitions made ahead (pg_partman's maintenance then fails).
"""

from __future__ import annotations

import dataclasses

from django.conf import settings
from django.db import connections
from psycopg import sql

from queues.pgmq import ARCHIVE, LIVE, PGMQ_SCHEMA, Queue
from queues.selectors.stats import default_partition_rows
from queues.watched import watched_alias

# Control columns a partition's lower bound can be compared as: pgmq partitions by msg_id or by time.
ID_TYPES = {"bigint", "integer"}
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}
# The lower bound of "FOR VALUES FROM ('10') TO ('20')", as pg_get_expr() writes a range partition's.
LOWER_BOUND = r"FROM \('?([^')]*)'?\)"


@dataclasses.dataclass(frozen=True)
class PartmanConfig:
    """The row of pg_partman's part_config for one table."""

    schema: str  # the schema pg_partman is installed in
    parent_table: str  # as part_config names it: pgmq.q_orders
    interval: str  # '10000' (msg_ids) or '1 day'
    retention: str | None
    premake: int

    def call(self, function: str) -> str:
        return f"{sql.Identifier(self.schema, function).as_string()}({sql.Literal(self.parent_table).as_string()})"


@dataclasses.dataclass(frozen=True)
class PartitionedTable:
    kind: str  # LIVE or ARCHIVE
    name: str  # q_orders
    control: str  # the partition key's column: msg_id, enqueued_at, archived_at
    by_time: bool
    partitions: int  # not counting the default partition
    # Partitions starting after the newest msg_id (by id) or now (by time); None: unknown, or no
    # message yet in a table partitioned by msg_id.
    ahead: int | None
    default_partition: str | None
    default_rows: int  # counted up to EXACT_COUNT_LIMIT + 1
    config: PartmanConfig | None  # None: pg_partman does not manage this table, or its config is unreadable

    @property
    def quoted(self) -> str:
        return sql.Identifier(PGMQ_SCHEMA, self.name).as_string()

    @property
    def default_rows_label(self) -> str:
        if self.default_rows > settings.EXACT_COUNT_LIMIT:
            return f"more than {settings.EXACT_COUNT_LIMIT:,} messages"
        return f"{self.default_rows:,} message{'' if self.default_rows == 1 else 's'}"

    @property
    def interval_label(self) -> str:
        if self.config is None:
            return ""
        if not self.by_time and self.config.interval.isdigit():
            return f"{int(self.config.interval):,} messages a partition"
        return f"{self.config.interval} a partition"

    @property
    def retention_label(self) -> str:
        retention = self.config.retention if self.config else None
        if not retention:
            return "no retention"
        return f"retention {int(retention):,} msg_ids" if retention.isdigit() else f"retention {retention}"

    @property
    def fix_sql(self) -> str:
        """What moves the default partition's rows into partitions of their own, then lets pg_partman's
        maintenance run again (in psql: partition_data_proc commits as it goes, so no transaction around)."""
        if self.config is None:
            return ""
        return (
            f"CALL {self.config.call('partition_data_proc')};\n"
            f"VACUUM ANALYZE {self.quoted};\n"
            f"SELECT {self.config.call('run_maintenance')};"
        )


@dataclasses.dataclass(frozen=True)
class QueuePartitioning:
    tables: dict[str, PartitionedTable]  # LIVE and/or ARCHIVE: the tables that are partitioned
    partman_schema: str | None  # None: pg_partman is not installed in this database
    config_unreadable: bool  # pg_partman is there but the dashboard's role cannot read part_config

    @property
    def default_rows(self) -> int:
        return sum(table.default_rows for table in self.tables.values())


def _fetch(query: str | sql.Composable, params: list | None = None) -> list[tuple]:
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(query if isinstance(query, str) else query.as_string(), params)
        return cursor.fetchall()


def queue_partitioning(queue: Queue) -> QueuePartitioning | None:
    """The partitioning of the queue's tables; None when neither table is partitioned."""
    kinds = {table.name: kind for kind, table in queue.tables.items() if table.exists}
    found = _fetch(
        """
        SELECT t.oid, t.relname, a.attname, format_type(a.atttypid, a.atttypmod), d.relname,
               has_table_privilege(d.oid, 'SELECT'),
               (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = t.oid AND i.inhrelid <> p.partdefid)
        FROM pg_class t
        JOIN pg_partitioned_table p ON p.partrelid = t.oid
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = p.partattrs[0]
        LEFT JOIN pg_class d ON d.oid = p.partdefid
        WHERE t.relnamespace = 'pgmq'::regnamespace AND t.relname = ANY(%s)
        """,
        [list(kinds)],
    )
    if not found:
        return None
    partman_schema, readable = _partman()
    configs = _configs(partman_schema, [f"{PGMQ_SCHEMA}.{row[1]}" for row in found]) if readable else {}
    tables = {}
    for oid, name, control, type_name, default_partition, default_readable, partitions in found:
        by_time = type_name in TIME_TYPES
        ahead, default_rows = _ahead_and_default_rows(
            oid, name, control, type_name, default_partition, default_readable, with_sequence=kinds[name] == LIVE
        )
        tables[kinds[name]] = PartitionedTable(
            kind=kinds[name],
            name=name,
            control=control,
            by_time=by_time,
            partitions=partitions,
            ahead=ahead,
            default_partition=default_partition,
            default_rows=default_rows,
            config=configs.get(f"{PGMQ_SCHEMA}.{name}"),
        )
    return QueuePartitioning(
        tables={kind: tables[kind] for kind in (LIVE, ARCHIVE) if kind in tables},
        partman_schema=partman_schema,
        config_unreadable=partman_schema is not None and not readable,
    )


def _partman() -> tuple[str | None, bool]:
    """The schema pg_partman is installed in (None: it is not), and whether part_config is readable."""
    rows = _fetch(
        """
        SELECT n.nspname,
               has_schema_privilege(n.oid, 'USAGE')
               AND has_table_privilege(format('%I.part_config', n.nspname), 'SELECT')
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_partman'
        """
    )
    return (rows[0][0], rows[0][1]) if rows else (None, False)


def _configs(schema: str, parent_tables: list[str]) -> dict[str, PartmanConfig]:
    rows = _fetch(
        sql.SQL(
            "SELECT parent_table, partition_interval, retention, premake FROM {} WHERE parent_table = ANY(%s)"
        ).format(sql.Identifier(schema, "part_config")),
        [parent_tables],
    )
    return {
        parent: PartmanConfig(
            schema=schema, parent_table=parent, interval=interval, retention=retention, premake=premake
        )
        for parent, interval, retention, premake in rows
    }


def _ahead_and_default_rows(
    oid: int,
    name: str,
    control: str,
    type_name: str,
    default_partition: str | None,
    default_readable: bool | None,
    *,
    with_sequence: bool,
) -> tuple[int | None, int]:
    table = sql.Identifier(PGMQ_SCHEMA, name)
    if type_name in TIME_TYPES:
        current = sql.SQL("now()::{}").format(sql.SQL(type_name))
    elif type_name in ID_TYPES:
        current = sql.SQL("(SELECT max({}) FROM {})").format(sql.Identifier(control), table)
        if with_sequence:  # where the next message lands, even when the queue is empty
            current = sql.SQL("""greatest({}, (SELECT CASE WHEN has_sequence_privilege(s, 'SELECT')
                                                THEN pg_sequence_last_value(s::regclass) END
                                           FROM pg_get_serial_sequence({}, {}) s))""").format(
                current, sql.Literal(table.as_string()), sql.Literal(control)
            )
    else:
        current = None
    ahead = (
        sql.SQL("""(SELECT CASE WHEN current IS NOT NULL THEN count(*) FILTER (WHERE lower_bound::{type} > current) END
                    FROM (SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM {pattern}) AS lower_bound
                          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                          WHERE i.inhparent = {oid}::oid) bounds, (SELECT {current} AS current) now_at
                    GROUP BY current)""").format(
            type=sql.SQL(type_name), current=current, pattern=sql.Literal(LOWER_BOUND), oid=sql.Literal(oid)
        )
        if current is not None
        else sql.SQL("NULL::bigint")
    )
    default_rows = (
        default_partition_rows(default_partition, readable=bool(default_readable))
        if default_partition
        else sql.SQL("0")
    )
    return _fetch(sql.SQL("SELECT {}, {}").format(ahead, default_rows))[0]

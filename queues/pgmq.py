"""The pgmq catalog: which queues exist, their tables and columns, and models to read them
(README: "How it reads pgmq").

Table names come from the database applying pgmq's rule lower('q_' || name), never from Python's
str.lower(), and are always quoted as identifiers. The per-queue models are unmanaged classes
built at run time, one per table and column set, cached, in a registry of their own so they never
reach Django's migrations or system checks. Everything here only reads.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from functools import cached_property

from django.apps.registry import Apps
from django.db import connections, models
from django.db.models import F, Value
from django.db.models.functions import Concat, Lower
from psycopg import sql

from queues.watched import watched_alias

PGMQ_SCHEMA = "pgmq"

LIVE = "live"
ARCHIVE = "archive"
TABLE_PREFIXES = {LIVE: "q_", ARCHIVE: "a_"}
# Columns pgmq added after 1.4: a table may lack them.
OPTIONAL_COLUMNS = frozenset({"headers", "last_read_at"})


def schema_qualified_db_table(table_name: str) -> str:
    """A Meta.db_table that Django renders as the quoted identifier pgmq."<table_name>".

    Django wraps db_table in double quotes without escaping the ones inside, so embedded quotes
    are doubled here (queue  a"b  has the table  q_a"b). And since the ORM always sends its SQL
    with parameters, psycopg reads a % as a placeholder: a queue named  50%  needs it doubled too.
    """
    return f'{PGMQ_SCHEMA}"."' + table_name.replace('"', '""').replace("%", "%%")


class PgmqModel(models.Model):
    """A model over one of pgmq's tables: read in the watched database (see watched.PgmqRouter)."""

    reads_pgmq = True

    class Meta:
        abstract = True
        managed = False


class QueueQuerySet(models.QuerySet):
    def with_table_names(self) -> QueueQuerySet:
        """Annotate live_table and archive_table, named by pgmq's rule in the database itself."""
        return self.annotate(
            **{
                f"{kind}_table": Lower(Concat(Value(prefix), F("queue_name")))
                for kind, prefix in TABLE_PREFIXES.items()
            }
        )

    def given_the_tables_of(self, queue_name: str) -> QueueQuerySet:
        """The queues pgmq.meta lists whose tables pgmq names as it would name `queue_name`'s."""
        return self.with_table_names().filter(live_table=Lower(Concat(Value(TABLE_PREFIXES[LIVE]), Value(queue_name))))


class Queue(PgmqModel):
    """A row of pgmq.meta, the control table listing every queue."""

    queue_name = models.CharField(primary_key=True, max_length=255)
    is_partitioned = models.BooleanField()
    is_unlogged = models.BooleanField()
    created_at = models.DateTimeField()

    objects = QueueQuerySet.as_manager()

    class Meta(PgmqModel.Meta):
        db_table = schema_qualified_db_table("meta")
        ordering = ["queue_name"]

    def __str__(self) -> str:
        return self.queue_name

    @cached_property
    def tables(self) -> dict[str, QueueTable]:
        return queue_tables(self.queue_name)

    @cached_property
    def table_sharing(self) -> TableSharing | None:
        """Which other names have this queue's tables (None: none has), asked once per Queue object."""
        return table_sharing([self.queue_name]).get(self.queue_name)

    @property
    def live_messages(self) -> type[Message]:
        return message_model(self.tables[LIVE])

    @property
    def archived_messages(self) -> type[ArchivedMessage]:
        return message_model(self.tables[ARCHIVE])


class Message(PgmqModel):
    """A live message, with every column the newest pgmq has."""

    msg_id = models.BigIntegerField(primary_key=True)
    read_ct = models.IntegerField()
    enqueued_at = models.DateTimeField()
    last_read_at = models.DateTimeField(null=True)
    vt = models.DateTimeField()
    message = models.JSONField(null=True)
    headers = models.JSONField(null=True)

    class Meta(PgmqModel.Meta):
        abstract = True

    @classmethod
    def has_column(cls, name: str) -> bool:
        """Whether this table has the column: older pgmq versions' tables lack headers or last_read_at."""
        return any(field.name == name for field in cls._meta.get_fields())


class ArchivedMessage(Message):
    archived_at = models.DateTimeField()

    class Meta(Message.Meta):
        abstract = True


class QueueTableMissing(LookupError):
    """pgmq.meta lists the queue but its table is gone (dropped in between, or damaged)."""


@dataclass(frozen=True)
class QueueTable:
    queue_name: str
    kind: str  # LIVE or ARCHIVE
    name: str  # the table's name inside the pgmq schema, e.g. q_orders-eu
    columns: frozenset[str]  # empty when the table does not exist

    @property
    def exists(self) -> bool:
        return bool(self.columns)


def queue_tables(queue_name: str) -> dict[str, QueueTable]:
    """The live and archive tables of a queue, named and described by the database itself."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT t.kind, t.relname,
                   coalesce(array_agg(a.attname::text) FILTER (WHERE a.attname IS NOT NULL), '{}')
            FROM (VALUES (%(live)s, lower('q_' || %(name)s)),
                         (%(archive)s, lower('a_' || %(name)s))) AS t (kind, relname)
            LEFT JOIN pg_class c
                   ON c.relname = t.relname
                  AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
            LEFT JOIN pg_attribute a
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            GROUP BY t.kind, t.relname
            """,
            {"live": LIVE, "archive": ARCHIVE, "name": queue_name, "schema": PGMQ_SCHEMA},
        )
        return {
            kind: QueueTable(queue_name=queue_name, kind=kind, name=relname, columns=frozenset(columns))
            for kind, relname, columns in cursor.fetchall()
        }


@dataclass(frozen=True)
class TableSharing:
    """Names pgmq.meta lists as separate queues that pgmq gives one pair of tables: it lowercases a
    name to make its tables' (`Foo` and `FOO` both get q_foo / a_foo). What pgmq does to the
    tables through one name (purge, drop) it does to the other's messages too."""

    queue_name: str
    live_table: str
    archive_table: str
    names: tuple[str, ...]  # every name with these tables, the first created first (queue_name included)

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(name for name in self.names if name != self.queue_name)

    @property
    def first_listed(self) -> str:
        """The name created first: the one the table's figures are reported under where it must be
        counted once (/metrics, alerts), and the one kept by resolve_sql."""
        return self.names[0]

    @property
    def resolve_sql(self) -> list[str]:
        """What keeps only the name created first: the others' rows of pgmq.meta removed, the tables
        and every message left as they are."""
        return [f"DELETE FROM pgmq.meta WHERE queue_name = {sql.Literal(name).as_string()};" for name in self.names[1:]]

    @property
    def new_queue_sql(self) -> str:
        """An example of creating a second queue under a name of its own."""
        return f"SELECT pgmq.create({sql.Literal(self.live_table.removeprefix('q_') + '_2').as_string()});"


def table_sharing(queue_names: list[str] | None = None) -> dict[str, TableSharing]:
    """Each queue (of queue_names, or of all) whose tables pgmq also gives another name in pgmq.meta.

    Asked of the database each time, never kept: a name can be added by SQL at any moment.
    """
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT lower('q_' || queue_name), lower('a_' || min(queue_name)),
                   array_agg(queue_name::text ORDER BY created_at, queue_name COLLATE "C")
            FROM pgmq.meta
            WHERE lower('q_' || queue_name) IN (
                SELECT lower('q_' || queue_name) FROM pgmq.meta GROUP BY 1 HAVING count(*) > 1)
              AND (%(names)s::text[] IS NULL
                   OR lower('q_' || queue_name) IN (SELECT lower('q_' || name) FROM unnest(%(names)s::text[]) name))
            GROUP BY lower('q_' || queue_name)
            """,
            {"names": queue_names},
        )
        groups = cursor.fetchall()
    wanted = None if queue_names is None else set(queue_names)
    return {
        name: TableSharing(queue_name=name, live_table=live, archive_table=archive, names=tuple(names))
        for live, archive, names in groups
        for name in names
        if wanted is None or name in wanted
    }


# Models built at run time register here instead of in Django's own registry.
_runtime_models = Apps(installed_apps=())
_model_cache: dict[tuple[str, str, frozenset[str]], type[Message]] = {}
_model_cache_lock = threading.Lock()


def message_model(table: QueueTable) -> type[Message]:
    """The model class reading `table`: built on first use, then the same class every time."""
    if not table.exists:
        raise QueueTableMissing(f"the {table.kind} table {table.name!r} of queue {table.queue_name!r} is missing")
    key = (table.name, table.kind, table.columns)
    with _model_cache_lock:
        model = _model_cache.get(key)
        if model is None:
            model = _model_cache[key] = _build_message_model(table)
        return model


def _build_message_model(table: QueueTable) -> type[Message]:
    base = ArchivedMessage if table.kind == ARCHIVE else Message
    meta = type(
        "Meta",
        (),
        {
            "managed": False,
            "db_table": schema_qualified_db_table(table.name),
            "app_label": "queues",
            "apps": _runtime_models,
        },
    )
    attributes: dict[str, object] = {"__module__": __name__, "Meta": meta, "queue_table": table}
    for column in OPTIONAL_COLUMNS - table.columns:
        attributes[column] = None  # Django drops a field inherited from an abstract model when set to None
    # One class per table and column set: a unique, stable name keeps the registry free of clashes.
    digest = hashlib.sha256(repr((table.name, sorted(table.columns))).encode()).hexdigest()[:16]
    class_name = f"{'Archived' if table.kind == ARCHIVE else 'Live'}Message_{digest}"
    return type(class_name, (base,), attributes)


# The type each of pgmq's writing functions fills (its columns are what they read and write), and
# what each optional column is, to add it where a table lacks it.
MESSAGE_RECORD = "message_record"
COLUMN_TYPES = {"headers": "jsonb", "last_read_at": "timestamp with time zone"}


@dataclass(frozen=True)
class Capabilities:
    """What the pgmq of the watched database can do, read from its catalog each time it is asked:
    one dashboard watches databases of different pgmq versions, and a database's pgmq can be
    upgraded while the dashboard runs, so nothing here is kept per process."""

    version: str | None  # the extension's version; None where pgmq was installed from its SQL
    array_set_vt: bool  # set_vt(queue, msg_ids[], vt): 1.8 and later; before, one message at a time
    notify_throttle: bool  # pgmq.notify_insert_throttle (1.11 and later); before, every insert notifies
    topics: bool  # pgmq.topic_bindings (1.11 and later)
    record_columns: frozenset[str]  # the message columns pgmq's functions read and write


def capabilities() -> Capabilities:
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pgmq'),
                   to_regprocedure('pgmq.set_vt(text, bigint[], integer)') IS NOT NULL,
                   to_regclass('pgmq.notify_insert_throttle') IS NOT NULL,
                   to_regclass('pgmq.topic_bindings') IS NOT NULL,
                   ARRAY(SELECT a.attname::text FROM pg_type t
                         JOIN pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
                         WHERE t.typnamespace = to_regnamespace(%(schema)s) AND t.typname = %(record)s)
            """,
            {"schema": PGMQ_SCHEMA, "record": MESSAGE_RECORD},
        )
        version, array_set_vt, notify_throttle, topics, record_columns = cursor.fetchone()
    return Capabilities(version, array_set_vt, notify_throttle, topics, frozenset(record_columns))


@dataclass(frozen=True)
class VersionMismatch:
    """pgmq's functions expect columns a queue's tables lack: what a dump of an older pgmq restored
    where a newer pgmq is installed leaves (its tables kept their old columns). Reading works;
    functions that write those columns (set_vt, archive) fail until the columns are added."""

    queue_name: str
    missing: dict[str, list[str]]  # table -> the columns it lacks
    version: str | None

    @property
    def explanation(self) -> str:
        tables = "; ".join(f"{table} lacks {', '.join(columns)}" for table, columns in self.missing.items())
        installed = f"pgmq {self.version}" if self.version else "the pgmq installed here"
        return (
            f"the functions of {installed} write columns this queue's tables do not have ({tables}): "
            "the tables are older than the functions, as a dump of an older pgmq restored under a newer "
            "one leaves them"
        )

    @property
    def repair_sql(self) -> list[str]:
        """What pgmq's own upgrade does to such tables: the missing columns added, empty."""
        return [
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {};")
            .format(sql.Identifier(PGMQ_SCHEMA, table), sql.Identifier(column), sql.SQL(COLUMN_TYPES[column]))
            .as_string()
            for table, columns in self.missing.items()
            for column in columns
        ]


def has_topics() -> bool:
    """Whether the watched database's pgmq routes by topic (pgmq.topic_bindings, pgmq 1.11+): what
    the header asks on every page, so the one lookup rather than every capability."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute("SELECT to_regclass('pgmq.topic_bindings') IS NOT NULL")
        return cursor.fetchone()[0]


def version_mismatch(queue: Queue, found: Capabilities | None = None) -> VersionMismatch | None:
    """Whether this queue's tables lack columns the installed pgmq's functions write."""
    found = found or capabilities()
    expected = found.record_columns & OPTIONAL_COLUMNS
    missing = {
        table.name: sorted(expected - table.columns)
        for table in (queue.tables[LIVE], queue.tables[ARCHIVE])
        if table.exists and expected - table.columns
    }
    return VersionMismatch(queue.queue_name, missing, found.version) if missing else None


# The notify trigger pgmq.enable_notify_insert() puts on a queue's table.
NOTIFY_TRIGGER = "trigger_notify_queue_insert_listeners"


@dataclass(frozen=True)
class Notify:
    """LISTEN/NOTIFY on insert, as pgmq.enable_notify_insert() sets it up for a queue."""

    trigger: bool  # the trigger is on the queue's table
    throttle_ms: int | None  # the throttle row's interval; None: no row (or a pgmq without throttles)
    throttled: bool  # this pgmq consults a throttle row (1.11 and later)
    queue_name: str

    @property
    def enabled(self) -> bool:
        return self.trigger

    @property
    def silent(self) -> bool:
        """The trigger is there but pgmq, finding no throttle row, never notifies: what an upgrade
        from a pgmq without throttles leaves on a queue whose notify was enabled before."""
        return self.trigger and self.throttled and self.throttle_ms is None

    @property
    def repair_sql(self) -> str:
        return f"SELECT pgmq.enable_notify_insert({sql.Literal(self.queue_name).as_string()});"


@dataclass(frozen=True)
class QueueFeatures:
    """What pgmq keeps beside a queue, as the installed version has it."""

    notify: Notify
    topic_patterns: list[str] | None  # pgmq.bind_topic(): routing keys that land here; None before 1.11
    mismatch: VersionMismatch | None


def queue_features(queue: Queue) -> QueueFeatures:
    found = capabilities()
    live = queue.tables[LIVE]
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s)",
            [sql.Identifier(PGMQ_SCHEMA, live.name).as_string(), NOTIFY_TRIGGER],
        )
        trigger = cursor.fetchone()[0]
        throttle, patterns = None, None
        if found.notify_throttle:
            cursor.execute(
                "SELECT throttle_interval_ms FROM pgmq.notify_insert_throttle WHERE queue_name = %s",
                [queue.queue_name],
            )
            row = cursor.fetchone()
            throttle = row[0] if row else None
        if found.topics:
            cursor.execute(
                "SELECT pattern FROM pgmq.topic_bindings WHERE queue_name = %s ORDER BY pattern", [queue.queue_name]
            )
            patterns = [row[0] for row in cursor.fetchall()]
    return QueueFeatures(
        notify=Notify(
            trigger=trigger, throttle_ms=throttle, throttled=found.notify_throttle, queue_name=queue.queue_name
        ),
        topic_patterns=patterns,
        mismatch=version_mismatch(queue, found),
    )


def fetch_row_sql(table_name: str, msg_id: int) -> str:
    """The SQL a person can paste into psql to see this row, the table name quoted as it must be."""
    return f"SELECT * FROM {sql.Identifier(PGMQ_SCHEMA, table_name).as_string()} WHERE msg_id = {int(msg_id)};"

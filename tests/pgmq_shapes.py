"""Databases with pgmq as people really have it: installed as an extension, as pgmq 1.7 left it,
upgraded over the years (last_read_at added last), and a 1.7 dump restored where a newer pgmq is
installed (old tables under new functions).

No registry ships pgmq 1.7's SQL, so each older shape is made from today's pgmq (the PyPI
package's SQL) by taking away what later versions added, as pgmq's upgrade scripts add it:
set_vt over an array of ids (1.8), the notify throttle table (1.11), topics (1.11) and
last_read_at (1.10, in the tables and in pgmq.message_record). The few functions that wrote
last_read_at are replaced by ones that do not, written here.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from dashboard import embedded_postgres
from tests.conftest import with_database

CURRENT = "current"  # installed from the SQL, as the rest of the suite does
EXTENSION = "extension"  # CREATE EXTENSION pgmq
PGMQ_1_7 = "1.7"
UPGRADED = "upgraded"  # an upgraded database's column order: last_read_at last
RESTORED_1_7_DUMP = "1.7 dump under a newer pgmq"


def bundled_sql() -> tuple[str, str]:
    """(version, SQL) of the pgmq the PyPI package bundles."""
    import pgmq
    from pgmq.install import get_embedded_sql_version

    text = (Path(pgmq.__file__).parent / "sql" / "pgmq.sql").read_text()
    return get_embedded_sql_version(), text


def fresh_database(server_url: str, name: str) -> str:
    """An empty database of this name on the server (dropped first if there), and its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def install_as_extension(url: str) -> str:
    """pgmq as an extension: its control file and SQL written into the server's extension
    directory (as a package would put them), then CREATE EXTENSION. The version installed."""
    version, text = bundled_sql()
    with psycopg.connect(url, autocommit=True) as connection:
        share = Path(connection.execute("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'").fetchone()[0])
        extension_dir = share / "extension"
        (extension_dir / "pgmq.control").write_text(
            "comment = 'A lightweight message queue. Like AWS SQS and RSMQ but on Postgres.'\n"
            f"default_version = '{version}'\n"
            "relocatable = false\n"
            "schema = pgmq\n"
        )
        (extension_dir / f"pgmq--{version}.sql").write_text(text)
        connection.execute("CREATE EXTENSION pgmq")
    return version


# What pgmq 1.7 had in place of what later versions added (written here: see the module's docstring).
AS_PGMQ_1_7 = """
DROP FUNCTION pgmq.set_vt(text, bigint[], integer);
DROP FUNCTION IF EXISTS pgmq.set_vt(text, bigint[], timestamp with time zone);
DROP FUNCTION IF EXISTS pgmq.set_vt(text, bigint, timestamp with time zone);
ALTER TYPE pgmq.message_record DROP ATTRIBUTE last_read_at;
CREATE OR REPLACE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt integer)
RETURNS SETOF pgmq.message_record LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'UPDATE pgmq.%I SET vt = clock_timestamp() + make_interval(secs => $2) WHERE msg_id = $1 '
        'RETURNING msg_id, read_ct, enqueued_at, vt, message, headers',
        'q_' || lower(queue_name)) USING msg_id, vt;
END $$;
CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH gone AS (DELETE FROM pgmq.%I WHERE msg_id = ANY($1) '
        'RETURNING msg_id, vt, read_ct, enqueued_at, message, headers) '
        'INSERT INTO pgmq.%I (msg_id, vt, read_ct, enqueued_at, message, headers) SELECT * FROM gone '
        'RETURNING msg_id',
        'q_' || lower(queue_name), 'a_' || lower(queue_name)) USING msg_ids;
END $$;
CREATE OR REPLACE FUNCTION pgmq.archive(queue_name text, msg_id bigint)
RETURNS boolean LANGUAGE sql AS $$ SELECT EXISTS (SELECT pgmq.archive(queue_name, ARRAY[msg_id])) $$;
DROP TABLE pgmq.notify_insert_throttle CASCADE;
DROP TABLE pgmq.topic_bindings CASCADE;
DROP FUNCTION pgmq.enable_notify_insert(text, integer);
CREATE OR REPLACE FUNCTION pgmq.notify_queue_listeners() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgmq.' || TG_TABLE_NAME || '.' || TG_OP, NULL);
    RETURN NEW;
END $$;
CREATE FUNCTION pgmq.enable_notify_insert(queue_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE CONSTRAINT TRIGGER trigger_notify_queue_insert_listeners AFTER INSERT ON pgmq.%I '
                   'DEFERRABLE FOR EACH ROW EXECUTE PROCEDURE pgmq.notify_queue_listeners()',
                   'q_' || lower(queue_name));
END $$;
"""


def shaped_database(server_url: str, name: str, shape: str) -> str:
    """A new database with pgmq in the given shape; its URL."""
    url = fresh_database(server_url, name)
    if shape == EXTENSION:
        install_as_extension(url)
    else:
        embedded_postgres.install_pgmq(url)
    if shape == PGMQ_1_7:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(AS_PGMQ_1_7)
    return url


def create_queue(connection: psycopg.Connection, shape: str, name: str) -> None:
    """pgmq.create(name), then its tables given the columns that shape's tables have."""
    connection.execute("SELECT pgmq.create(%s)", [name])
    tables = [sql.Identifier("pgmq", f"{prefix}_{name.lower()}") for prefix in ("q", "a")]
    for table in tables:
        if shape in (PGMQ_1_7, RESTORED_1_7_DUMP):
            connection.execute(sql.SQL("ALTER TABLE {} DROP COLUMN last_read_at").format(table))
        elif shape == UPGRADED:  # pgmq 1.10's upgrade added it after every other column
            connection.execute(
                sql.SQL(
                    "ALTER TABLE {0} DROP COLUMN last_read_at; "
                    "ALTER TABLE {0} ADD COLUMN last_read_at timestamp with time zone"
                ).format(table)
            )


def read_like_a_consumer(connection: psycopg.Connection, name: str, msg_ids: list[int], seconds: int) -> None:
    """What pgmq.read does to messages, in any shape: vt moved on, read_ct up (last_read_at where the
    table has it)."""
    table = sql.Identifier("pgmq", f"q_{name.lower()}")
    has_last_read = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'last_read_at')",
        [table.as_string()],
    ).fetchone()[0]
    connection.execute(
        sql.SQL(
            "UPDATE {} SET vt = clock_timestamp() + make_interval(secs => %s), read_ct = read_ct + 1{} "
            "WHERE msg_id = ANY(%s)"
        ).format(table, sql.SQL(", last_read_at = clock_timestamp()" if has_last_read else "")),
        [seconds, msg_ids],
    )

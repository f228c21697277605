"""Django's PostgreSQL backend for a database reached through a connection pooler (DASHBOARD_POOLER).

PgBouncer refuses the startup parameter `options` that carries the limits of a direct connection
(statement_timeout, lock_timeout, jit, the dashboard's search_path), and in transaction mode a
session's settings would not last anyway: each transaction may run on another server connection.
So every transaction starts with those settings as SET LOCAL (set_config(..., true)), and a
statement Django runs in autocommit gets a transaction of its own around it. Nothing else here
depends on the session: no server-side cursors (DISABLE_SERVER_SIDE_CURSORS) and no prepared
statements (Django's default with psycopg 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq

IDLE, IN_TRANSACTION = pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS


def set_locally(connection: psycopg.Connection, settings: dict[str, str], *, begin: bool = False) -> None:
    """The settings for the current transaction only (with `begin`, for one begun in the same round trip)."""
    calls = ", ".join(["set_config(%s, %s, true)"] * len(settings))
    # A cursor of psycopg's own: the Cursor below would wrap this statement too.
    with psycopg.ClientCursor(connection) as cursor:
        cursor.execute(
            ("BEGIN; " if begin else "") + f"SELECT {calls}", [part for item in settings.items() for part in item]
        )


def sets_the_transaction(query: object) -> bool:
    """SET TRANSACTION ISOLATION LEVEL ...: only valid as the first statement of a transaction."""
    return isinstance(query, str) and query.lstrip()[:15].upper() == "SET TRANSACTION"


class Cursor(base.Cursor):
    """Every statement runs in a transaction that began with the connection's settings."""

    def execute(self, query, params=None, **kwargs):
        return self._with_settings(super().execute, query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):
        return self._with_settings(super().executemany, query, params_seq, **kwargs)

    def _with_settings(self, run, query, *args, **kwargs):
        connection = self.connection
        settings = connection.dashboard_settings
        if connection.info.transaction_status != IDLE:
            return run(query, *args, **kwargs)  # set at the transaction's start
        if not connection.autocommit:  # in an atomic block: psycopg begins with this statement
            if sets_the_transaction(query):
                result = run(query, *args, **kwargs)
                set_locally(connection, settings)
                return result
            set_locally(connection, settings)
            return run(query, *args, **kwargs)
        set_locally(connection, settings, begin=True)
        try:
            result = run(query, *args, **kwargs)
        except BaseException:
            with suppress(psycopg.Error):  # a lost connection: the statement's own error says so
                connection.rollback()
            raise
        connection.commit()
        return result


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, settings_dict: dict, alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        # This thread's settings: they outlive a reconnection, and statement_timeout() changes them.
        self.transaction_settings = dict(settings_dict["TRANSACTION_SETTINGS"])

    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        params["cursor_factory"] = Cursor
        return params

    def get_new_connection(self, conn_params: dict) -> psycopg.Connection:
        connection = super().get_new_connection(conn_params)
        connection.dashboard_settings = self.transaction_settings
        return connection

    @contextmanager
    def statement_timeout(self, milliseconds: int) -> Iterator[None]:
        """Statements inside run at most this long, from the transaction under way if there is one."""
        previous = self.transaction_settings["statement_timeout"]
        with self.wrap_database_errors:
            self._set_now("statement_timeout", str(milliseconds))
        try:
            yield
        finally:
            with suppress(psycopg.Error):  # a lost connection: the next starts with the usual limit
                self._set_now("statement_timeout", previous)

    def _set_now(self, name: str, value: str) -> None:
        self.transaction_settings[name] = value
        if self.connection is not None and self.connection.info.transaction_status == IN_TRANSACTION:
            set_locally(self.connection, {name: value})

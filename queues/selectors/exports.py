"""Exports: every message a filter matches, live, archived or both, read in short keyset batches.

Why keyset batches and not a server-side cursor: a cursor lives in a transaction, and a
million-row download to a slow client would hold that transaction (and its snapshot) open for
minutes on the database being watched, holding back vacuum on pgmq's busiest tables. Here each
batch is one short statement in autocommit (its own snapshot, under the connection's
statement_timeout), and the next starts after the last msg_id seen: never OFFSET.

- Each batch reads at most EXPORT_SPAN msg_ids through the primary key, whatever the filter: a
  filter no index serves (a search in payloads, JSON containment, read_ct) costs at most that
  many rows per statement, so a sparse match still moves on and the export ends. An empty span
  jumps to the next msg_id that exists, so gaps in the msg_id space cost one index lookup.
- A batch ends by size as well as by rows: the database adds the payloads' lengths up and sends
  rows until EXPORT_BATCH_CHARS, so a batch of megabyte payloads stays a few megabytes in memory,
  as a batch of small ones does. A row whose payloads are longer than EXPORT_INLINE_CHARS comes
  without them (ExportRow.streamed) and the writer streams them in from the database in chunks
  (payloads.StoredPayload): a 50 MB message is never whole in the worker.
- Live and archive are read in one statement (UNION ALL, merged by msg_id): one snapshot per
  batch, so a message archived during the export is in it exactly once (msg_id is unique across
  both tables, and the walk never goes back).
- The export ends at the highest msg_id when it began: messages sent meanwhile are not in it,
  and a busy producer cannot keep it going forever.
- Payloads are PostgreSQL's own JSON text (numbers exactly as stored), redacted in the same
  statement for a user who sees them so (MessageFilter.redacted), as in the browser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from django.db import OperationalError, connections
from django.db.models import CharField, DateTimeField, F, Func, JSONField, TextField, Value
from django.db.models.functions import Cast

from dashboard.databases import took_too_long
from queues.filters import MessageFilter
from queues.pgmq import ARCHIVE, LIVE, Queue
from queues.redaction import payload
from queues.selectors.messages import state_by_database_clock
from queues.watched import watched_alias, watching

EXPORT_BATCH_ROWS = 5_000
EXPORT_FIRST_BATCH_ROWS = 500  # until the payloads' size is known
EXPORT_BATCH_CHARS = 4 * 1024 * 1024
EXPORT_INLINE_CHARS = 1024 * 1024  # a row's message and headers together; longer ones are streamed
EXPORT_SPAN = 20_000  # msg_ids per statement at most (as a bounded search's step)
MINIMUM_SPAN = 100  # a statement that times out is retried on a smaller span, down to this

CSV_COLUMNS = [
    "msg_id",
    "source",
    "state",
    "read_ct",
    "enqueued_at",
    "last_read_at",
    "vt",
    "archived_at",
    "message",
    "headers",
]


class ExportTooSlow(RuntimeError):
    """Even the smallest span of msg_ids ran past the statement timeout: the export stops."""


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    queue: Queue
    models: dict[str, Any]  # kind -> model, for the tables the filter can match in
    message_filter: MessageFilter
    columns: list[str]  # the CSV's header (last_read_at only if some table has it)
    # The response is streamed after the request's middleware has finished: the rows are read from
    # the database the request was for, remembered here.
    database_alias: str = dataclasses.field(default_factory=watched_alias)


def export_plan(queue: Queue, message_filter: MessageFilter) -> ExportPlan:
    tables = queue.tables
    models = {
        kind: (queue.live_messages if kind == LIVE else queue.archived_messages)
        for kind in message_filter.sources
        if tables[kind].exists
    }
    has_last_read = any(model.has_column("last_read_at") for model in models.values())
    columns = [column for column in CSV_COLUMNS if column != "last_read_at" or has_last_read]
    return ExportPlan(queue=queue, models=models, message_filter=message_filter, columns=columns)


TIME_COLUMNS = {"x_enqueued_at", "x_last_read_at", "x_vt", "x_archived_at"}


class AsJSONText(Func):
    """A value as the text JSON gives it: a time in ISO 8601, 2026-11-24T10:00:00.5+00:00."""

    template = "(to_json(%(expressions)s) #>> '{}')"
    output_field = TextField()


def _null(field) -> Cast:
    return Cast(Value(None), field)


def _row_expressions(model, kind: str, plan: ExportPlan) -> dict[str, Any]:
    """The export's columns for one table, in order; NULL where the table has no such column."""
    redacted = plan.message_filter.redacted
    return {
        "x_msg_id": F("msg_id"),
        "x_source": Value(kind, CharField()),
        "x_state": state_by_database_clock(model),
        "x_read_ct": F("read_ct"),
        "x_enqueued_at": F("enqueued_at"),
        **(
            {"x_last_read_at": F("last_read_at") if model.has_column("last_read_at") else _null(DateTimeField())}
            if "last_read_at" in plan.columns
            else {}
        ),
        "x_vt": F("vt"),
        "x_archived_at": F("archived_at") if kind == ARCHIVE else _null(DateTimeField()),
        "x_message": payload("message", redacted=redacted),
        "x_headers": payload("headers", redacted=redacted) if model.has_column("headers") else _null(JSONField()),
    }


@dataclasses.dataclass(frozen=True)
class ExportRow:
    msg_id: int
    source: str  # the table the row was read from
    values: tuple  # the CSV's columns (payloads None if streamed), or (the NDJSON line,)
    streamed: bool  # message and headers are too long to come in the batch: read them with payloads


def _batch_sql(plan: ExportPlan, *, ndjson: bool, after: int, ceiling: int, limit: int) -> tuple[str, list]:
    """One statement: the next matching rows with after < msg_id <= ceiling, from every table,
    merged by msg_id, at most `limit` of them and no more than EXPORT_BATCH_CHARS of payloads
    (but always one). Each row is (msg_id, rows found, streamed, the NDJSON line | *the CSV's columns)."""
    parts, params = [], []
    names: list[str] = []
    for kind, model in plan.models.items():
        queryset = plan.message_filter.apply(model.objects.filter(msg_id__gt=after, msg_id__lte=ceiling), kind)
        expressions = _row_expressions(model, kind, plan)
        # Payloads as PostgreSQL's JSON text (numbers exactly as stored, never through a float);
        # times as JSON writes them (ISO 8601).
        queryset = queryset.annotate(
            **{
                name: (
                    Cast(expression, TextField())
                    if name in ("x_message", "x_headers")
                    else AsJSONText(expression)
                    if name in TIME_COLUMNS
                    else expression
                )
                for name, expression in expressions.items()
            }
        )
        names = list(expressions)
        # Each part keeps its ORDER BY and LIMIT, so PostgreSQL computes each payload's text once
        # (the outer query's lengths and CASEs read it; a flattened part would cast it again).
        queryset = queryset.order_by("msg_id").values_list(*names)[:limit]
        sql, part_params = queryset.query.get_compiler(watched_alias()).as_sql()
        parts.append(f"({sql})")
        params += part_params
    chars = "coalesce(length(x_message), 0) + coalesce(length(x_headers), 0)"
    sized = (
        f"SELECT batch.*, ({chars}) > {EXPORT_INLINE_CHARS} AS x_streamed FROM "
        f"({' UNION ALL '.join(parts)}) AS batch ORDER BY x_msg_id LIMIT {int(limit)}"
    )
    counted = f"SELECT sized.*, CASE WHEN x_streamed THEN 0 ELSE {chars} END AS x_chars FROM ({sized}) AS sized"
    windowed = (
        f"SELECT counted.*, sum(x_chars) OVER (ORDER BY x_msg_id ROWS UNBOUNDED PRECEDING) AS x_running, "
        f"count(*) OVER () AS x_found FROM ({counted}) AS counted"
    )
    payload_columns = {
        "x_message": "CASE WHEN x_streamed THEN NULL ELSE x_message END",
        "x_headers": "CASE WHEN x_streamed THEN NULL ELSE x_headers END",
    }
    if ndjson:
        # json (not jsonb) keeps the columns in this order and the payloads' text as it is.
        pairs = ", ".join(
            f"'{name.removeprefix('x_')}', "
            + (f"({payload_columns[name]})::json" if name in payload_columns else f"to_json({name})")
            for name in names
        )
        selected = f"json_build_object({pairs})::text"
    else:
        selected = ", ".join(payload_columns.get(name, name) for name in names)
    return (
        f"SELECT x_msg_id, x_found, x_source, x_streamed, {selected} FROM ({windowed}) AS windowed "
        f"WHERE x_running - x_chars < {EXPORT_BATCH_CHARS} ORDER BY x_msg_id"
    ), params


def _highest_msg_id(plan: ExportPlan) -> int:
    found = [
        model.objects.order_by("-msg_id").values_list("msg_id", flat=True).first() for model in plan.models.values()
    ]
    return max([msg_id for msg_id in found if msg_id is not None], default=0)


def _next_msg_id(plan: ExportPlan, position: int) -> int | None:
    """The first msg_id past `position` in any of the tables, through their primary keys."""
    found = [
        model.objects.filter(msg_id__gt=position).order_by("msg_id").values_list("msg_id", flat=True).first()
        for model in plan.models.values()
    ]
    return min([msg_id for msg_id in found if msg_id is not None], default=None)


def export_rows(plan: ExportPlan, *, ndjson: bool) -> Iterator[ExportRow]:
    """Every matching row in msg_id order, a batch at a time (see the module's docstring)."""
    if not plan.models:
        return
    with watching(plan.database_alias):
        yield from _export_rows(plan, ndjson=ndjson)


def _export_rows(plan: ExportPlan, *, ndjson: bool) -> Iterator[ExportRow]:
    highest = _highest_msg_id(plan)
    after, limit, span = 0, EXPORT_FIRST_BATCH_ROWS, EXPORT_SPAN
    while after < highest:
        ceiling = min(after + span, highest)
        statement, params = _batch_sql(plan, ndjson=ndjson, after=after, ceiling=ceiling, limit=limit)
        try:
            with connections[watched_alias()].cursor() as cursor:
                cursor.execute(statement, params)
                rows = cursor.fetchall()
        except OperationalError as error:
            if not took_too_long(error):
                raise
            if span <= MINIMUM_SPAN:
                raise ExportTooSlow(
                    f"msg_ids {after + 1} to {ceiling} took longer than the statement timeout, even a few at a time"
                ) from error
            span = max(span // 4, MINIMUM_SPAN)
            continue
        found = rows[0][1] if rows else 0
        for msg_id, _found, source, streamed, *values in rows:
            yield ExportRow(msg_id, source, tuple(values), streamed)
        if rows and (found == limit or len(rows) < found):
            after = rows[-1][0]  # the span had more (past the rows or the size asked): right after the last
        else:
            after = ceiling
            if not rows and after < highest:
                nearest = _next_msg_id(plan, after)
                after = highest if nearest is None else max(after, nearest - 1)
        if rows:
            row_chars = (
                sum(len(value or "") for row in rows for value in row[-2:])
                if not ndjson
                else sum(len(row[-1]) for row in rows)
            )
            limit = max(1, min(EXPORT_BATCH_ROWS, EXPORT_BATCH_CHARS * len(rows) // max(row_chars, 1)))
        del rows  # the batch is gone before the next is read: memory holds one batch at most

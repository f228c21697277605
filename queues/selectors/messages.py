"""Browsing a queue's messages, live and archived: plain SELECTs, keyset pages, bounded searches.

- Pages are keyset pages on (sort column, msg_id) in both directions: never OFFSET, never a
  count of the table. msg_id sorts ride the primary key, vt sorts pgmq's vt index.
- Live and archive are queried apart, each through its own index, and merged (msg_id is unique
  across both: archiving keeps it).
- A filter no index serves (payload search, JSON containment, read_ct) is run as a bounded scan
  when the sort is by msg_id: msg_id ranges are read newest first until a page is full or the
  time budget (settings.SEARCH_TIMEOUT_MS) is spent, and the page says how far it got. Other
  sorts under such a filter run with that budget as their statement timeout.
- A message's state comes from the database's clock (now()), never the browser's.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import OperationalError, connections, transaction
from django.db.models import Case, CharField, FloatField, Func, IntegerField, Q, QuerySet, TextField, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Greatest, Left, Length, Lower, Now, StrIndex, Substr

from dashboard.databases import took_too_long
from queues.filters import ARCHIVED, DELAYED, IN_FLIGHT, VISIBLE, MessageFilter
from queues.pgmq import ARCHIVE, LIVE, Message, Queue
from queues.redaction import payload
from queues.selectors.payloads import if_listable, stored_bytes
from queues.watched import statement_budget, watched_alias

PAGE_SIZE = 50
PREVIEW_CHARS = 300
MATCH_WINDOW_CHARS = 160  # a searched row's preview: this much of the payload around the first match
MATCH_LEAD_CHARS = 40  # of it before the match
SCAN_CHUNK = 20_000  # msg_ids per step of a bounded scan
MINIMUM_STEP_MS = 100  # a step's statement timeout, however little of the budget is left
MAX_MSG_ID = 2**63 - 1

SORT_COLUMNS = ["msg_id", "enqueued_at", "read_ct", "vt", "archived_at"]


def state_by_database_clock(model) -> Case | Value:
    if model.has_column("archived_at"):
        return Value(ARCHIVED, CharField())
    return Case(
        When(vt__lte=Now(), then=Value(VISIBLE)),
        When(read_ct__gt=0, then=Value(IN_FLIGHT)),
        default=Value(DELAYED),
        output_field=CharField(),
    )


def listing(messages: QuerySet[Message], *, redacted: bool = False, highlight: str | None = None) -> QuerySet[Message]:
    """What a row of a list needs: the state by the database's clock and a short preview of the
    payload, cut in SQL so a megabyte payload never leaves the database for a list. With a
    `highlight`, the preview is the window around its first occurrence (any case), from
    `preview_start` (1-based), cut from the payload as the user may see it: never a redacted value.
    A payload stored in more than LIST_PAYLOAD_MAX_STORED_BYTES has no preview, length or Celery
    task: only `message_stored_bytes` (payloads.if_listable)."""
    model = messages.model
    has_headers = model.has_column("headers")
    message_text = Cast(payload("message", redacted=redacted), TextField())
    if highlight:
        found_at = StrIndex(Lower(message_text), Lower(Value(highlight, TextField())))
        start = Greatest(Value(1), found_at - Value(MATCH_LEAD_CHARS))
        preview = {
            "preview": if_listable("message", Substr(message_text, start, MATCH_WINDOW_CHARS), TextField()),
            "preview_start": if_listable("message", start, IntegerField()),
        }
    else:
        preview = {"preview": if_listable("message", Left(message_text, PREVIEW_CHARS), TextField())}
    return messages.defer("message", *(["headers"] if has_headers else [])).annotate(
        state=state_by_database_clock(model),
        **preview,
        message_chars=if_listable("message", Length(message_text), IntegerField()),
        message_stored_bytes=stored_bytes("message"),
        headers_preview=(
            if_listable(
                "headers", Left(Cast(payload("headers", redacted=redacted), TextField()), PREVIEW_CHARS), TextField()
            )
            if has_headers
            else Value(None, TextField())
        ),
        # The name of the Celery task in a kombu envelope (queues/celery_tasks.py); NULL in any other.
        celery_task=if_listable(
            "message",
            Left(KeyTextTransform("task", KeyTransform("headers", payload("message", redacted=redacted))), 200),
            TextField(),
        ),
    )


@dataclasses.dataclass(frozen=True)
class Cursor:
    """A row's place in a sort: the sort column's value and msg_id, the tie-breaker."""

    value: Any
    msg_id: int


@dataclasses.dataclass(frozen=True)
class PageRequest:
    sort: str = "msg_id"
    descending: bool = True
    after: Cursor | None = None  # the next page: rows after this one in the sort
    before: Cursor | None = None  # the previous page: rows before this one
    from_msg_id: int | None = None  # jump: start at this msg_id (included)
    last: bool = False  # the far end of the sort


@dataclasses.dataclass
class MessagePage:
    rows: list[Message]
    has_newer: bool  # a page before this one in the sort
    has_older: bool  # a page after this one
    first: Cursor | None
    last: Cursor | None
    scan_stopped_at: int | None = None  # a bounded scan ran out of time below this msg_id
    timed_out: bool = False
    missing_columns: tuple[str, ...] = ()  # filters this pgmq version's tables cannot answer


def _ordered(queryset: QuerySet, page: PageRequest, *, reverse: bool = False) -> QuerySet:
    descending = page.descending != reverse
    prefix = "-" if descending else ""
    if page.sort == "msg_id":
        return queryset.order_by(f"{prefix}msg_id")
    return queryset.order_by(f"{prefix}{page.sort}", f"{prefix}msg_id")


def _beyond(cursor: Cursor, page: PageRequest, *, backwards: bool, inclusive: bool = False) -> Q:
    """Rows past `cursor` in the direction of travel (forwards: the sort order)."""
    descending = page.descending != backwards
    op = ("lt" if descending else "gt") + ("e" if inclusive else "")
    if page.sort == "msg_id":
        return Q(**{f"msg_id__{op}": cursor.msg_id})
    strict = "lt" if descending else "gt"
    return Q(**{f"{page.sort}__{strict}": cursor.value}) | Q(
        **{page.sort: cursor.value, f"msg_id__{op}": cursor.msg_id}
    )


def _sort_value(row: Message, sort: str) -> Any:
    return getattr(row, sort)


def _key(row: Message, page: PageRequest):
    value = _sort_value(row, page.sort) if page.sort != "msg_id" else row.msg_id
    return (value, row.msg_id)


@contextmanager
def one_snapshot(tables: int):
    """Queries on the live table and the archive see the same moment: a message a consumer
    archives in between would otherwise show up in both (or in neither)."""
    if tables < 2:
        yield
        return
    with transaction.atomic(using=watched_alias()):
        with connections[watched_alias()].cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _fetch(
    queue: Queue,
    kinds: list[str],
    message_filter: MessageFilter,
    page: PageRequest,
    *,
    backwards: bool,
    cursor: Cursor | None,
    inclusive: bool,
    limit: int,
    msg_id_floor: int | None = None,
    msg_id_ceiling: int | None = None,
) -> list[Message]:
    """Up to `limit` rows past the cursor in the direction of travel, from each table, merged."""
    with one_snapshot(len(kinds)):
        return _fetch_in_snapshot(
            queue,
            kinds,
            message_filter,
            page,
            backwards=backwards,
            cursor=cursor,
            inclusive=inclusive,
            limit=limit,
            msg_id_floor=msg_id_floor,
            msg_id_ceiling=msg_id_ceiling,
        )


def _fetch_in_snapshot(
    queue: Queue,
    kinds: list[str],
    message_filter: MessageFilter,
    page: PageRequest,
    *,
    backwards: bool,
    cursor: Cursor | None,
    inclusive: bool,
    limit: int,
    msg_id_floor: int | None,
    msg_id_ceiling: int | None,
) -> list[Message]:
    fetched: list[Message] = []
    for kind in kinds:
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        if page.sort not in {field.name for field in model._meta.get_fields()}:
            continue  # archived_at sorts only the archive
        queryset = message_filter.apply(model.objects.all(), kind)
        if cursor is not None:
            queryset = queryset.filter(_beyond(cursor, page, backwards=backwards, inclusive=inclusive))
        if msg_id_floor is not None:
            queryset = queryset.filter(msg_id__gte=msg_id_floor)
        if msg_id_ceiling is not None:
            queryset = queryset.filter(msg_id__lt=msg_id_ceiling)
        rows = list(
            listing(
                _ordered(queryset, page, reverse=backwards),
                redacted=message_filter.redacted,
                highlight=message_filter.highlight,
            )[:limit]
        )
        for row in rows:
            row.source = kind
        fetched.append(rows)
    descending = page.descending != backwards
    merged = list(heapq.merge(*fetched, key=lambda row: _key(row, page), reverse=descending))
    return merged[:limit]


def message_page(queue: Queue, message_filter: MessageFilter, page: PageRequest) -> MessagePage:
    kinds = message_filter.sources
    missing = tuple(
        column
        for column in ("headers",)
        if (message_filter.headers_contains is not None or any(t.column == "headers" for t in message_filter.search))
        and not queue.live_messages.has_column(column)
    )
    if message_filter.needs_scan and page.sort == "msg_id":
        result = _bounded_scan(queue, kinds, message_filter, page)
    else:
        # Sorted by a column no index serves, or filtered under such a sort: bounded all the same.
        try:
            with statement_budget(settings.SEARCH_TIMEOUT_MS):
                result = _keyset(queue, kinds, message_filter, page)
        except OperationalError as error:
            if not took_too_long(error):
                raise
            result = _empty_page(timed_out=True)
    result.missing_columns = missing
    return result


def _keyset(queue: Queue, kinds: list[str], message_filter: MessageFilter, page: PageRequest) -> MessagePage:
    if page.before is not None:
        rows = _fetch(
            queue, kinds, message_filter, page, backwards=True, cursor=page.before, inclusive=False, limit=PAGE_SIZE + 1
        )
        more_before = len(rows) > PAGE_SIZE
        rows = list(reversed(rows[:PAGE_SIZE]))
        return _page(rows, page, has_newer=more_before, has_older=True)
    if page.last:
        rows = _fetch(
            queue, kinds, message_filter, page, backwards=True, cursor=None, inclusive=False, limit=PAGE_SIZE + 1
        )
        more_before = len(rows) > PAGE_SIZE
        return _page(list(reversed(rows[:PAGE_SIZE])), page, has_newer=more_before, has_older=False)
    cursor, inclusive = page.after, False
    if page.from_msg_id is not None:
        cursor, inclusive = Cursor(None, page.from_msg_id), True
    rows = _fetch(
        queue, kinds, message_filter, page, backwards=False, cursor=cursor, inclusive=inclusive, limit=PAGE_SIZE + 1
    )
    return _page(rows[:PAGE_SIZE], page, has_newer=cursor is not None, has_older=len(rows) > PAGE_SIZE)


def _page(rows: list[Message], page: PageRequest, *, has_newer: bool, has_older: bool, **extra) -> MessagePage:
    first = Cursor(_sort_value(rows[0], page.sort), rows[0].msg_id) if rows else None
    last = Cursor(_sort_value(rows[-1], page.sort), rows[-1].msg_id) if rows else None
    return MessagePage(
        rows=rows, has_newer=has_newer and bool(rows), has_older=has_older, first=first, last=last, **extra
    )


def _empty_page(**extra) -> MessagePage:
    return MessagePage(rows=[], has_newer=False, has_older=False, first=None, last=None, **extra)


def _nearest_msg_id(queue: Queue, kinds: list[str], position: int, *, descending: bool) -> int | None:
    """The first msg_id at or past `position` in the direction of travel, through the primary keys:
    a scan jumps over gaps in the msg_id space instead of stepping through them."""
    found = []
    for kind in kinds:
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        if descending:
            nearest = model.objects.filter(msg_id__lte=position).order_by("-msg_id")
        else:
            nearest = model.objects.filter(msg_id__gte=position).order_by("msg_id")
        msg_id = nearest.values_list("msg_id", flat=True).first()
        if msg_id is not None:
            found.append(msg_id)
    if not found:
        return None
    return max(found) if descending else min(found)


def _bounded_scan(queue: Queue, kinds: list[str], message_filter: MessageFilter, page: PageRequest) -> MessagePage:
    """Walk msg_id ranges in the direction of the page until it is full or the budget is spent.

    Each step reads at most SCAN_CHUNK msg_ids through the primary key, under what is left of the
    budget as its statement timeout; at least one step is taken per request, so continuing a
    search always moves on.
    """
    backwards = page.before is not None or page.last
    descending = page.descending != backwards  # the order the scan walks msg_ids in
    step = -1 if descending else 1
    if page.before is not None:
        position = page.before.msg_id + step
    elif page.after is not None:
        position = page.after.msg_id + step
    elif page.from_msg_id is not None:
        position = page.from_msg_id
    else:
        position = MAX_MSG_ID if descending else 0
    deadline = time.monotonic() + settings.SEARCH_TIMEOUT_MS / 1000
    forward_page = dataclasses.replace(
        page, descending=descending, before=None, after=None, from_msg_id=None, last=False
    )
    found: list[Message] = []
    exhausted = False
    stopped_at = None
    while len(found) <= PAGE_SIZE:
        remaining_ms = (deadline - time.monotonic()) * 1000
        try:
            with statement_budget(max(remaining_ms, MINIMUM_STEP_MS)):
                nearest = _nearest_msg_id(queue, kinds, position, descending=descending)
                if nearest is None:
                    exhausted = True
                    break
                if descending:
                    floor, ceiling = max(nearest - SCAN_CHUNK + 1, 0), nearest + 1
                else:
                    floor, ceiling = nearest, nearest + SCAN_CHUNK
                found += _fetch(
                    queue,
                    kinds,
                    message_filter,
                    forward_page,
                    backwards=False,
                    cursor=None,
                    inclusive=False,
                    limit=PAGE_SIZE + 1 - len(found),
                    msg_id_floor=floor,
                    msg_id_ceiling=ceiling,
                )
        except OperationalError as error:
            if not took_too_long(error):
                raise
            stopped_at = position - step  # this step did not finish: start it again next time
            break
        position = floor - 1 if descending else ceiling
        if time.monotonic() > deadline:
            stopped_at = position - step  # the last msg_id looked at
            break
    if len(found) > PAGE_SIZE or exhausted:
        stopped_at = None
    more_in_direction = len(found) > PAGE_SIZE or not exhausted
    rows = found[:PAGE_SIZE]
    if backwards:
        rows.reverse()
        result = _page(rows, page, has_newer=more_in_direction, has_older=page.before is not None)
    else:
        came_from_somewhere = page.after is not None or page.from_msg_id is not None
        result = _page(rows, page, has_newer=came_from_somewhere, has_older=more_in_direction)
    result.scan_stopped_at = stopped_at
    return result


def find_message(
    queue: Queue, msg_id: int, *, source: str | None = None, redacted: bool = False, text_chars: int | None = None
) -> Message | None:
    """One message with everything, from the live table, else the archive (or the one asked for).

    Its message and headers are PostgreSQL's indented text (message_text, headers_text), cut by
    the database to `text_chars` when given (message_cut, headers_cut say so), so a page showing
    a 50 MB message never holds more than its beginning."""
    kinds = [source] if source else [LIVE, ARCHIVE]

    def text_of(column: str) -> Func:
        # PostgreSQL's own text of the JSON: jsonb keeps numbers as numeric, and a float on the
        # way (Python's or the browser's) would change 0.12345678901234567890 or 1.10.
        pretty = Func(payload(column, redacted=redacted), function="jsonb_pretty", output_field=TextField())
        return pretty if text_chars is None else Left(pretty, text_chars + 1)

    for kind in kinds:
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        has_headers = model.has_column("headers")
        found = (
            model.objects.filter(msg_id=msg_id)
            .defer("message", *(["headers"] if has_headers else []))
            .annotate(
                state=state_by_database_clock(model),
                message_chars=Length(Cast(payload("message", redacted=redacted), TextField())),
                message_stored_bytes=stored_bytes("message"),
                message_text=text_of("message"),
                headers_text=text_of("headers") if has_headers else Value(None, TextField()),
                # For the countdown: the database's clock decides, the browser only counts down.
                seconds_to_vt=RawSQL("extract(epoch FROM vt - now())", [], output_field=FloatField()),
            )
            .first()
        )
        if found is not None:
            found.source = kind
            for column in ("message", "headers"):
                text = getattr(found, f"{column}_text")
                cut = text_chars is not None and text is not None and len(text) > text_chars
                setattr(found, f"{column}_cut", cut)
                if cut:
                    setattr(found, f"{column}_text", text[:text_chars])
            return found
    return None

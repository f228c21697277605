"""Exports of the message browser's filter as CSV or NDJSON, streamed (queues/selectors/exports.py reads).

An export is a read: every signed-in user may take one, redacted as the list is for them. It takes
the list's own query string, validated by the list's own form (a bad one is the same 400); the
list's place in its pages (after, before, from, last) and its sort are ignored: an export is every
matching message, in msg_id order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from queues import export_slots, forms, redaction
from queues.errors import error_answer
from queues.selectors import exports, payloads
from queues.shortcuts import bad_request, get_queue_or_404
from queues.spreadsheet import line_writer, safe_cell

FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson; charset=utf-8"}
UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(filename: str) -> str:
    """Content-Disposition for any file name: an ASCII stand-in in `filename` for old clients, the
    real name in RFC 5987's `filename*` (UTF-8, percent-encoded), so quotes, semicolons, slashes or
    non-ASCII letters in a queue name can neither break the header nor name a path."""
    fallback = UNSAFE_IN_FILENAME.sub("_", filename).strip("._") or "export"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


STREAMED = "\x00streamed\x00"  # a payload cell the writer fills in from the database


def _streamed_payloads(plan: exports.ExportPlan, row: exports.ExportRow) -> dict[str, payloads.StoredPayload | None]:
    # Looked for in either table: a row archived since its batch was read is in the archive.
    return {
        column: payloads.stored_payload(plan.queue, row.msg_id, column=column, redacted=plan.message_filter.redacted)
        for column in ("message", "headers")
    }


def _csv_cell(stored: payloads.StoredPayload | None) -> Iterator[str]:
    if stored is None or stored.chars is None:
        return
    yield '"'
    first = True
    for chunk in stored.chunks():
        yield (safe_cell(chunk) if first else chunk).replace('"', '""')
        first = False
    yield '"'


def _csv_lines(plan: exports.ExportPlan) -> Iterator[str]:
    writer = line_writer()
    yield writer.writerow(plan.columns)
    payload_at = {column: plan.columns.index(column) for column in ("message", "headers")}
    for row in exports.export_rows(plan, ndjson=False):
        cells = [safe_cell(value) for value in row.values]
        if not row.streamed:
            yield writer.writerow(cells)
            continue
        for index in payload_at.values():
            cells[index] = STREAMED
        line = writer.writerow(cells)
        for stored in _streamed_payloads(plan, row).values():
            before, line = line.split(STREAMED, 1)
            yield before
            yield from _csv_cell(stored)
        yield line


def _ndjson_lines(plan: exports.ExportPlan) -> Iterator[str]:
    for row in exports.export_rows(plan, ndjson=True):
        (line,) = row.values
        if not row.streamed:
            yield line + "\n"
            continue
        # json_build_object wrote both payloads as null: the message's is the first "message" key
        # (the columns before it are numbers, times and fixed words), the headers' ends the line.
        stored = _streamed_payloads(plan, row)
        before, after = line.split('"message" : null', 1)
        middle, end = after.rsplit('"headers" : null', 1)
        yield before + '"message" : '
        yield from (stored["message"].chunks() if stored["message"] else ["null"])
        yield middle + '"headers" : '
        yield from (stored["headers"].chunks() if stored["headers"] else ["null"])
        yield end + "\n"


@require_GET
def message_export(request: HttpRequest, queue_name: str, export_format: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    form = forms.MessageFilterForm(request.GET)
    if not form.is_valid():
        return bad_request(request, form)
    message_filter = form.message_filter(redacted=redaction.applies_to(request.user))
    # The plan (which tables, which columns) is read now, so a missing table is an error page and
    # not a broken download; the rows are read as the client takes them.
    plan = exports.export_plan(queue, message_filter)
    try:
        slot = export_slots.take_slot(request.user.pk)
    except export_slots.ExportsBusy as busy:
        response = error_answer(
            request,
            429,
            f"{busy}; try again in {export_slots.RETRY_AFTER_SECONDS} s",
            "queues/exports_busy.html",
            {
                "reason": str(busy),
                "retry_seconds": export_slots.RETRY_AFTER_SECONDS,
                "per_user": settings.EXPORTS_PER_USER,
                "per_worker": settings.EXPORTS_PER_WORKER,
            },
        )
        response["Retry-After"] = str(export_slots.RETRY_AFTER_SECONDS)
        return response
    lines = _csv_lines(plan) if export_format == "csv" else _ndjson_lines(plan)
    response = StreamingHttpResponse(export_slots.HoldingSlot(slot, lines), content_type=FORMATS[export_format])
    response["Content-Disposition"] = attachment(f"{queue.queue_name}-{message_filter.source}.{export_format}")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"  # payloads: not for shared caches
    return response

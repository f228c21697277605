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

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from queues import forms, redaction
from queues.selectors import exports
from queues.spreadsheet import line_writer, safe_cell
from queues.views.pages import bad_request, get_queue_or_404

FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson; charset=utf-8"}
UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def attachment(filename: str) -> str:
    """Content-Disposition for any file name: an ASCII stand-in in `filename` for old clients, the
    real name in RFC 5987's `filename*` (UTF-8, percent-encoded), so quotes, semicolons, slashes or
    non-ASCII letters in a queue name can neither break the header nor name a path."""
    fallback = UNSAFE_IN_FILENAME.sub("_", filename).strip("._") or "export"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _csv_lines(plan: exports.ExportPlan) -> Iterator[str]:
    writer = line_writer()
    yield writer.writerow(plan.columns)
    for row in exports.export_rows(plan, ndjson=False):
        yield writer.writerow([safe_cell(value) for value in row])


def _ndjson_lines(plan: exports.ExportPlan) -> Iterator[str]:
    for _msg_id, line in exports.export_rows(plan, ndjson=True):
        yield line + "\n"


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
    lines = _csv_lines(plan) if export_format == "csv" else _ndjson_lines(plan)
    response = StreamingHttpResponse(lines, content_type=FORMATS[export_format])
    response["Content-Disposition"] = attachment(f"{queue.queue_name}-{message_filter.source}.{export_format}")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"  # payloads: not for shared caches
    return response


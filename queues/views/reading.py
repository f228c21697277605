"""Pages that read: parse input (forms.py), call selectors, render. Nothing here changes a message."""

from __future__ import annotations

from django.conf import settings
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from dashboard.databases import took_too_long
from queues import celery_tasks, forms, jobs, lineage, redaction, vocabulary
from queues.access import OPERATE, may
from queues.filters import SOURCES, STATES, MessageFilter
from queues.formatting import rate_unit
from queues.pgmq import ARCHIVE, LIVE, Queue, fetch_row_sql, queue_features
from queues.selectors import (
    archive,
    copies,
    diagnostics,
    distributions,
    history,
    messages,
    overview,
    partitions,
    payloads,
    privileges,
)
from queues.selectors.stats import single_queue_stats, table_row_counts
from queues.shortcuts import (
    bad_request,
    download_too_big,
    get_queue_or_404,
    jobs_seen,
    page_links,
    partial_or_page,
    render_panel,
)
from queues.templatetags.queue_format import DISPLAY_LIMIT_CHARS

POISON_EXPLANATION = (
    "Messages read {} times or more: a read that ends without an archive or delete hands the message out "
    "again. – where the table is too big to count on every view (the sampler counts it about once a minute)."
)


@require_GET
def overview_page(request: HttpRequest) -> HttpResponse:
    form = forms.OverviewForm(request.GET)
    if not form.is_valid():
        return bad_request(request, form)
    sort, descending = form.sort_key()
    context = {
        "form": form,
        "sort": sort,
        "descending": descending,
        "poison_explanation": POISON_EXPLANATION.format(settings.POISON_READ_COUNT),
        "overview": overview.overview(
            search=form.cleaned_data["q"],
            sort=sort,
            descending=descending,
            page=form.cleaned_data["page"] or 1,
            health=form.cleaned_data["health"],
        ),
    }
    return partial_or_page(request, "queues/overview.html", {"overview-live": "queues/_overview_live.html"}, context)


def _queue_figures(queue: Queue, range_s: int) -> dict:
    """What the live region of a queue page shows: figures, health, and the charts' data."""
    stats = single_queue_stats(queue.queue_name)
    if stats is None:
        raise Http404(f"The table of queue “{queue.queue_name}” is gone (the queue was dropped meanwhile).")
    row = overview.row_for(stats)
    charted = history.queue_history(queue.queue_name, now=stats.measured_at, range_s=range_s)
    spread = distributions.distributions(stats)
    points = charted.points
    chart_data = {
        "history": {
            "labels": [point.at.isoformat() for point in points],
            "samples": [point.samples for point in points],
            "visible": [point.visible for point in points],
            "in_flight": [point.in_flight for point in points],
            "delayed": [point.delayed for point in points],
            "backlog_min": [point.backlog_min for point in points],
            "backlog_max": [point.backlog_max for point in points],
            "enqueue_rate": [point.enqueue_rate for point in points],
            "enqueue_rate_max": [point.enqueue_rate_max for point in points],
            "processing_rate": [point.processing_rate for point in points],
            "processing_rate_max": [point.processing_rate_max for point in points],
        },
        "age": {"labels": spread.age.labels, "counts": spread.age.counts},
        "read_ct": {"labels": spread.read_ct.labels, "counts": spread.read_ct.counts},
    }
    return {
        "stats": stats,
        "row": row,
        "spread": spread,
        "chart_data": chart_data,
        "charted": charted,
        "poison_read_count": settings.POISON_READ_COUNT,
        "poison_explanation": POISON_EXPLANATION.format(settings.POISON_READ_COUNT),
        "rate_units": {
            "in": rate_unit([row.rates.enqueue, row.rates.enqueue_1m]),
            "out": rate_unit([row.rates.processing, row.rates.processing_1m]),
        },
        "jobs": jobs.of_queue(queue, limit=5),
    }


@require_GET
def queue_page(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    range_form = forms.RangeForm(request.GET)
    if not range_form.is_valid():
        return bad_request(request, range_form)
    context = {
        "queue": queue,
        "range_form": range_form,
        "range": range_form.cleaned_data["range"] or "1h",
        "ranges": forms.RANGE_LABELS,
        "range_label": forms.RANGE_LABELS[range_form.cleaned_data["range"] or "1h"],
        **_queue_figures(queue, range_form.seconds()),
    }
    jobs_seen(request, context["jobs"])
    if not (request.htmx and request.htmx.target == "queue-live"):
        context["features"] = queue_features(queue)
        context["partitioning"] = partitions.queue_partitioning(queue)
        context["write_refusal"] = _write_refusal(request, queue)
        # A dead-letter queue offers to send everything back to its queue.
        context["send_back_to"] = lineage.queue_of_dead_letters(
            queue.queue_name, list(Queue.objects.values_list("queue_name", flat=True))
        )
    return partial_or_page(request, "queues/queue.html", {"queue-live": "queues/_queue_live.html"}, context)


@require_GET
def queue_poison(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    return render_panel(
        request,
        "queues/_queue_poison.html",
        {"queue": queue, "poison_read_count": settings.POISON_READ_COUNT},
        lambda: {"poison": distributions.top_poison(queue, redacted=redaction.applies_to(request.user))},
    )


@require_GET
def queue_archive_history(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    range_form = forms.RangeForm(request.GET)
    if not range_form.is_valid():
        return bad_request(request, range_form)

    def build() -> dict:
        result = archive.archive_history(queue, range_s=range_form.seconds())
        return {
            "history": result,
            "chart_data": {
                "labels": [point.at.isoformat() for point in result.points],
                "archived": [point.archived for point in result.points],
                "p50": [point.p50_s for point in result.points],
                "p95": [point.p95_s for point in result.points],
                "p99": [point.p99_s for point in result.points],
            },
        }

    return render_panel(
        request,
        "queues/_queue_archive_history.html",
        {
            "queue": queue,
            "range": range_form.cleaned_data["range"] or "1h",
            "range_label": forms.RANGE_LABELS[range_form.cleaned_data["range"] or "1h"],
        },
        build,
    )


@require_GET
def queue_diagnostics(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)

    def build() -> dict:
        stats = single_queue_stats(queue.queue_name)
        if stats is None:
            raise Http404(f"The table of queue “{queue.queue_name}” is gone (the queue was dropped meanwhile).")
        return {"stats": stats, "diagnostics": diagnostics.diagnostics(stats)}

    return render_panel(request, "queues/_queue_diagnostics.html", {"queue": queue}, build)


@require_GET
def message_list(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    form = forms.MessageFilterForm(request.GET)
    if not form.is_valid():
        # The same page, its form holding what was typed and saying what is wrong with it.
        return render(
            request,
            "queues/messages.html",
            {
                "queue": queue,
                "form": form,
                "filter": MessageFilter(
                    source=request.GET.get("source") if request.GET.get("source") in SOURCES else "live"
                ),
                "page": messages.MessagePage(rows=[], has_newer=False, has_older=False, first=None, last=None),
                "page_request": messages.PageRequest(),
                "links": {},
                "live": False,
                "invalid": True,
                "states": STATES,
                "sort_columns": messages.SORT_COLUMNS,
                "sources": SOURCES,
            },
            status=400,
        )
    message_filter = form.message_filter(redacted=redaction.applies_to(request.user))
    page_request = form.page_request()
    page = messages.message_page(queue, message_filter, page_request)
    context = {
        "queue": queue,
        "form": form,
        "filter": message_filter,
        "page": page,
        "page_request": page_request,
        "links": page_links(request, page, page_request),
        # A bounded search is re-run by hand, not every few seconds.
        "live": not message_filter.needs_scan,
        "estimated_total": None if not message_filter.is_empty else _estimated_total(queue, message_filter),
        # Each row links to its message: the queue's part of the URL is reversed once, not fifty times.
        "messages_url": reverse("messages", args=[queue.queue_name]),
        "states": STATES,
        "sort_columns": messages.SORT_COLUMNS,
        "sources": SOURCES,
        "search_budget_s": f"{settings.SEARCH_TIMEOUT_MS / 1000:g}",
        "export_query": _filters_only(request),
        **_action_context(request, queue, message_filter),
    }
    return partial_or_page(request, "queues/messages.html", {"messages-live": "queues/_messages_live.html"}, context)


def _filters_only(request: HttpRequest) -> str:
    """The query string without the list's place in its pages: what an export of the list takes."""
    query = request.GET.copy()
    for key in ("after", "before", "from", "last"):
        query.pop(key, None)
    return query.urlencode()


def _write_refusal(request: HttpRequest, queue: Queue) -> str | None:
    """Why actions are off for a user whose role allows them: the database role may not write."""
    return privileges.write_refusal(queue) if may(request.user, OPERATE) else None


def _action_context(request: HttpRequest, queue: Queue, message_filter: messages.MessageFilter) -> dict:
    """What the message list needs to offer actions: only to those allowed, on one table at a time."""
    write_refusal = _write_refusal(request, queue)
    can_act = may(request.user, OPERATE) and not write_refusal and message_filter.source in (LIVE, ARCHIVE)
    if not can_act:
        return {"can_act": False, "write_refusal": write_refusal}
    query = request.GET.copy()
    for key in ("after", "before", "from", "last"):
        query.pop(key, None)
    return {
        "can_act": True,
        "action_buttons": vocabulary.on_table(message_filter.source),
        "filter_query": query.urlencode(),
    }


def _estimated_total(queue: Queue, message_filter: messages.MessageFilter):
    """How many messages the unfiltered list holds: exact for small tables, else PostgreSQL's estimate.
    Left out (None) when counting takes too long, e.g. while a purge holds the table."""
    try:
        counts = table_row_counts([queue.tables[kind].name for kind in message_filter.sources])
    except OperationalError as error:
        if not took_too_long(error):
            raise
        return None
    found = [counts[queue.tables[kind].name] for kind in message_filter.sources if queue.tables[kind].name in counts]
    return sum(found[1:], found[0]) if found else None


@require_GET
def message_detail(request: HttpRequest, queue_name: str, msg_id: int) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    source = request.GET.get("source")
    if source not in (None, LIVE, ARCHIVE):
        return render(request, "queues/400.html", {"message": "source must be live or archive"}, status=400)
    redacted = redaction.applies_to(request.user)
    message = messages.find_message(queue, msg_id, source=source, redacted=redacted, text_chars=DISPLAY_LIMIT_CHARS)
    if message is None:
        raise Http404(
            f"Message {msg_id} is not in queue “{queue_name}” nor in its archive: it was deleted, or never existed."
        )
    table = queue.tables[message.source]
    return render(
        request,
        "queues/message.html",
        {
            "queue": queue,
            "message": message,
            "has_headers": "headers" in table.columns,
            "action_buttons": vocabulary.on_table(message.source),
            "edit_and_resend": vocabulary.ACTIONS[vocabulary.EDIT_AND_RESEND],
            "write_refusal": _write_refusal(request, queue),
            "redacted": redacted,
            "records_reads": "last_read_at" in table.columns,
            # Cut by the database: the page holds the beginning only; the download gives it whole.
            "too_big": message.message_cut,
            # Headers too can be a megabyte (pgmq sets no limit): cut like the message.
            "headers_too_big": message.headers_cut,
            "fetch_sql": fetch_row_sql(table.name, msg_id),
            # Read from the text the page has: a message cut for the page is not decoded.
            "celery_task": None if message.message_cut else celery_tasks.read_task(message.message_text),
            "origin_chain": copies.origin_chain(queue, message.source, msg_id) if "headers" in table.columns else [],
        },
    )


@require_GET
def message_copies(request: HttpRequest, queue_name: str, msg_id: int) -> HttpResponse:
    """Where a message's copies went: every queue's headers read whole (no index serves them), so a
    region of its own, loaded after the message page, within the search's time budget."""
    queue = get_queue_or_404(queue_name)
    return render(
        request,
        "queues/_message_copies.html",
        {
            "copies_found": copies.copies_in_headers(queue.queue_name, msg_id, budget_ms=settings.SEARCH_TIMEOUT_MS),
            "search_budget_s": f"{settings.SEARCH_TIMEOUT_MS / 1000:g}",
        },
    )


@require_GET
def message_raw(request: HttpRequest, queue_name: str, msg_id: int) -> HttpResponse:
    """The whole message (or with ?part=headers its headers): exactly PostgreSQL's `message::text`,
    streamed from the database in chunks, however big; what the page shortens, this gives in full."""
    queue = get_queue_or_404(queue_name)
    source = request.GET.get("source") or None
    part = request.GET.get("part") or "message"
    if source not in (None, LIVE, ARCHIVE) or part not in ("message", "headers"):
        return render(
            request,
            "queues/400.html",
            {"message": "source must be live or archive, part message or headers"},
            status=400,
        )
    stored = payloads.stored_payload(
        queue, msg_id, column=part, source=source, redacted=redaction.applies_to(request.user)
    )
    if stored is None:
        raise Http404(f"Message {msg_id} is not in queue “{queue_name}” nor in its archive.")
    too_big = download_too_big(request, stored)
    if too_big is not None:
        return too_big
    return payload_download(stored, filename=f"message-{msg_id}{'-headers' if part == 'headers' else ''}.json")


def payload_download(stored: payloads.StoredPayload, *, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stored.encoded_chunks(), content_type="application/json")
    response["Content-Length"] = str(4 if stored.bytes is None else stored.bytes)  # "null" for SQL NULL
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    return response

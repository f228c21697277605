"""What the pages and the API share: finding a queue or a job named in the URL (or a 404), the
links of a message page, the refusal of a download that is too big; and for the pages, a panel
that may time out and the live region an htmx refresh asked for."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from dashboard.databases import took_too_long
from queues import forms, jobs, redaction, services
from queues.access import ADMINISTER, OPERATE, READ_ONLY_REASON, may, read_only
from queues.errors import error_answer
from queues.filters import words_seen
from queues.forms import MAX_MSG_ID
from queues.models import BulkJob
from queues.pgmq import Queue, fetch_row_sql
from queues.selectors import messages, payloads
from queues.vocabulary import ACTIONS

OPERATE_REFUSAL = "acting on messages needs the Operator or Admin role (permission operate_messages)"
ADMINISTER_REFUSAL = "this needs the Admin role (permission administer_queues)"


def _role_required(permission: str, reason: str):
    """The pages' views that change anything, by role: a 403 page for everyone else, and the
    refusal in the audit log; for everyone while the dashboard is read-only (a switch, not an
    attempt to record). `action` names what was asked (None: the form's "action" field)."""

    def naming(action: str | None = None):
        def decorate(view):
            @functools.wraps(view)
            def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                if read_only():
                    raise PermissionDenied(READ_ONLY_REASON)
                if not may(request.user, permission):
                    asked = action or request.POST.get("action", "")
                    services.record_refusal(
                        user=request.user,
                        action=asked if asked in ACTIONS else "act_on_messages",
                        queue_name=kwargs.get("queue_name", ""),
                        reason=reason,
                    )
                    raise PermissionDenied
                return view(request, *args, **kwargs)

            return checked

        return decorate

    return naming


operator_required = _role_required(OPERATE, OPERATE_REFUSAL)
admin_required = _role_required(ADMINISTER, ADMINISTER_REFUSAL)


def get_queue_or_404(queue_name: str) -> Queue:
    """Only a name pgmq.meta lists is ever used to reach a table."""
    # PostgreSQL text cannot hold NUL, so no queue can be named with one: no need to ask.
    queue = None if "\x00" in queue_name else Queue.objects.filter(queue_name=queue_name).first()
    if queue is None:
        raise Http404(f"There is no queue named “{queue_name}” in this database (it may have been dropped).")
    return queue


def get_job_or_404(job_id: int) -> BulkJob:
    job = jobs.in_this_database(job_id) if job_id <= MAX_MSG_ID else None
    if job is None:
        raise Http404(f"There is no bulk job {job_id}.")
    return job


def jobs_seen(request: HttpRequest, shown: list[BulkJob]) -> list[BulkJob]:
    """Jobs with their filter in words as this user may see it (`filter_words_seen`)."""
    redacted = redaction.applies_to(request.user)
    for job in shown:
        job.filter_words_seen = words_seen(job.filter, job.filter_words, redacted=redacted)
    return shown


def page_links(request: HttpRequest, page: messages.MessagePage, page_request: messages.PageRequest) -> dict:
    """Links to the newest, newer, older and oldest pages, every filter kept."""

    def link(**place) -> str:
        query = request.GET.copy()
        for key in ("after", "before", "from", "last"):
            query.pop(key, None)
        # The sort in effect (a jump is always by msg_id), which the cursors below belong to.
        query["sort"] = ("-" if page_request.descending else "") + page_request.sort
        for key, value in place.items():
            query[key] = value
        return "?" + query.urlencode()

    column = page_request.sort
    went_backwards = page_request.before is not None or page_request.last
    return {
        "newest": link() if page.has_newer else None,
        "newer": link(before=forms.encode_cursor(page.first, column)) if page.has_newer and page.first else None,
        "older": link(after=forms.encode_cursor(page.last, column)) if page.has_older and page.last else None,
        "oldest": link(last="1") if page.has_older else None,
        "continue_scan": (
            link(**{"before" if went_backwards else "after": str(page.scan_stopped_at)})
            if page.scan_stopped_at is not None and column == "msg_id"
            else None
        ),
    }


def download_too_big(request: HttpRequest, stored: payloads.StoredPayload) -> HttpResponse | None:
    """The refusal of a payload over DASHBOARD_DOWNLOAD_MAX_BYTES (JSON under /api/), naming the SQL that fetches it."""
    if (stored.bytes or 0) <= settings.DOWNLOAD_MAX_BYTES:
        return None
    fetch_sql = fetch_row_sql(stored.queue.tables[stored.kind].name, stored.msg_id)
    detail = (
        f"message {stored.msg_id}'s {stored.column} is {stored.bytes:,} bytes of JSON, over the "
        f"{settings.DOWNLOAD_MAX_BYTES:,} bytes a download may be (DASHBOARD_DOWNLOAD_MAX_BYTES): fetch it "
        "with SQL"
    )
    return error_answer(
        request,
        413,
        detail,
        "queues/too_big.html",
        {
            "part": stored.column,
            "msg_id": stored.msg_id,
            "size": stored.bytes,
            "limit": settings.DOWNLOAD_MAX_BYTES,
            "fetch_sql": fetch_sql,
            "back_url": reverse("message", args=[stored.queue.queue_name, stored.msg_id]) + f"?source={stored.kind}",
        },
        bytes=stored.bytes,
        limit=settings.DOWNLOAD_MAX_BYTES,
        sql=fetch_sql,
    )


def bad_request(request: HttpRequest, form) -> HttpResponse:
    return render(request, "queues/400.html", {"form": form}, status=400)


def render_panel(request: HttpRequest, template: str, context: dict, build: Callable[[], dict]) -> HttpResponse:
    """A panel of its own: if its query runs past the statement timeout, the panel says so and the
    rest of the page is unharmed."""
    try:
        context.update(build())
    except OperationalError as error:
        if not took_too_long(error):
            raise
        context["timed_out"] = True
        context["timeout_s"] = settings.STATEMENT_TIMEOUT_MS / 1000
    return render(request, template, context)


def partial_or_page(request: HttpRequest, page: str, partials: dict[str, str], context: dict) -> HttpResponse:
    """The whole page, or only the live region an htmx refresh asked for (by its element id)."""
    target = request.htmx.target if request.htmx else None
    return render(request, partials.get(target, page), context)

"""Thin views: find the queue, call a selector, render. Reads only; nothing here changes a message."""
from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from queues import selectors
from queues.pgmq import Queue


def partial_or_page(request: HttpRequest, page: str, partials: dict[str, str], context: dict) -> HttpResponse:
    """The whole page, or only the live region an htmx refresh asked for (by its element id)."""
    target = request.htmx.target if request.htmx else None
    return render(request, partials.get(target, page), context)


def get_queue_or_404(queue_name: str) -> Queue:
    """Only a name pgmq.meta lists is ever used to reach a table."""
    queue = Queue.objects.filter(queue_name=queue_name).first()
    if queue is None:
        raise Http404(f"There is no queue named “{queue_name}” in this database (it may have been dropped).")
    return queue


@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    context = {"rows": selectors.queue_overview()}
    return partial_or_page(request, "queues/overview.html", {"queue-table": "queues/_queue_table.html"}, context)


@require_GET
def queue_detail(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    context = {
        "queue": queue,
        "counts": selectors.queue_state_counts(queue),
        "messages": selectors.latest_messages(queue),
    }
    return partial_or_page(request, "queues/queue_detail.html", {"queue-live": "queues/_queue_live.html"}, context)


"""Alerts: what fires now and what fired before (the sampler evaluates and notifies; nothing here
changes anything)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from queues import forms
from queues.models import AlertEpisode
from queues.selectors import alerts
from queues.shortcuts import bad_request, get_queue_or_404, partial_or_page

ALERTS_PER_PAGE = 50
QUEUE_PANEL_HISTORY = 5


@require_GET
def alerts_page(request: HttpRequest) -> HttpResponse:
    form = forms.AlertHistoryForm(request.GET)
    if not form.is_valid():
        return bad_request(request, form)
    history, older = alerts.alert_history(before=form.cleaned_data["before"], limit=ALERTS_PER_PAGE)
    return partial_or_page(
        request,
        "queues/alerts/page.html",
        {"alerts-open": "queues/alerts/_open.html"},
        {
            "open_alerts": alerts.open_alerts(),
            "history": history,
            "older": older,
            "rules": settings.ALERT_RULES,
        },
    )


@require_GET
def queue_alerts(request: HttpRequest, queue_name: str) -> HttpResponse:
    queue = get_queue_or_404(queue_name)
    history, _older = alerts.alert_history(before=None, limit=QUEUE_PANEL_HISTORY, queue_name=queue.queue_name)
    return render(
        request,
        "queues/alerts/_queue_panel.html",
        {
            "queue": queue,
            "open_alerts": alerts.open_alerts(queue_name=queue.queue_name),
            "resolved": [episode for episode in history if episode.state == AlertEpisode.RESOLVED],
        },
    )

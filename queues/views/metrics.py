"""GET /metrics: every queue's figures for Prometheus, in its text exposition format.

The figures are the overview's own (queues.selectors.overview: one catalog query and index
probes, shared for STATS_CACHE_SECONDS with open overviews), so a scrape costs what an overview
refresh costs and shows the same numbers. Off (404) unless DASHBOARD_METRICS_TOKEN is set; then
only a request bearing that token is answered. It needs no sign-in: Prometheus has no session.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queues.selectors import overview
from queues.selectors.stats import QueueStats, RowCount

logger = logging.getLogger(__name__)

ESTIMATE_NOTE = ("Above DASHBOARD_EXACT_COUNT_LIMIT rows this is PostgreSQL's estimate, not a count: "
                 "pgmq_queue_estimated{figure=...} is then 1.")


class QueueCollector(Collector):
    """One scrape's metrics, read when the registry collects; holds nothing between scrapes."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        try:
            stats = overview.all_queue_stats()
            poison = overview.poison_by_queue(stats)
        except DatabaseError as error:
            # pgmq_up 0 is the answer Prometheus alerts on; a 5xx would only say "scrape failed".
            logger.warning("metrics: the pgmq database did not answer: %s", str(error).strip())
            up = 0
        else:
            up = 1
            yield from _queue_metrics(stats, poison)
        yield GaugeMetricFamily("pgmq_up", "1 when the dashboard could read pgmq's tables for this scrape, else 0.",
                                value=up)
        yield GaugeMetricFamily("pgmq_dashboard_scrape_duration_seconds",
                                "Time the dashboard took to read every queue's figures for this scrape.",
                                value=time.monotonic() - started)


def _gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["queue"])


def _queue_metrics(stats: list[QueueStats], poison: dict[str, overview.PoisonCount]) -> Iterator[Metric]:
    backlog = _gauge("pgmq_queue_backlog", "Messages in the queue's live table (visible, in flight and delayed). "
                     + ESTIMATE_NOTE)
    visible = _gauge("pgmq_queue_visible", "Messages a consumer could read now (backlog minus in flight and delayed). "
                     + ESTIMATE_NOTE)
    in_flight = _gauge("pgmq_queue_in_flight", "Messages read and still within their visibility timeout (exact).")
    delayed = _gauge("pgmq_queue_delayed", "Messages sent with a delay not yet reached, never read (exact).")
    oldest = _gauge("pgmq_queue_oldest_message_age_seconds",
                    "Age of the oldest message in the live table, whatever its state; 0 when the queue is empty.")
    oldest_visible = _gauge("pgmq_queue_oldest_visible_message_age_seconds",
                            "Age of the oldest message a consumer could read now (what the dashboard's health "
                            "uses); 0 when none is visible.")
    sent = CounterMetricFamily("pgmq_queue_messages_sent", "Messages ever sent to the queue: its msg_id sequence "
                               "(starts again from 0 if the queue is dropped and created again).", labels=["queue"])
    archived = _gauge("pgmq_queue_archived", "Messages in the queue's archive table. " + ESTIMATE_NOTE)
    poisoned = _gauge("pgmq_queue_poison",
                      "Messages read DASHBOARD_POISON_READ_COUNT times or more: counted for this scrape where the "
                      "table is small, else the sampler's latest count (at most 10 min old); absent when neither.")
    estimated = GaugeMetricFamily("pgmq_queue_estimated",
                                  "1 when the figure named (backlog, visible, archived) is PostgreSQL's estimate, "
                                  "0 when it was counted.", labels=["queue", "figure"])
    for queue in stats:
        labels = [queue.name]
        backlog.add_metric(labels, queue.backlog.value)
        visible.add_metric(labels, queue.visible.value)
        in_flight.add_metric(labels, queue.in_flight)
        delayed.add_metric(labels, queue.delayed)
        oldest.add_metric(labels, queue.oldest_age_s or 0.0)
        oldest_visible.add_metric(labels, queue.oldest_visible_age_s or 0.0)
        sent.add_metric(labels, queue.sent_total)
        counted: dict[str, RowCount] = {"backlog": queue.backlog, "visible": queue.visible}
        if queue.archived is not None:
            archived.add_metric(labels, queue.archived.value)
            counted["archived"] = queue.archived
        if queue.name in poison:
            poisoned.add_metric(labels, poison[queue.name].value)
        for figure, count in counted.items():
            estimated.add_metric([queue.name, figure], 0 if count.exact else 1)
    yield from (backlog, visible, in_flight, delayed, oldest, oldest_visible, sent, archived, poisoned, estimated)


def _bears_the_token(request: HttpRequest) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a header may hold anything.
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(),
                                                              settings.METRICS_TOKEN.encode())


@login_not_required
@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("Metrics are off: set DASHBOARD_METRICS_TOKEN to turn them on.")
    if not _bears_the_token(request):
        response = HttpResponse("A bearer token is required: Authorization: Bearer <DASHBOARD_METRICS_TOKEN>\n",
                                status=401, content_type="text/plain; charset=utf-8")
        response["WWW-Authenticate"] = 'Bearer realm="pgmq-dashboard metrics"'
        return response
    # A registry of this request's own: nothing is registered globally, nothing outlives the scrape.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)

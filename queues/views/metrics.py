"""GET /metrics: every queue's figures for Prometheus, in its text exposition format.

The figures are the overview's own (queues.selectors.overview.every_queue): up to
OVERVIEW_PROBE_ALL_UP_TO queues one catalog query and index probes, shared for STATS_CACHE_SECONDS
with open overviews; above it the sampler's latest round, its age in
pgmq_dashboard_figures_age_seconds, so a scrape of 10,000 queues reads stored rows instead of
probing 10,000 tables. Off (404) unless DASHBOARD_METRICS_TOKEN is set; then
only a request bearing that token is answered. It needs no sign-in: Prometheus has no session.
Every watched database is in one scrape, each series labelled with its name (`database`). Names
sharing one table (pgmq.TableSharing) are reported once, under the name created first, so a sum()
counts the table once; pgmq_queue_shared_tables says where the others went.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queues.pgmq import TableSharing, table_sharing
from queues.selectors import overview
from queues.selectors.history import SampledQueue
from queues.selectors.stats import QueueStats, RowCount
from queues.watched import watched_aliases, watched_name, watching

logger = logging.getLogger(__name__)

ESTIMATE_NOTE = (
    "Above DASHBOARD_EXACT_COUNT_LIMIT rows this is PostgreSQL's estimate, not a count: "
    "pgmq_queue_estimated{figure=...} is then 1."
)


class QueueCollector(Collector):
    """One scrape's metrics, read when the registry collects; holds nothing between scrapes."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily(
            "pgmq_up",
            "1 when the dashboard could read this database's pgmq tables for this scrape, else 0.",
            labels=["database"],
        )
        age = GaugeMetricFamily(
            "pgmq_dashboard_figures_age_seconds",
            "0 when this scrape probed every queue; above DASHBOARD_OVERVIEW_PROBE_ALL_UP_TO queues, the "
            "age of the sampler's latest round, which the figures then come from.",
            labels=["database"],
        )
        families: dict[str, Metric] = {}
        for alias in watched_aliases():
            with watching(alias):
                try:
                    found = overview.every_queue()
                    sharing = table_sharing()
                except DatabaseError as error:
                    # pgmq_up 0 is the answer Prometheus alerts on; a 5xx would only say "scrape failed".
                    logger.warning(
                        "metrics: the pgmq database %s did not answer: %s", watched_name(), str(error).strip()
                    )
                    up.add_metric([watched_name()], 0)
                    continue
                up.add_metric([watched_name()], 1)
                age.add_metric([watched_name()], _age_s(found.sampled_at))
                _add_queue_metrics(families, watched_name(), found.figures, found.poison, sharing)
        yield from families.values()
        yield up
        yield age
        yield GaugeMetricFamily(
            "pgmq_dashboard_scrape_duration_seconds",
            "Time the dashboard took to read every queue's figures for this scrape.",
            value=time.monotonic() - started,
        )


QUEUE_GAUGES = {
    "pgmq_queue_backlog": "Messages in the queue's live table (visible, in flight and delayed). " + ESTIMATE_NOTE,
    "pgmq_queue_visible": "Messages a consumer could read now (backlog minus in flight and delayed). " + ESTIMATE_NOTE,
    "pgmq_queue_in_flight": "Messages read and still within their visibility timeout (exact).",
    "pgmq_queue_delayed": "Messages sent with a delay not yet reached, never read (exact).",
    "pgmq_queue_oldest_message_age_seconds": (
        "Age of the oldest message in the live table, whatever its state; 0 when the queue is empty."
    ),
    "pgmq_queue_oldest_visible_message_age_seconds": (
        "Age of the oldest message a consumer could read now (what the dashboard's health uses); 0 when none is "
        "visible."
    ),
    "pgmq_queue_archived": "Messages in the queue's archive table. " + ESTIMATE_NOTE,
    "pgmq_queue_poison": (
        "Messages read DASHBOARD_POISON_READ_COUNT times or more: counted for this scrape where the table is small, "
        "else the sampler's latest count (at most 10 min old); absent when neither."
    ),
}
SENT_HELP = (
    "Messages ever sent to the queue: its msg_id sequence (starts again from 0 if the queue is dropped and "
    "created again)."
)
ESTIMATED_HELP = "1 when the figure named (backlog, visible, archived) is PostgreSQL's estimate, 0 when it was counted."
SHARED_HELP = (
    "1 for a queue name whose tables pgmq also gives the name reported_as, created before it (pgmq "
    "lowercases names: Foo and FOO share q_foo). Its figures are that table's, reported once, under "
    "reported_as."
)


def _families() -> dict[str, Metric]:
    families: dict[str, Metric] = {
        name: GaugeMetricFamily(name, documentation, labels=["database", "queue"])
        for name, documentation in QUEUE_GAUGES.items()
    }
    families["pgmq_queue_messages_sent"] = CounterMetricFamily(
        "pgmq_queue_messages_sent", SENT_HELP, labels=["database", "queue"]
    )
    families["pgmq_queue_estimated"] = GaugeMetricFamily(
        "pgmq_queue_estimated", ESTIMATED_HELP, labels=["database", "queue", "figure"]
    )
    families["pgmq_queue_shared_tables"] = GaugeMetricFamily(
        "pgmq_queue_shared_tables", SHARED_HELP, labels=["database", "queue", "reported_as"]
    )
    return families


def _add_queue_metrics(
    families: dict[str, Metric],
    database: str,
    stats: list[QueueStats | SampledQueue],
    poison: dict[str, overview.PoisonCount],
    sharing: dict[str, TableSharing],
) -> None:
    if not families:
        families.update(_families())
    reported = {queue.name for queue in stats}
    for queue in stats:
        labels = [database, queue.name]
        shared = sharing.get(queue.name)
        if shared and shared.first_listed != queue.name and shared.first_listed in reported:
            families["pgmq_queue_shared_tables"].add_metric([*labels, shared.first_listed], 1)
            continue
        families["pgmq_queue_backlog"].add_metric(labels, queue.backlog.value)
        families["pgmq_queue_visible"].add_metric(labels, queue.visible.value)
        families["pgmq_queue_in_flight"].add_metric(labels, queue.in_flight)
        families["pgmq_queue_delayed"].add_metric(labels, queue.delayed)
        families["pgmq_queue_oldest_message_age_seconds"].add_metric(labels, queue.oldest_age_s or 0.0)
        families["pgmq_queue_oldest_visible_message_age_seconds"].add_metric(labels, queue.oldest_visible_age_s or 0.0)
        families["pgmq_queue_messages_sent"].add_metric(labels, queue.sent_total)
        counted: dict[str, RowCount] = {"backlog": queue.backlog, "visible": queue.visible}
        if queue.archived is not None:
            families["pgmq_queue_archived"].add_metric(labels, queue.archived.value)
            counted["archived"] = queue.archived
        if queue.name in poison:
            families["pgmq_queue_poison"].add_metric(labels, poison[queue.name].value)
        for figure, count in counted.items():
            families["pgmq_queue_estimated"].add_metric([*labels, figure], 0 if count.exact else 1)


def _age_s(sampled_at: datetime | None) -> float:
    return 0.0 if sampled_at is None else max((timezone.now() - sampled_at).total_seconds(), 0.0)


def _bears_the_token(request: HttpRequest) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a header may hold anything.
    return scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), settings.METRICS_TOKEN.encode())


@login_not_required
@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("Metrics are off: set DASHBOARD_METRICS_TOKEN to turn them on.")
    if not _bears_the_token(request):
        response = HttpResponse(
            "A bearer token is required: Authorization: Bearer <DASHBOARD_METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="pgmq-dashboard metrics"'
        return response
    # A registry of this request's own: nothing is registered globally, nothing outlives the scrape.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)

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

The per-queue series are written by QueueSeries, in the text that prometheus_client's
generate_latest writes (a test holds them to it): its writer validates and escapes the labels of
each sample, which took 1.1 s of a 1.6 s scrape of 10,000 queues (120,000 samples); here a queue's
labels are escaped once. The scrape's own few series go through prometheus_client.
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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class ScrapeCollector(Collector):
    """One scrape: every watched database read when the registry collects, which yields the
    scrape's own series and leaves the queues' in `queue_series`; holds nothing between scrapes."""

    def __init__(self) -> None:
        self.queue_series: QueueSeries | None = None  # None: no database answered

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
                self.queue_series = self.queue_series or QueueSeries()
                self.queue_series.add(watched_name(), found.figures, found.poison, sharing)
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


# Each per-queue family: (its type, its help); a counter's samples and TYPE line end in _total.
QUEUE_FAMILIES = {
    **{name: ("gauge", documentation) for name, documentation in QUEUE_GAUGES.items()},
    "pgmq_queue_messages_sent": ("counter", SENT_HELP),
    "pgmq_queue_estimated": ("gauge", ESTIMATED_HELP),
    "pgmq_queue_shared_tables": ("gauge", SHARED_HELP),
}
SAMPLE_NAMES = {
    family: f"{family}_total" if kind == "counter" else family for family, (kind, _) in QUEUE_FAMILIES.items()
}


def _label(value: str) -> str:
    """A label value escaped as the text format wants it (prometheus_client escapes these three)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class QueueSeries:
    """The per-queue series of a scrape, every watched database's, as sample lines per family."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {name: [] for name in QUEUE_FAMILIES}

    def add(
        self,
        database: str,
        stats: list[QueueStats | SampledQueue],
        poison: dict[str, overview.PoisonCount],
        sharing: dict[str, TableSharing],
    ) -> None:
        reported = {queue.name for queue in stats}
        database_label = f'database="{_label(database)}"'
        for queue in stats:
            queue_label = f'queue="{_label(queue.name)}"'
            labels = f"{{{database_label},{queue_label}}}"
            shared = sharing.get(queue.name)
            if shared and shared.first_listed != queue.name and shared.first_listed in reported:
                self._add(
                    "pgmq_queue_shared_tables",
                    f'{{{database_label},{queue_label},reported_as="{_label(shared.first_listed)}"}}',
                    1,
                )
                continue
            self._add("pgmq_queue_backlog", labels, queue.backlog.value)
            self._add("pgmq_queue_visible", labels, queue.visible.value)
            self._add("pgmq_queue_in_flight", labels, queue.in_flight)
            self._add("pgmq_queue_delayed", labels, queue.delayed)
            self._add("pgmq_queue_oldest_message_age_seconds", labels, queue.oldest_age_s or 0.0)
            self._add("pgmq_queue_oldest_visible_message_age_seconds", labels, queue.oldest_visible_age_s or 0.0)
            self._add("pgmq_queue_messages_sent", labels, queue.sent_total)
            counted: dict[str, RowCount] = {"backlog": queue.backlog, "visible": queue.visible}
            if queue.archived is not None:
                self._add("pgmq_queue_archived", labels, queue.archived.value)
                counted["archived"] = queue.archived
            if queue.name in poison:
                self._add("pgmq_queue_poison", labels, poison[queue.name].value)
            for figure, count in counted.items():
                self._add(
                    "pgmq_queue_estimated",
                    f'{{{database_label},figure="{figure}",{queue_label}}}',
                    0 if count.exact else 1,
                )

    def _add(self, family: str, labels: str, value: float) -> None:
        self.lines[family].append(f"{SAMPLE_NAMES[family]}{labels} {floatToGoString(value)}\n")

    def text(self) -> str:
        written = []
        for family, (kind, documentation) in QUEUE_FAMILIES.items():
            name = SAMPLE_NAMES[family]
            help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
            written += [f"# HELP {name} {help_text}\n", f"# TYPE {name} {kind}\n", *self.lines[family]]
        return "".join(written)


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
    scrape = ScrapeCollector()
    registry.register(scrape)
    own_series = generate_latest(registry)  # reads every database, filling scrape.queue_series
    queue_series = scrape.queue_series.text().encode() if scrape.queue_series else b""
    return HttpResponse(queue_series + own_series, content_type=CONTENT_TYPE_PLAIN_0_0_4)

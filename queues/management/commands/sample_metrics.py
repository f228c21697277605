"""The metric sampler: pgmq keeps no history, so this stores every queue's figures every few seconds.

Run it as its own long-lived process beside the web server (`make run` does; see README for
production). One sampler per dashboard database is enough; two would only store twice. It samples
every watched database in turn.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction
from django.db.models import Model

from dashboard.databases import first_line
from queues.alerting import evaluate_alerts, readings_from
from queues.forecast import eta_from_rates
from queues.models import QueueSample, SamplerRound
from queues.selectors import history
from queues.selectors.overview import verdicts
from queues.selectors.stats import one_per_table, poison_counts, queue_stats
from queues.watched import watched_aliases, watched_name, watching

logger = logging.getLogger("sampler")
PRUNE_BATCH = 10_000
PRUNE_BATCHES_PER_ROUND = 10


def take_sample(*, count_poison_everywhere: bool) -> int:
    """Store one sample of every queue, and the round that took them; the number stored.

    Poison is counted live where a table is small; big tables are scanned for it only when
    count_poison_everywhere (the sampler does that about once a minute). Each sample keeps the
    queue's rates and health too: above OVERVIEW_PROBE_ALL_UP_TO queues the overview sorts and
    counts by the latest round instead of probing every queue.
    """
    started = time.monotonic()
    stats = queue_stats()
    # Names sharing a table (pgmq.TableSharing) each get their sample, but the table is scanned once.
    unknown = one_per_table([queue for queue in stats if queue.poison is None]) if count_poison_everywhere else []
    counted = poison_counts(unknown)
    slow_poison = {queue.live.name: counted[queue.name] for queue in unknown if queue.name in counted}
    poison = {
        queue.name: queue.poison if queue.poison is not None else slow_poison.get(queue.live.name) for queue in stats
    }
    rates = history.rates(stats)
    # Health as the overview judges it: a big table's poison is the latest one counted.
    uncounted = [name for name, count in poison.items() if count is None]
    latest_poison = history.latest_poison_counts(uncounted, stats[0].measured_at) if uncounted else {}
    if not stats:
        return 0
    judged_poison = {
        name: count if count is not None else latest_poison.get(name, (None,))[0] for name, count in poison.items()
    }
    health = verdicts(stats, judged_poison, levels_only=True)  # a sample keeps the level alone
    with transaction.atomic(
        using=settings.DASHBOARD_DATABASE_ALIAS
    ):  # a reader finds a round with all its samples or not at all
        sampler_round = SamplerRound.objects.create(
            database=watched_name(),
            started_at=min(queue.measured_at for queue in stats),
            finished_at=max(queue.measured_at for queue in stats),
            queues=len(stats),
            seconds=time.monotonic() - started,
        )
        _store_samples(sampler_round, stats, poison, health, rates)
    try:
        evaluate_alerts(readings_from(stats, poison))
    except Exception:  # the history is stored: a fault in alerting must not stop the sampler keeping it
        logger.exception("alert evaluation failed for %s", watched_name())
    SamplerRound.objects.filter(pk=sampler_round.pk).update(seconds=time.monotonic() - started)
    return len(stats)


def _store_samples(sampler_round: SamplerRound, stats, poison, health, rates) -> None:
    database = watched_name()
    _copy_into(
        QueueSample,
        (
            dict(
                round_id=sampler_round.pk,
                database=database,
                queue_name=queue.name,
                sampled_at=queue.measured_at,
                backlog=queue.backlog.value,
                backlog_exact=queue.backlog.exact,
                visible=queue.visible.value,
                in_flight=queue.in_flight,
                delayed=queue.delayed,
                not_visible_exact=queue.not_visible_exact,
                oldest_age_s=queue.oldest_age_s,
                newest_age_s=queue.newest_age_s,
                oldest_visible_age_s=queue.oldest_visible_age_s,
                sent_total=queue.sent_total,
                removed_total=queue.live.removed_total,
                archived=queue.archived.value if queue.archived else None,
                archived_exact=queue.archived.exact if queue.archived else None,
                poison=poison[queue.name],
                enqueue_rate=rates[queue.name].enqueue,
                processing_rate=rates[queue.name].processing,
                enqueue_rate_1m=rates[queue.name].enqueue_1m,
                processing_rate_1m=rates[queue.name].processing_1m,
                drain_eta_s=eta_from_rates(
                    queue.backlog.value, rates[queue.name].enqueue, rates[queue.name].processing
                ),
                health=health[queue.name].state,
            )
            for queue in stats
        ),
    )


def _copy_into(model: type[Model], rows: Iterable[dict[str, object]]) -> None:
    """Rows, each every column's value by its field's attname, written with COPY: a round at 10,000
    queues took seconds in bulk_create's SQL alone, and half a second more in model instances."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    connection = connections[settings.DASHBOARD_DATABASE_ALIAS]
    statement = "COPY {} ({}) FROM STDIN".format(
        connection.ops.quote_name(model._meta.db_table), ", ".join(connection.ops.quote_name(f.column) for f in fields)
    )
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([row[field.attname] for field in fields])


def sample_every_database(*, count_poison_everywhere: bool) -> list[str]:
    """take_sample() in each watched database in turn; the names of those that failed. One that
    fails (stopped, unreachable) is said in one line and skipped this round: it never stops the
    others."""
    failed = []
    for alias in watched_aliases():
        with watching(alias):
            try:
                take_sample(count_poison_everywhere=count_poison_everywhere)
            except DatabaseError as error:
                # The database may be restarting: try again next round, on fresh connections.
                logger.warning("sample of %s skipped: %s", watched_name(), first_line(error))
                failed.append(watched_name())
                connections[alias].close()
                connections[settings.DASHBOARD_DATABASE_ALIAS].close()
    return failed


def prune_samples(*, older_than: timedelta) -> int:
    """Delete samples past retention, a bounded batch at a time so no statement runs long."""
    deleted = 0
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    for _ in range(PRUNE_BATCHES_PER_ROUND):
        ids = list(
            QueueSample.objects.filter(sampled_at__lt=now - older_than)
            .order_by("sampled_at")
            .values_list("id", flat=True)[:PRUNE_BATCH]
        )
        if not ids:
            break
        with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
            deleted += QueueSample.objects.filter(id__in=ids).delete()[0]
    # A round goes once the last of its samples has (they are all older than it).
    SamplerRound.objects.filter(finished_at__lt=now - older_than, samples__isnull=True).delete()
    return deleted


class Command(BaseCommand):
    help = "Store every queue's figures every few seconds (the dashboard's metric history) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.SAMPLE_INTERVAL_SECONDS,
            help="seconds between samples (default DASHBOARD_SAMPLE_INTERVAL_SECONDS)",
        )
        parser.add_argument("--once", action="store_true", help="take one sample (poison counted everywhere) and exit")

    def handle(self, *args: object, interval: float, once: bool, **options: object) -> None:
        if once:
            failed = sample_every_database(count_poison_everywhere=True)
            if failed:
                raise CommandError(f"could not sample {', '.join(failed)} (see the log above)")
            return
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        rounds_per_minute = max(int(60 / interval), 1)
        retention = timedelta(days=settings.METRICS_RETENTION_DAYS)
        self.stdout.write(f"sampling every {interval:g} s, keeping {settings.METRICS_RETENTION_DAYS} days")
        round_number = 0
        while not stopping.is_set():
            started = time.monotonic()
            sample_every_database(count_poison_everywhere=round_number % rounds_per_minute == 0)
            if round_number % rounds_per_minute == 0:
                try:
                    prune_samples(older_than=retention)
                except DatabaseError as error:
                    logger.warning("pruning old samples skipped: %s", first_line(error))
                    connections[settings.DASHBOARD_DATABASE_ALIAS].close()
            round_number += 1
            took = time.monotonic() - started
            if took > interval:
                # Sampling back to back would keep the databases busy all the time: wait as long as
                # the round took, so at most half the time goes to sampling.
                logger.warning(
                    "a round took %.1f s, longer than the %g s interval: sampling every %.1f s instead",
                    took,
                    interval,
                    2 * took,
                )
            stopping.wait(took if took > interval else interval - took)

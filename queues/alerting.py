"""Alerting: the sampler evaluates settings.ALERT_RULES on the figures it just measured, moves each
(database, rule, queue) between pending, firing and resolved, and notifies webhooks and e-mail
addresses on firing and on resolved only (again while firing only if the rule has `repeat`).

Notifications are rows first (AlertNotification) and sent after: a receiver that is down or slow
costs at most ALERT_NOTIFY_TIMEOUT_SECONDS per round, and its notification is sent again next
round. Sending happens in threads; every database write stays in the sampler's own thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from dashboard.databases import first_line
from queues.forecast import Forecast, Point
from queues.formatting import duration
from queues.models import AlertEpisode, AlertNotification, QueueSample
from queues.rules import AlertRule
from queues.selectors.forecasts import forecasts
from queues.selectors.stats import QueueStats
from queues.watched import database_path_prefix, watched_name

logger = logging.getLogger("alerting")

MEASURE_WORDS = {
    "oldest_age": "oldest waiting message",
    "visible": "visible messages",
    "backlog_growth": "backlog growth",
    "poison": "poison messages",
    "consumer_silence": "consumers silent for",
    "drain_eta": "time to drain",
}
# A notification not delivered within this long is given up (it would only be noise by then).
GIVE_UP_AFTER = timedelta(hours=24)
SENDING_THREADS = 8
# Samples are written once a round, so a window's edge is found within a few rounds of it.
HISTORY_SLACK = timedelta(minutes=2)


@dataclass(frozen=True)
class Reading:
    """What the rules look at for one queue, from the figures the sampler just took."""

    queue_name: str
    measured_at: datetime
    oldest_visible_age_s: float | None
    visible: int
    backlog: int
    poison: int | None
    removed_total: int | None
    in_flight: int
    table: str  # the live table: names sharing one (pgmq.TableSharing) are alerted on once
    sent_total: int | None = None


def readings_from(stats: list[QueueStats], poison: dict[str, int | None]) -> list[Reading]:
    return [
        Reading(
            queue_name=queue.name,
            measured_at=queue.measured_at,
            oldest_visible_age_s=queue.oldest_visible_age_s,
            visible=queue.visible.value,
            backlog=queue.backlog.value,
            poison=poison.get(queue.name),
            removed_total=queue.live.removed_total,
            in_flight=queue.in_flight,
            table=queue.live.name,
            sent_total=queue.sent_total,
        )
        # Of names sharing a table, the one created first comes first: the alert is under its name.
        for queue in sorted(stats, key=lambda queue: (queue.queue.created_at, queue.name))
    ]


def rules_for_database(database: str) -> list[AlertRule]:
    return [rule for rule in settings.ALERT_RULES if rule.matches_database(database)]


# -- measures ----------------------------------------------------------------------------------


def _samples_since(queue_names: list[str], since: datetime) -> dict[str, list[tuple]]:
    """The sampler's history of these queues since `since`, oldest first: (sampled_at, backlog,
    in_flight, removed_total) per sample."""
    samples = QueueSample.objects.filter(database=watched_name(), queue_name__in=queue_names, sampled_at__gte=since)
    history: dict[str, list[tuple]] = {name: [] for name in queue_names}
    for name, *row in samples.order_by("queue_name", "sampled_at").values_list(
        "queue_name", "sampled_at", "backlog", "in_flight", "removed_total"
    ):
        history[name].append(tuple(row))
    return history


def backlog_growth(reading: Reading, history: list[tuple], window_s: float) -> float | None:
    """Backlog now minus the backlog of the last sample at least `window_s` old; None while the
    history is shorter than the window."""
    edge = reading.measured_at - timedelta(seconds=window_s)
    before = [backlog for sampled_at, backlog, _in_flight, _removed in history if sampled_at <= edge]
    return float(reading.backlog - before[-1]) if before else None


def consumer_silence(reading: Reading, history: list[tuple], threshold_s: float) -> float | None:
    """How long messages have waited with no sign of a consumer, from the sampler's history.

    A sign is a message in flight (read, not yet finished) or messages leaving the live table
    (archived or deleted: pg_stat's count of rows deleted moved between two samples). pgmq's
    last_read_at is not used: it exists from 1.10 only and is not indexed. 0 while nothing waits;
    None when the history is too short to tell.
    """
    if reading.visible == 0 or reading.in_flight > 0:
        return 0.0
    last_sign = None
    for (at, _backlog, in_flight, removed), (next_at, *_, next_removed) in pairwise(history):
        if in_flight > 0:
            last_sign = at
        if removed != next_removed:
            last_sign = next_at
    if last_sign is not None:
        return (reading.measured_at - last_sign).total_seconds()
    if history and (reading.measured_at - history[0][0]).total_seconds() >= threshold_s:
        return (reading.measured_at - history[0][0]).total_seconds()
    return None


def measure_value(
    rule: AlertRule, reading: Reading, history: list[tuple], forecast: Forecast | None = None
) -> float | None:
    """The rule's measure on this queue now; None when it cannot be told this round (the state is
    then left as it is). drain_eta is the forecast's: infinite when the queue will not drain."""
    measure = rule.measure
    if measure == "drain_eta":
        return forecast.eta_s if forecast else None
    if measure == "oldest_age":
        return reading.oldest_visible_age_s or 0.0  # nothing waiting: nothing is late
    if measure == "visible":
        return float(reading.visible)
    if measure == "poison":
        return None if reading.poison is None else float(reading.poison)
    if measure == "backlog_growth":
        return backlog_growth(reading, history, rule.window_s)
    return consumer_silence(reading, history, rule.threshold)


def describe(measure: str, value: float | None) -> str:
    if value is None:
        return "unknown"
    if measure == "drain_eta" and math.isinf(value):
        return "∞, it will not drain"
    if measure in ("oldest_age", "consumer_silence", "drain_eta"):
        return duration(value)
    return f"{value:+,.0f}" if measure == "backlog_growth" else f"{value:,.0f}"


# -- evaluation --------------------------------------------------------------------------------


def evaluate_alerts(readings: list[Reading]) -> None:
    """Evaluate every rule for the database being watched on these readings (one sampler round),
    then send what is due. Called by the sampler once per database and round."""
    database = watched_name()
    rules = rules_for_database(database)
    open_episodes = {
        (episode.rule, episode.queue_name): episode
        for episode in AlertEpisode.objects.filter(
            database=database, state__in=[AlertEpisode.PENDING, AlertEpisode.FIRING]
        )
    }
    if rules:
        history = _history_for(rules, readings)
        drains = _forecasts_for(rules, readings)
        for rule in rules:
            evaluated_tables = set()
            for reading in readings:
                if not rule.matches_queue(reading.queue_name) or reading.table in evaluated_tables:
                    continue
                evaluated_tables.add(reading.table)
                value = measure_value(
                    rule, reading, history.get(reading.queue_name, []), drains.get(reading.queue_name)
                )
                episode = open_episodes.pop((rule.name, reading.queue_name), None)
                _step(database, rule, reading, value, episode)
    # Open episodes no rule looked at: the queue was dropped, or the rule changed or went away.
    for episode in open_episodes.values():
        _close(episode, now=timezone.now(), because="no longer evaluated (queue dropped or rule changed)")
    deliver_notifications(database)


def _history_for(rules: list[AlertRule], readings: list[Reading]) -> dict[str, list[tuple]]:
    spans = [
        2 * rule.window_s if rule.measure == "backlog_growth" else 2 * rule.threshold
        for rule in rules
        if rule.measure in ("backlog_growth", "consumer_silence")
    ]
    if not spans or not readings:
        return {}
    names = [
        reading.queue_name for reading in readings if any(rule.matches_queue(reading.queue_name) for rule in rules)
    ]
    since = max(reading.measured_at for reading in readings) - timedelta(seconds=max(spans)) - HISTORY_SLACK
    return _samples_since(names, since)


def _forecasts_for(rules: list[AlertRule], readings: list[Reading]) -> dict[str, Forecast]:
    drain_rules = [rule for rule in rules if rule.measure == "drain_eta"]
    return forecasts(
        {
            reading.queue_name: Point(reading.measured_at, reading.backlog, reading.sent_total, reading.removed_total)
            for reading in readings
            if any(rule.matches_queue(reading.queue_name) for rule in drain_rules)
        }
    )


def _step(database: str, rule: AlertRule, reading: Reading, value: float | None, episode: AlertEpisode | None) -> None:
    now = reading.measured_at
    if value is None:
        return
    breached = value >= rule.threshold
    if episode is None:
        if not breached:
            return
        episode = AlertEpisode(
            database=database,
            rule=rule.name,
            queue_name=reading.queue_name,
            measure=rule.measure,
            threshold=rule.threshold,
            pending_since=now,
        )
    if not breached:
        if episode.state == AlertEpisode.PENDING:
            episode.delete()  # cleared before its `for`: it never fired, so it is not history
        else:
            episode.value = value
            _close(episode, now=now, because="back under the threshold")
        return
    episode.value = value
    episode.peak_value = max(value, episode.peak_value or value)
    with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
        if episode.state == AlertEpisode.PENDING and (now - episode.pending_since).total_seconds() >= rule.for_s:
            episode.state, episode.fired_at, episode.last_notified_at = AlertEpisode.FIRING, now, now
            episode.save()
            _queue_notifications(episode, rule, AlertEpisode.FIRING)
            logger.warning(
                "alert firing: %s on queue %r (%s): %s",
                rule.name,
                reading.queue_name,
                database,
                describe(rule.measure, value),
            )
        elif (
            episode.state == AlertEpisode.FIRING
            and rule.repeat_s
            and (now - episode.last_notified_at).total_seconds() >= rule.repeat_s
        ):
            episode.last_notified_at = now
            episode.save()
            _queue_notifications(episode, rule, AlertEpisode.FIRING)
        else:
            episode.save()


def _close(episode: AlertEpisode, *, now: datetime, because: str) -> None:
    with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
        if episode.state == AlertEpisode.PENDING:
            episode.delete()
            return
        episode.state, episode.resolved_at, episode.resolved_because = AlertEpisode.RESOLVED, now, because
        episode.save()
        rule = next((rule for rule in settings.ALERT_RULES if rule.name == episode.rule), None)
        if rule is not None:
            _queue_notifications(episode, rule, AlertEpisode.RESOLVED)
    logger.info("alert resolved: %s on queue %r (%s): %s", episode.rule, episode.queue_name, episode.database, because)


def _webhook_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def _queue_notifications(episode: AlertEpisode, rule: AlertRule, status: str) -> None:
    AlertNotification.objects.bulk_create(
        [
            AlertNotification(
                episode=episode,
                status=status,
                channel=AlertNotification.WEBHOOK,
                destination=webhook.label,
                destination_key=_webhook_key(webhook.url),
            )
            for webhook in rule.webhooks
        ]
        + [
            AlertNotification(
                episode=episode,
                status=status,
                channel=AlertNotification.EMAIL,
                destination=address,
                destination_key=address,
            )
            for address in rule.emails
        ]
    )


# -- notifications -----------------------------------------------------------------------------


def queue_link(episode: AlertEpisode) -> str | None:
    if not settings.BASE_URL:
        return None
    # Made outside any request: the database's part of the address is added here.
    return settings.BASE_URL + database_path_prefix(episode.database) + reverse("queue", args=[episode.queue_name])


def summary(episode: AlertEpisode, status: str) -> str:
    value = describe(episode.measure, episode.value)
    threshold = describe(episode.measure, episode.threshold).lstrip("+")
    return (
        f"[{status.upper()}] {episode.rule}: queue {episode.queue_name!r} in {episode.database}: "
        f"{MEASURE_WORDS[episode.measure]} {value} (threshold {threshold})"
    )


def slack_escaped(text: str) -> str:
    """Slack reads <...> as links and mentions: a queue name must not make one."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(episode: AlertEpisode, status: str) -> dict:
    """Slack's incoming webhooks read `text`; anything else reads the fields beside it."""
    link = queue_link(episode)
    return {
        "text": slack_escaped(summary(episode, status)) + (f" <{link}|open>" if link else ""),
        "status": status,
        "rule": episode.rule,
        "measure": episode.measure,
        "queue": episode.queue_name,
        "database": episode.database,
        # JSON has no infinity: a queue that will not drain has no value, and says so in `text`.
        "value": episode.value if episode.value is None or math.isfinite(episode.value) else None,
        "threshold": episode.threshold,
        "started_at": episode.fired_at.isoformat() if episode.fired_at else None,
        "resolved_at": episode.resolved_at.isoformat() if episode.resolved_at else None,
        "url": link,
    }


def _post_webhook(url: str, body: dict) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "pgmq-dashboard"},
    )
    with urllib.request.urlopen(request, timeout=settings.ALERT_NOTIFY_TIMEOUT_SECONDS) as response:
        response.read(1024)


def _send_email(address: str, episode: AlertEpisode, status: str) -> None:
    link = queue_link(episode)
    body = "\n".join(
        [
            summary(episode, status),
            "",
            f"Rule: {episode.rule}",
            f"Database: {episode.database}",
            f"Queue: {episode.queue_name}",
            (
                f"Measure: {episode.measure}, value {describe(episode.measure, episode.value)}, "
                f"threshold {describe(episode.measure, episode.threshold).lstrip('+')}"
            ),
            f"Firing since: {episode.fired_at:%Y-%m-%d %H:%M:%S} UTC" if episode.fired_at else "",
            f"Resolved: {episode.resolved_at:%Y-%m-%d %H:%M:%S} UTC ({episode.resolved_because})"
            if episode.resolved_at
            else "",
            link or "",
        ]
    )
    # Header injection: Django refuses newlines in subjects, and a queue name may hold them.
    subject = " ".join(summary(episode, status).split())
    send_mail(subject, body.strip() + "\n", None, [address], fail_silently=False)


def _deliver(notification: AlertNotification, webhook_url: str | None) -> str | None:
    """Send one notification; the error in one line, or None when delivered. Runs in a thread."""
    try:
        if notification.channel == AlertNotification.WEBHOOK:
            _post_webhook(webhook_url, webhook_body(notification.episode, notification.status))
        else:
            _send_email(notification.destination, notification.episode, notification.status)
    except Exception as error:  # noqa: BLE001 - any failure of a receiver is recorded and retried
        # urllib's messages never hold the URL, so the secret stays out of the record.
        return first_line(error)[:500] or type(error).__name__
    return None


def deliver_notifications(database: str) -> None:
    """Send every undelivered notification of this database's alerts, in parallel, each bounded
    by ALERT_NOTIFY_TIMEOUT_SECONDS; failures are recorded and tried again next round."""
    due = list(
        AlertNotification.objects.filter(delivered_at=None, abandoned=False, episode__database=database)
        .select_related("episode")
        .order_by("id")
    )
    if not due:
        return
    now = timezone.now()
    urls = {_webhook_key(webhook.url): webhook.url for rule in settings.ALERT_RULES for webhook in rule.webhooks}
    sendable = []
    for notification in due:
        gone = notification.channel == AlertNotification.WEBHOOK and notification.destination_key not in urls
        if gone or now - notification.created_at > GIVE_UP_AFTER:
            notification.abandoned = True
            notification.last_error = notification.last_error or ("no longer configured" if gone else "too old")
            notification.save(update_fields=["abandoned", "last_error"])
        else:
            sendable.append(notification)
    with ThreadPoolExecutor(max_workers=SENDING_THREADS) as pool:
        errors = list(pool.map(lambda n: _deliver(n, urls.get(n.destination_key)), sendable))
    for notification, error in zip(sendable, errors, strict=True):
        notification.attempts += 1
        if error is None:
            notification.delivered_at = timezone.now()
        else:
            notification.last_error = error
            logger.warning(
                "alert notification to %s failed (attempt %d, tried again next round): %s",
                notification.destination,
                notification.attempts,
                error,
            )
        notification.save(update_fields=["attempts", "delivered_at", "last_error"])

"""The alerts the sampler recorded (queues/alerting.py), for the alerts page and the queue page's
panel: always of the database being watched, newest first."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from queues.alerting import MEASURE_WORDS, describe
from queues.models import AlertEpisode, AlertNotification
from queues.watched import watched_name

OPEN_STATES = [AlertEpisode.PENDING, AlertEpisode.FIRING]
# A page's queues are named in the query; for more (the sampler's round of every queue) the
# database's firing alerts are read and kept by name here: an IN list of 10,000 names took 90 ms.
NAMES_IN_SQL_UP_TO = 500


def _episodes() -> QuerySet[AlertEpisode]:
    return (
        AlertEpisode.objects.filter(database=watched_name())
        .prefetch_related(Prefetch("notifications", queryset=AlertNotification.objects.order_by("id")))
        .order_by("-id")
    )


def open_alerts(*, queue_name: str | None = None) -> list[AlertEpisode]:
    """Firing first, then pending (breached, waiting out the rule's `for`)."""
    episodes = _episodes().filter(state__in=OPEN_STATES)
    if queue_name is not None:
        episodes = episodes.filter(queue_name=queue_name)
    return sorted(episodes, key=lambda episode: episode.state != AlertEpisode.FIRING)


def alert_history(
    *, before: int | None, limit: int, queue_name: str | None = None
) -> tuple[list[AlertEpisode], int | None]:
    """Alerts that fired, open or resolved, newest first, `limit` of them before the id `before`
    (keyset paging); and the `before` of the next page, None on the last."""
    episodes = _episodes().exclude(state=AlertEpisode.PENDING)
    if queue_name is not None:
        episodes = episodes.filter(queue_name=queue_name)
    if before is not None:
        episodes = episodes.filter(id__lt=before)
    page = list(episodes[: limit + 1])
    return page[:limit], (page[limit - 1].pk if len(page) > limit else None)


def firing_by_queue(queue_names: list[str]) -> dict[str, tuple[str, ...]]:
    """The alerts firing on each of these queues, in words: “nobody-reads (consumers silent for 9 min)”."""
    firing: dict[str, tuple[str, ...]] = {}
    episodes = AlertEpisode.objects.filter(database=watched_name(), state=AlertEpisode.FIRING)
    if len(queue_names) <= NAMES_IN_SQL_UP_TO:
        episodes = episodes.filter(queue_name__in=queue_names)
    wanted = set(queue_names)
    for episode in episodes.order_by("queue_name", "id").only("queue_name", "rule", "measure", "value"):
        if episode.queue_name not in wanted:
            continue
        measure = MEASURE_WORDS.get(episode.measure, episode.measure)
        words = f"“{episode.rule}” ({measure} {describe(episode.measure, episode.value)})"
        firing[episode.queue_name] = (*firing.get(episode.queue_name, ()), words)
    return firing

"""Drain forecasts (queues/forecast.py) from the sampler's history, for queues measured just now.

One query for all the queues asked about: their samples of the last HISTORY, at most one per
BUCKET (the last of it), so the points per queue stay bounded whatever the sampling interval.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from queues.forecast import Forecast, Point, forecast
from queues.selectors import history

# Long enough to say how long a stalled queue has had nothing removed, up to "over 15 min".
HISTORY = timedelta(minutes=15)
BUCKET = timedelta(seconds=10)
# A sample this close to the live reading adds an interval too short to measure a rate over.
TOO_CLOSE = timedelta(seconds=2)


def bucketing(now: datetime) -> tuple[datetime, float]:
    """(since, bucket_s) of the history a forecast reads (history.last_sample_per_bucket)."""
    return now - HISTORY, BUCKET.total_seconds()


def forecasts(now_points: dict[str, Point], samples: list[history.BucketSample] | None = None) -> dict[str, Forecast]:
    """Each named queue's forecast: its history followed by its point now (the live reading). The
    history is read unless given (`samples`, as `bucketing` says, read with other figures)."""
    if not now_points:
        return {}
    if samples is None:
        now = max(point.at for point in now_points.values())
        samples = history.last_sample_per_bucket(list(now_points), *bucketing(now))
    histories: dict[str, list[Point]] = {name: [] for name in now_points}
    before = {name: point.at - TOO_CLOSE for name, point in now_points.items()}
    for sample in samples:
        if sample.sampled_at <= before[sample.queue_name]:
            histories[sample.queue_name].append(
                Point(sample.sampled_at, sample.backlog, sample.sent_total, sample.removed_total)
            )
    return {name: forecast([*histories[name], point]) for name, point in now_points.items()}

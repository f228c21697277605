"""Drain forecasts (queues/forecast.py) from the sampler's history, for queues measured just now.

One query for all the queues asked about: their samples of the last HISTORY, at most one per
BUCKET (the last of it), so the points per queue stay bounded whatever the sampling interval.
"""

from __future__ import annotations

from datetime import timedelta

from queues.forecast import Forecast, Point, forecast
from queues.selectors import history

# Long enough to say how long a stalled queue has had nothing removed, up to "over 15 min".
HISTORY = timedelta(minutes=15)
BUCKET = timedelta(seconds=10)
# A sample this close to the live reading adds an interval too short to measure a rate over.
TOO_CLOSE = timedelta(seconds=2)


def forecasts(now_points: dict[str, Point]) -> dict[str, Forecast]:
    """Each named queue's forecast: its history followed by its point now (the live reading)."""
    if not now_points:
        return {}
    now = max(point.at for point in now_points.values())
    histories: dict[str, list[Point]] = {name: [] for name in now_points}
    for sample in history.last_sample_per_bucket(list(now_points), now - HISTORY, BUCKET.total_seconds()):
        if sample.sampled_at <= now_points[sample.queue_name].at - TOO_CLOSE:
            histories[sample.queue_name].append(
                Point(sample.sampled_at, sample.backlog, sample.sent_total, sample.removed_total)
            )
    return {name: forecast([*histories[name], point]) for name, point in now_points.items()}

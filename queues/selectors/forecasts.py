"""Drain forecasts (queues/forecast.py) from the sampler's history, for queues measured just now.

One query for all the queues asked about: their samples of the last HISTORY, at most one per
BUCKET (the last of it), so the points per queue stay bounded whatever the sampling interval.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connections

from queues.forecast import Forecast, Point, forecast
from queues.models import QueueSample
from queues.watched import watched_name

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
    bucket_s = BUCKET.total_seconds()
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT ON (queue_name, floor(extract(epoch FROM sampled_at) / %s))
                   queue_name, sampled_at, backlog, sent_total, removed_total
            FROM {QueueSample._meta.db_table}
            WHERE database = %s AND queue_name = ANY(%s::text[]) AND sampled_at >= %s
            ORDER BY queue_name, floor(extract(epoch FROM sampled_at) / %s), sampled_at DESC
            """,  # noqa: S608 (the table name is the model's own, not input)
            [bucket_s, watched_name(), list(now_points), now - HISTORY, bucket_s],
        )
        rows = cursor.fetchall()
    histories: dict[str, list[Point]] = {name: [] for name in now_points}
    for name, sampled_at, backlog, sent_total, removed_total in rows:
        if sampled_at <= now_points[name].at - TOO_CLOSE:
            histories[name].append(Point(sampled_at, backlog, sent_total, removed_total))
    return {name: forecast([*histories[name], point]) for name, point in now_points.items()}

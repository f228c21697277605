"""Timestamps read as epoch seconds. Django parses each timestamptz a query returns in Python
(about 9 µs each), and the queries that return a row per queue or per sample return tens of
thousands: a sampler round at 10,000 queues parsed 40,000."""

from __future__ import annotations

from datetime import UTC, datetime


def epoch_sql(column: str) -> str:
    """The SQL giving `column` (a timestamptz) as epoch seconds."""
    return f"date_part('epoch', {column})"


def moment(epoch: float | None) -> datetime | None:
    """The moment back from epoch_sql()'s seconds: the same microsecond, in UTC."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

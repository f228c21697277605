"""The drain forecast: when will this queue's backlog be gone, at the rate it is going now?

A pure function over the sampler's history of one queue (points of time, backlog and the two
cumulative counters), so it can be tested on recorded histories. The rate is the counters' over
the last RATE_WINDOW: messages removed (archived or deleted) minus messages sent, per second.
How sure it is comes from how much that rate varied from one sample to the next over the window
and how many samples there were: the standard error of the mean rate, relative to it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import pairwise

from queues.formatting import duration

RATE_WINDOW = timedelta(minutes=5)
# Fewer points or a shorter span than this is "not enough history yet".
MIN_POINTS = 3
MIN_SPAN = timedelta(seconds=60)
# Nothing removed for this long while messages wait is a stall, not a slow drain.
STALLED_AFTER = timedelta(minutes=2)
# The rate's standard error relative to it, and the intervals it needs, for each confidence.
CONFIDENCE_LEVELS = (("high", 0.1, 10), ("medium", 0.3, 5))

EMPTY, DRAINING, STALLED, GROWING, UNKNOWN = "empty", "draining", "stalled", "growing", "unknown"
STATES = (EMPTY, DRAINING, STALLED, GROWING, UNKNOWN)


@dataclasses.dataclass(frozen=True)
class Point:
    at: datetime
    backlog: int
    sent_total: int | None  # the msg_id sequence
    removed_total: int | None  # rows ever deleted from the live table; None in samples older than it


@dataclasses.dataclass(frozen=True)
class Forecast:
    state: str  # EMPTY, DRAINING, STALLED, GROWING or UNKNOWN
    backlog: int | None = None
    eta_s: float | None = None  # seconds until empty: 0 when empty, inf when it will not drain, None unknown
    arrival_rate: float | None = None  # messages sent per second over the window
    removal_rate: float | None = None  # messages archived or deleted per second over the window
    window_s: float | None = None  # what the rates were measured over
    samples: int = 0  # points in the window
    confidence: str | None = None  # high, medium, low; None when there is nothing to be sure of
    relative_error: float | None = None  # the drain rate's standard error over the rate
    stalled_for_s: float | None = None  # STALLED: since the last removal seen
    stalled_since_history_began: bool = False  # STALLED: no removal in the whole history looked at

    @property
    def drain_rate(self) -> float | None:
        """Messages per second the backlog shrinks by (negative: grows)."""
        if self.arrival_rate is None or self.removal_rate is None:
            return None
        return self.removal_rate - self.arrival_rate

    @property
    def summary(self) -> str:
        """The forecast in one phrase: "clears in ~35 min at the current rate"."""
        if self.state == EMPTY:
            return "empty: nothing to drain"
        if self.state == STALLED:
            over = "over " if self.stalled_since_history_began else ""
            return f"stalled: nothing removed for {over}{duration(self.stalled_for_s)}"
        if self.state == GROWING:
            growth = -self.drain_rate
            if growth == 0:
                return f"not shrinking: {per_minute(self.removal_rate)} in and out: will not drain"
            return f"growing by {per_minute(growth)}: will not drain"
        if self.state == DRAINING:
            return f"clears in ~{duration(self.eta_s)} at the current rate"
        return "not enough history yet"

    @property
    def short(self) -> str:
        """The same, for a table cell."""
        if self.state == EMPTY:
            return "empty"
        if self.state == STALLED:
            return f"stalled {'over ' if self.stalled_since_history_began else ''}{duration(self.stalled_for_s)}"
        if self.state == GROWING:
            return f"growing {per_minute(-self.drain_rate)}" if self.drain_rate else "not shrinking"
        if self.state == DRAINING:
            return f"~{duration(self.eta_s)}"
        return "no history yet"

    @property
    def basis(self) -> str:
        """The rate it is based on: "out 52/min, in 12/min over the last 5 min"."""
        if self.removal_rate is None or self.arrival_rate is None:
            return ""
        return (
            f"out {per_minute(self.removal_rate)}, in {per_minute(self.arrival_rate)} "
            f"over the last {duration(self.window_s)}"
        )

    @property
    def certainty(self) -> str:
        """How sure, and why: "high confidence: 30 samples, rate steady within ±4%"."""
        if self.confidence is None:
            return ""
        if self.state == STALLED:
            return f"{self.confidence} confidence: {self.samples} samples, none with a removal"
        if self.relative_error is None or math.isinf(self.relative_error):
            steadiness = "rate too uneven to tell"
        else:
            steadiness = f"rate steady within ±{self.relative_error:.0%}"
        return f"{self.confidence} confidence: {self.samples} samples, {steadiness}"

    @property
    def sort_value(self) -> float | None:
        """What the overview sorts by: empty first, then the soonest drained, then those that will
        not drain; unknown last (None)."""
        return self.eta_s


def per_minute(per_second: float | None) -> str:
    if per_second is None:
        return "–"
    value = per_second * 60
    return f"{value:,.0f}/min" if value >= 10 or value == 0 else f"{value:,.1f}/min"


def eta_from_rates(backlog: int, arrival_rate: float | None, removal_rate: float | None) -> float | None:
    """Seconds until the backlog is gone at these rates: 0 when empty, inf when it will not drain,
    None when a rate is unknown. The sampler stores it for sorting many queues in the database."""
    if backlog <= 0:
        return 0.0
    if arrival_rate is None or removal_rate is None:
        return None
    drain = removal_rate - arrival_rate
    return backlog / drain if drain > 0 else math.inf


def forecast(points: Sequence[Point]) -> Forecast:
    """The forecast from a queue's history, oldest point first; the last point is now."""
    if not points:
        return Forecast(UNKNOWN)
    now = points[-1]
    if now.backlog <= 0:
        return Forecast(EMPTY, backlog=0, eta_s=0.0)
    history = _since_counters_last_reset(points)
    window = [point for point in history if point.at >= now.at - RATE_WINDOW]
    span = window[-1].at - window[0].at
    if len(window) < MIN_POINTS or span < MIN_SPAN:
        return Forecast(UNKNOWN, backlog=now.backlog, samples=len(window))
    seconds = span.total_seconds()
    arrival = (now.sent_total - window[0].sent_total) / seconds
    removal = (now.removed_total - window[0].removed_total) / seconds
    known = {"backlog": now.backlog, "arrival_rate": arrival, "removal_rate": removal, "window_s": seconds}
    last_removal = next(
        (later.at for later, earlier in pairwise(reversed(history)) if later.removed_total != earlier.removed_total),
        None,
    )
    stalled_for = now.at - (last_removal or history[0].at)
    if stalled_for >= STALLED_AFTER:
        return Forecast(
            STALLED,
            **known,
            eta_s=math.inf,
            samples=len(window),
            confidence="high",
            stalled_for_s=stalled_for.total_seconds(),
            stalled_since_history_began=last_removal is None,
        )
    drain = removal - arrival
    relative_error = _relative_error(window, drain)
    confidence = next(
        (level for level, error, intervals in CONFIDENCE_LEVELS if relative_error <= error and len(window) > intervals),
        "low",
    )
    return Forecast(
        DRAINING if drain > 0 else GROWING,
        **known,
        eta_s=now.backlog / drain if drain > 0 else math.inf,
        samples=len(window),
        confidence=confidence,
        relative_error=relative_error,
    )


def _since_counters_last_reset(points: Sequence[Point]) -> list[Point]:
    """The points after the counters last went backwards or were missing: the statistics were
    reset (a crash, pg_stat_reset) or the queue was dropped and made again. Before it no rate
    can be told."""
    start = 0
    for index, point in enumerate(points):
        if point.sent_total is None or point.removed_total is None:
            start = index + 1
        elif index > start and (
            point.sent_total < points[index - 1].sent_total or point.removed_total < points[index - 1].removed_total
        ):
            start = index
    return list(points[start:]) or [points[-1]]


def _relative_error(window: list[Point], drain: float) -> float:
    """The standard error of the drain rate (from each interval's rate, weighted by its length),
    over the rate itself: small when the rate was steady over many samples."""
    intervals = [
        (
            (later.at - earlier.at).total_seconds(),
            (later.removed_total - earlier.removed_total) - (later.sent_total - earlier.sent_total),
        )
        for earlier, later in pairwise(window)
        if later.at > earlier.at
    ]
    total = sum(seconds for seconds, _ in intervals)
    variance = sum(seconds * (change / seconds - drain) ** 2 for seconds, change in intervals) / total
    standard_error = math.sqrt(variance / len(intervals))
    if drain == 0:
        return 0.0 if standard_error == 0 else math.inf
    return standard_error / abs(drain)

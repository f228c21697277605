"""Plain words for numbers, shared by templates, health reasons and findings."""

from __future__ import annotations

from collections.abc import Iterable


def duration(seconds: float | None) -> str:
    """45 s, 12 min, 3 h 5 min, 2 d 4 h: two units at most, as people say them."""
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def rate_unit(per_second: Iterable[float | None]) -> str:
    """One unit for rates read side by side (a column, a pair of figures): per second when any of
    them is one a second or more (or all are zero), else per minute."""
    known = [value for value in per_second if value is not None]
    return "s" if any(value >= 1 for value in known) or not any(known) else "min"


def rate(per_second: float | None, unit: str | None = None) -> str:
    """Messages per second or per minute (`unit` "s" or "min"; when not given, per minute when
    fewer than one a second)."""
    if per_second is None:
        return "–"
    unit = unit or rate_unit([per_second])
    if unit == "s":
        return f"{per_second:,.1f}/s"
    return f"{per_second * 60:,.1f}/min"

"""ok / warning / critical for a queue, from the thresholds of the first rule matching its name
(settings.HEALTH_RULES, from DASHBOARD_HEALTH_RULES_FILE; a built-in default rule comes last)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from queues.formatting import duration
from queues.rules import HealthRule

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Health:
    state: str
    reasons: tuple[str, ...]  # why it is not ok, in words; empty when ok

    @property
    def severity(self) -> int:
        return SEVERITY[self.state]

    def __str__(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "every threshold met"


def rule_for(queue_name: str) -> HealthRule:
    return next(rule for rule in settings.HEALTH_RULES if rule.matches(queue_name))


def queue_health(
    queue_name: str,
    *,
    oldest_visible_age_s: float | None,
    backlog: int,
    poison: int | None,
    in_default_partition: int = 0,
) -> Health:
    """The worst level any measure reaches. A measure that is unknown (poison not counted) is skipped.

    The age measured is that of the oldest message a consumer could take now: a message delayed
    on purpose, or being worked on, is not late. Any message in a partitioned queue's default
    partition is a warning whatever the rule: pg_partman's maintenance fails until it is moved.
    """
    rule = rule_for(queue_name)
    measured = [
        ("oldest_age", rule.oldest_age, oldest_visible_age_s, lambda v: f"oldest waiting message {duration(v)} old"),
        ("backlog", rule.backlog, backlog, lambda v: f"backlog {v:,}"),
        (
            "poison",
            rule.poison,
            poison,
            lambda v: f"{v:,} poison message{'s' if v != 1 else ''} (read ≥ {settings.POISON_READ_COUNT}×)",
        ),
    ]
    state, reasons = OK, []
    for measure, thresholds, value, describe in measured:
        if value is None:
            continue
        for level, threshold in ((CRITICAL, thresholds.critical), (WARNING, thresholds.warning)):
            if value >= threshold:
                shown = duration(threshold) if measure == "oldest_age" else f"{threshold:,}"
                reasons.append(f"{describe(value)} ({level} at {shown})")
                state = max(state, level, key=SEVERITY.get)
                break
    if in_default_partition:
        counted = (
            f"more than {settings.EXACT_COUNT_LIMIT:,}"
            if in_default_partition > settings.EXACT_COUNT_LIMIT
            else f"{in_default_partition:,}"
        )
        reasons.append(
            f"{counted} message{'s' if in_default_partition != 1 else ''} in the default partition "
            "(pg_partman's maintenance fails until they are moved: see the diagnostics)"
        )
        state = max(state, WARNING, key=SEVERITY.get)
    return Health(state, tuple(reasons))

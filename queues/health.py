"""A queue's verdict: ok / warning / critical and its causes in words, each pointing at the part of
the queue page that shows it. The one home of health: the overview's rows, the queue's header, the
API and the sampler's stored health all come from queue_health().

It weighs every signal the dashboard has: the thresholds of the first health rule matching the
queue's name (settings.HEALTH_RULES, a built-in default rule last), no consumer (messages waiting,
nothing in flight, nothing removed), a FIFO group stuck behind a failing message, a firing alert,
dead rows every read steps over, and messages in a partitioned queue's default partition."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from queues.formatting import duration
from queues.rules import HealthRule

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY = {OK: 0, WARNING: 1, CRITICAL: 2}

# Where on the queue page each cause is shown (the anchors of its panels).
FIGURES, POISON, ALERTS, DIAGNOSTICS = "queue-live", "queue-poison", "queue-alerts", "queue-diagnostics"

# Dead rows from which a table is bloated: every read steps over them (diagnostics say so too).
DEAD_ROWS_MINIMUM = 10_000
DEAD_ROWS_RATIO = 0.2


@dataclass(frozen=True)
class Cause:
    level: str  # warning or critical
    words: str  # what is wrong, as a person says it
    anchor: str  # the id of the queue page's panel that shows it


@dataclass(frozen=True)
class StuckGroup:
    """A FIFO group whose head message keeps failing: pgmq's grouped reads give nothing behind it."""

    name: str
    head_msg_id: int
    head_read_ct: int
    behind: int


@dataclass(frozen=True)
class Silence:
    """How long messages have waited with nothing in flight and nothing removed."""

    seconds: float
    at_least: bool  # no sign of a consumer in the whole history looked at: longer, maybe


@dataclass(frozen=True)
class Health:
    state: str
    causes: tuple[Cause, ...] = ()  # worst first; empty when ok

    @property
    def severity(self) -> int:
        return SEVERITY[self.state]

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(cause.words for cause in self.causes)

    @property
    def cause(self) -> Cause | None:
        """The cause a person should read first."""
        return self.causes[0] if self.causes else None

    @property
    def verdict(self) -> str:
        """ "critical: nobody has read for 9 min; 76 waiting" (and how many other causes there are)."""
        if not self.causes:
            return f"{self.state}: every threshold met"
        more = len(self.causes) - 1
        return f"{self.state}: {self.causes[0].words}" + (f" (+{more} more)" if more else "")

    def __str__(self) -> str:
        return "; ".join(self.reasons) if self.causes else "every threshold met"


def rule_for(queue_name: str) -> HealthRule:
    return next(rule for rule in settings.HEALTH_RULES if rule.matches(queue_name))


def is_bloated(dead_rows: int, estimated_rows: float) -> bool:
    return dead_rows >= DEAD_ROWS_MINIMUM and dead_rows >= DEAD_ROWS_RATIO * max(estimated_rows, 1)


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'s' if count != 1 else ''}"


def queue_health(
    queue_name: str,
    *,
    oldest_visible_age_s: float | None,
    backlog: int,
    poison: int | None,
    in_default_partition: int = 0,
    visible: int = 0,
    silence: Silence | None = None,
    stuck_group: StuckGroup | None = None,
    firing_alerts: tuple[str, ...] = (),
    bloated_tables: tuple[tuple[str, int], ...] = (),
) -> Health:
    """The worst level any signal reaches, with every cause. A signal that is unknown (poison not
    counted, no history to tell silence by) is skipped.

    The age measured is that of the oldest message a consumer could take now: a message delayed
    on purpose, or being worked on, is not late. Any message in a partitioned queue's default
    partition is a warning whatever the rule: pg_partman's maintenance fails until it is moved.
    """
    rule = rule_for(queue_name)
    causes = []
    if stuck_group is not None:
        causes.append(
            Cause(
                CRITICAL if stuck_group.head_read_ct >= 2 * settings.POISON_READ_COUNT else WARNING,
                f"FIFO group {stuck_group.name} stuck behind message {stuck_group.head_msg_id} "
                f"(read {stuck_group.head_read_ct}×); {stuck_group.behind:,} waiting behind it",
                DIAGNOSTICS,
            )
        )
    if silence is not None and visible:
        level = _level(silence.seconds, rule.consumer_silence)
        if level:
            since = f"{'over ' if silence.at_least else ''}{duration(silence.seconds)}"
            causes.append(Cause(level, f"nobody has read for {since}; {visible:,} waiting", DIAGNOSTICS))
    measured = [
        ("oldest_age", oldest_visible_age_s, lambda v: f"oldest waiting message {duration(v)} old", FIGURES),
        ("backlog", backlog, lambda v: f"backlog {v:,}", FIGURES),
        (
            "poison",
            poison,
            lambda v: f"{_plural(v, 'poison message')} (read ≥ {settings.POISON_READ_COUNT}×)",
            POISON,
        ),
    ]
    for measure, value, describe, anchor in measured:
        if value is None:
            continue
        thresholds = getattr(rule, measure)
        level = _level(value, thresholds)
        if level:
            threshold = thresholds.critical if level == CRITICAL else thresholds.warning
            shown = duration(threshold) if measure == "oldest_age" else f"{threshold:,}"
            causes.append(Cause(level, f"{describe(value)} ({level} at {shown})", anchor))
    # A firing alert mostly repeats a signal above in a rule's words: it keeps a queue from "ok", and
    # comes after the signal that says why.
    causes.extend(Cause(WARNING, f"alert {alert} firing", ALERTS) for alert in firing_alerts)
    for table, dead_rows in bloated_tables:
        causes.append(Cause(WARNING, f"{dead_rows:,} dead rows in pgmq.{table} slow every read", DIAGNOSTICS))
    if in_default_partition:
        counted = (
            f"more than {settings.EXACT_COUNT_LIMIT:,}"
            if in_default_partition > settings.EXACT_COUNT_LIMIT
            else f"{in_default_partition:,}"
        )
        causes.append(
            Cause(
                WARNING,
                f"{counted} message{'s' if in_default_partition != 1 else ''} in the default partition "
                "(pg_partman's maintenance fails until they are moved: see the diagnostics)",
                DIAGNOSTICS,
            )
        )
    causes.sort(key=lambda cause: -SEVERITY[cause.level])  # stable: the order above breaks ties
    return Health(causes[0].level if causes else OK, tuple(causes))


def _level(value: float, thresholds) -> str | None:
    if value >= thresholds.critical:
        return CRITICAL
    if value >= thresholds.warning:
        return WARNING
    return None

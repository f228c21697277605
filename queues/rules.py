"""Health and alert rule files (TOML) parsed into frozen values; queues/health.py and
queues/alerting.py read them by attribute from settings.HEALTH_RULES and settings.ALERT_RULES.

settings.py parses both files at start-up (through dashboard/env.py), before apps are ready: this
module imports nothing of Django or of the app. A bad file raises RulesFileError, one line naming
the variable and the rule, which env.py turns into the start-up failure. Durations are seconds.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, NoReturn


class RulesFileError(ValueError):
    """A rules file that cannot be used, in one line that names the variable and the rule."""


def _refuse(message: str) -> NoReturn:
    raise RulesFileError(message)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(where: str, value: object) -> float:
    """30, "30s", "5m", "2h", "1d" -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
    if not match:
        _refuse(f"{where} must be a duration like 30s, 5m, 2h or 1d; got {value!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def _read_toml(path: str, named_by: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as error:
        _refuse(f"{named_by}: cannot read {path}: {error}")


# -- health ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """A measure's value from which a queue is warning, and critical (never below warning)."""

    warning: float
    critical: float


@dataclass(frozen=True)
class HealthRule:
    queues: str  # shell-style pattern on the queue name, case-sensitive
    oldest_age: Thresholds  # seconds the oldest message a consumer could take now has waited
    backlog: Thresholds  # messages
    poison: Thresholds  # messages read POISON_READ_COUNT times
    # seconds messages have waited with nothing in flight and nothing removed (no consumer)
    consumer_silence: Thresholds = Thresholds(warning=60.0, critical=300.0)

    def matches(self, queue_name: str) -> bool:
        return fnmatchcase(queue_name, self.queues)


HEALTH_MEASURES = {"oldest_age": "duration", "backlog": "count", "poison": "count", "consumer_silence": "duration"}
DEFAULT_HEALTH_RULE = HealthRule(
    queues="*",
    oldest_age=Thresholds(warning=300.0, critical=1800.0),
    backlog=Thresholds(warning=10_000, critical=100_000),
    poison=Thresholds(warning=1, critical=100),
    consumer_silence=Thresholds(warning=60.0, critical=300.0),
)


def read_health_rules(path: str, *, named_by: str) -> tuple[HealthRule, ...]:
    """The rules of the file at `path` ("": none), then the default rule, which matches every queue.

    The first rule whose pattern matches a queue applies to it; a measure a rule leaves out (or
    one of its levels) comes from the default rule. `named_by` is the variable naming the file.
    """
    rules: list[HealthRule] = []
    if path:
        document = _read_toml(path, named_by)
        listed = document.get("rules", [])
        if not isinstance(listed, list):
            _refuse(f"{named_by}: rules must be a list of tables ([[rules]])")
        for number, raw in enumerate(listed, start=1):
            where = f"{named_by} rule {number}"
            if not isinstance(raw, dict) or not isinstance(raw.get("queues"), str):
                _refuse(f'{where} needs queues = "pattern"')
            unknown = set(raw) - {"queues", *HEALTH_MEASURES}
            if unknown:
                _refuse(f"{where} has unknown keys {sorted(unknown)}; known: queues, {', '.join(HEALTH_MEASURES)}")
            thresholds: dict[str, Thresholds] = {}
            for measure, kind in HEALTH_MEASURES.items():
                default: Thresholds = getattr(DEFAULT_HEALTH_RULE, measure)
                if not isinstance(raw.get(measure, {}), dict):
                    _refuse(f"{where}: {measure} takes a table: {measure} = {{ warning = …, critical = … }}")
                levels = {"warning": default.warning, "critical": default.critical, **raw.get(measure, {})}
                if set(levels) != {"warning", "critical"}:
                    _refuse(f"{where}: {measure} takes warning and critical only")
                if kind == "duration":
                    levels = {
                        level: duration_seconds(f"{where} {measure}.{level}", value) for level, value in levels.items()
                    }
                elif not all(isinstance(value, int) and value >= 0 for value in levels.values()):
                    _refuse(f"{where}: {measure} thresholds must be whole numbers")
                if levels["warning"] > levels["critical"]:
                    _refuse(f"{where}: {measure} warning must not be above critical")
                thresholds[measure] = Thresholds(**levels)
            rules.append(HealthRule(queues=raw["queues"], **thresholds))
    return (*rules, DEFAULT_HEALTH_RULE)


# -- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """Where a notification is posted. Its URL carries the receiver's secret (Slack's and most
    others' in the path or query): pages, logs and the database get `label` or a hash of `url`."""

    url: str = field(repr=False)
    label: str


@dataclass(frozen=True)
class AlertRule:
    name: str  # unique among the rules: alert history is kept per rule name
    queues: str  # shell-style patterns, case-sensitive: on the queue name
    databases: str  # and on the watched database's name
    measure: str  # one of ALERT_MEASURES
    threshold: float  # seconds for a duration measure, messages for a count
    for_s: float  # breached this long before it fires (pending meanwhile)
    window_s: float  # backlog_growth is the backlog now minus the backlog this long ago
    repeat_s: float | None  # notified again this often while firing; None: on firing and resolved only
    webhooks: tuple[Webhook, ...]
    emails: tuple[str, ...]

    def matches_database(self, database: str) -> bool:
        return fnmatchcase(database, self.databases)

    def matches_queue(self, queue_name: str) -> bool:
        return fnmatchcase(queue_name, self.queues)


ALERT_MEASURES = {
    "oldest_age": "duration",
    "visible": "count",
    "backlog_growth": "count",
    "poison": "count",
    "consumer_silence": "duration",
    "drain_eta": "duration",
}
ALERT_RULE_KEYS = {
    "name",
    "queues",
    "databases",
    "measure",
    "threshold",
    "for",
    "window",
    "repeat",
    "webhooks",
    "emails",
}
ALERT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}")
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")


def webhook_label(url: str, variable: str | None) -> str:
    """How a webhook is shown: its host only, after the variable it came from if any."""
    if "://" not in url:
        return "(not a URL)"
    host = re.sub(r"^[^@]*@", "", url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0])
    return f"${variable} ({host})" if variable else f"{url.split('://', 1)[0]}://{host}/…"


def read_alert_rules(path: str, *, named_by: str, environ: Mapping[str, str]) -> tuple[AlertRule, ...]:
    """The rules of the file at `path` ("": none). Every rule whose patterns match a queue is
    evaluated on it. A webhook written "$VARIABLE" is read from `environ`, so the secret URL stays
    out of the file; `named_by` is the variable naming the file."""
    if not path:
        return ()
    document = _read_toml(path, named_by)
    unknown_tables = set(document) - {"rules"}
    if unknown_tables or not isinstance(document.get("rules", []), list):
        _refuse(
            f"{named_by}: the file holds only [[rules]] tables; "
            f"found {sorted(unknown_tables) or 'rules not as [[rules]]'}"
        )
    rules: list[AlertRule] = []
    for number, raw in enumerate(document.get("rules", []), start=1):
        where = f"{named_by} rule {number}"
        if not isinstance(raw, dict):
            _refuse(f"{where} must be a [[rules]] table")
        if isinstance(raw.get("name"), str):
            where = f"{named_by} rule {raw['name']!r}"
        unknown = set(raw) - ALERT_RULE_KEYS
        if unknown:
            _refuse(f"{where} has unknown keys {sorted(unknown)}; known: {', '.join(sorted(ALERT_RULE_KEYS))}")
        for required in ("name", "queues", "measure", "threshold"):
            if required not in raw:
                _refuse(f"{where} needs {required} = ...")
        if not isinstance(raw["name"], str) or not ALERT_NAME_PATTERN.fullmatch(raw["name"]):
            _refuse(f"{where}: name must be 1-100 letters, digits, spaces, dots, dashes or underscores")
        if any(rule.name == raw["name"] for rule in rules):
            _refuse(f"{where}: two rules are named {raw['name']!r}; alert history is kept per rule name")
        for pattern_key in ("queues", "databases"):
            if not isinstance(raw.get(pattern_key, "*"), str):
                _refuse(f'{where}: {pattern_key} must be a shell-style pattern in quotes, e.g. "orders-*"')
        measure = raw["measure"]
        if measure not in ALERT_MEASURES:
            _refuse(f"{where}: measure must be one of {', '.join(ALERT_MEASURES)}; got {measure!r}")
        if ALERT_MEASURES[measure] == "duration":
            threshold: float = duration_seconds(f"{where} threshold", raw["threshold"])
        elif isinstance(raw["threshold"], int) and not isinstance(raw["threshold"], bool) and raw["threshold"] >= 0:
            threshold = raw["threshold"]
        else:
            _refuse(f"{where}: threshold for {measure} must be a whole number of messages; got {raw['threshold']!r}")
        if "window" in raw and measure != "backlog_growth":
            _refuse(f"{where}: window applies to backlog_growth only")
        webhooks = []
        for webhook in raw.get("webhooks", []):
            variable = webhook[1:] if isinstance(webhook, str) and webhook.startswith("$") else None
            url = environ.get(variable, "").strip() if variable else webhook
            if variable and not url:
                _refuse(f"{where}: webhook ${variable} names an environment variable that is not set")
            if not isinstance(url, str) or not re.fullmatch(r"https?://[^/\s?#]+[^\s]*", url):
                _refuse(
                    f'{where}: a webhook must be an http(s):// URL or "$VARIABLE"; got '
                    f"{'the value of $' + variable if variable else repr(webhook_label(str(url), None))}"
                )
            webhooks.append(Webhook(url=url, label=webhook_label(url, variable)))
        emails = raw.get("emails", [])
        if not isinstance(emails, list) or not all(isinstance(e, str) and EMAIL_PATTERN.fullmatch(e) for e in emails):
            _refuse(f'{where}: emails must be a list of addresses, e.g. ["oncall@example.com"]')
        rules.append(
            AlertRule(
                name=raw["name"],
                queues=raw["queues"],
                databases=raw.get("databases", "*"),
                measure=measure,
                threshold=threshold,
                for_s=duration_seconds(f"{where} for", raw.get("for", 0)),
                window_s=duration_seconds(f"{where} window", raw.get("window", "10m")),
                repeat_s=duration_seconds(f"{where} repeat", raw["repeat"]) if "repeat" in raw else None,
                webhooks=tuple(webhooks),
                emails=tuple(emails),
            )
        )
    return tuple(rules)

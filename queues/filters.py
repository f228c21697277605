"""The message filter: which messages of a queue a page, an export or a bulk job is about.

One typed value, `MessageFilter`, travels from the form that parsed it (a page's query string or
the API's JSON, both through forms.MessageFilterForm) to the SQL, and is stored with a bulk job
(`to_data` / `from_data`) for the runner. It can say itself in words (`in_words`), hide what was
typed into it from someone who sees payloads redacted (`without_values`), narrow a queryset
(`apply`), count its matches under a time budget, and hand the next batch of msg_ids to a job.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import OperationalError
from django.db.models import Q, QuerySet, TextField
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Now

from dashboard.databases import took_too_long
from queues.lineage import origin_filter
from queues.pgmq import ARCHIVE, LIVE, Queue
from queues.redaction import REDACTED, payload
from queues.watched import statement_budget

# A message's state, by the database's clock.
VISIBLE, IN_FLIGHT, DELAYED, ARCHIVED = "visible", "in flight", "delayed", "archived"
MESSAGE_STATES = (VISIBLE, IN_FLIGHT, DELAYED, ARCHIVED)  # what a message is, as the pages say
STATES = {"visible": VISIBLE, "in_flight": IN_FLIGHT, "delayed": DELAYED}
SOURCES = [LIVE, ARCHIVE, "both"]

QUALIFIED_TERM = re.compile(r"^(message|headers)((?:\.[^.:]+)*):(.*)$", re.DOTALL)
# `customer.id:2122`: a key chain without a prefix is the message's. Keys start like a name, so
# `10:30` stays text; a value after `:/` is an address (`https://…`), text too.
BARE_PATH_TERM = re.compile(r"^([^\W\d][\w-]*(?:\.[^\W\d][\w-]*)*):(?!/)(.+)$", re.DOTALL)
MAX_PATH_KEYS = 50  # a search's key chain: each key nests the query once more, and Python's stack ends


@dataclasses.dataclass(frozen=True)
class SearchTerm:
    """One term of the search box: `text`, `headers:text`, `message.customer.id:42`, `headers.trace_id:abc*`."""

    column: str  # "message" or "headers"
    path: tuple[str, ...]  # empty: the text anywhere in the column
    value: str


def parse_search(text: str) -> tuple[SearchTerm, ...]:
    """`timeout`, `"two words"`, `message.customer.id:42` (or `customer.id:42`), `headers.trace_id:abc*`,
    `headers:retry`, `message:text:with:colons`."""
    if "\x00" in text:
        raise ValidationError("holds a NUL character, which no message can contain")
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise ValidationError(f"cannot read the search ({error}): close the quotes") from error
    terms = []
    for token in tokens:
        match = QUALIFIED_TERM.match(token)
        if match:
            column, path, value = match.group(1), tuple(filter(None, match.group(2).split("."))), match.group(3)
            if not value:
                raise ValidationError(f"“{token}” needs a value after the colon")
            if len(path) > MAX_PATH_KEYS:
                raise ValidationError(f"a path of at most {MAX_PATH_KEYS} keys (this one has {len(path)})")
            terms.append(SearchTerm(column=column, path=path, value=value))
        elif match := BARE_PATH_TERM.match(token):
            path = tuple(match.group(1).split("."))
            if len(path) > MAX_PATH_KEYS:
                raise ValidationError(f"a path of at most {MAX_PATH_KEYS} keys (this one has {len(path)})")
            terms.append(SearchTerm(column="message", path=path, value=match.group(2)))
        else:
            terms.append(SearchTerm(column="message", path=(), value=token))
    return tuple(terms)


DATE_FIELDS = ("enqueued_after", "enqueued_before", "archived_after", "archived_before")


@dataclasses.dataclass(frozen=True)
class MessageFilter:
    source: str = LIVE
    state: str | None = None  # a key of STATES
    read_ct_min: int | None = None
    read_ct_max: int | None = None
    enqueued_after: datetime | None = None
    enqueued_before: datetime | None = None
    archived_after: datetime | None = None
    archived_before: datetime | None = None
    message_contains: Any = None  # parsed JSON
    headers_contains: Any = None
    search: tuple[SearchTerm, ...] = ()
    # A Celery task's name (* a wildcard) and id, in the kombu envelope the message is (celery_tasks.py).
    task: str | None = None
    task_id: str | None = None
    # Copies the dashboard made from that queue (or that message of it), a copy's copies too (lineage.py).
    copied_from_queue: str | None = None
    copied_from_msg_id: int | None = None
    # Matches payloads as a user without "view_unredacted" sees them (see queues/redaction.py).
    redacted: bool = False

    @property
    def sources(self) -> list[str]:
        """Which tables can hold a match."""
        wanted = [LIVE, ARCHIVE] if self.source == "both" else [self.source]
        if self.state:
            wanted = [kind for kind in wanted if kind == LIVE]  # archived messages have no state
        if self.archived_after or self.archived_before:
            wanted = [kind for kind in wanted if kind == ARCHIVE]
        return wanted

    @property
    def needs_scan(self) -> bool:
        """True when no index can find the matches: payloads, headers, read_ct."""
        return bool(
            self.search
            or self.task
            or self.task_id
            or self.message_contains is not None
            or self.headers_contains is not None
            or self.copied_from_queue is not None
            or self.read_ct_min is not None
            or self.read_ct_max is not None
        )

    @property
    def highlight(self) -> str | None:
        """The text a row's preview is centred on and marks: the first search term on the message,
        as it reads in the JSON text (a path's value: its longest part between wildcards)."""
        for term in self.search:
            if term.column != "message":
                continue
            if not term.path:
                return term.value
            longest = max(term.value.split("*"), key=len)
            if longest:
                return json.dumps(longest, ensure_ascii=False)[1:-1]
        return None

    @property
    def is_empty(self) -> bool:
        return self == MessageFilter(source=self.source, redacted=self.redacted)

    # Stored with a bulk job (JSON) and read back by its runner.

    def to_data(self) -> dict:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        return data

    @classmethod
    def from_data(cls, data: dict) -> MessageFilter:
        values = dict(data)
        for key in DATE_FIELDS:
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        values["search"] = tuple(
            SearchTerm(column=term["column"], path=tuple(term["path"]), value=term["value"])
            for term in values.get("search", ())
        )
        return cls(**values)

    # In words, for confirmations and the audit log.

    def in_words(self) -> str:
        parts = []
        if self.state:
            parts.append(f"state is {STATES[self.state]}")
        if self.read_ct_min is not None and self.read_ct_max is not None:
            parts.append(f"read_ct from {self.read_ct_min} to {self.read_ct_max}")
        elif self.read_ct_min is not None:
            parts.append(f"read_ct at least {self.read_ct_min}")
        elif self.read_ct_max is not None:
            parts.append(f"read_ct at most {self.read_ct_max}")
        for field in DATE_FIELDS:
            if moment := getattr(self, field):
                parts.append(f"{field.replace('_', ' ')} {moment:%Y-%m-%d %H:%M:%S %Z}")
        if self.message_contains is not None:
            parts.append(f"message contains {json.dumps(self.message_contains, ensure_ascii=False)}")
        if self.headers_contains is not None:
            parts.append(f"headers contain {json.dumps(self.headers_contains, ensure_ascii=False)}")
        if self.copied_from_queue is not None:
            message = f" #{self.copied_from_msg_id}" if self.copied_from_msg_id is not None else ""
            parts.append(f"copied from {self.copied_from_queue}{message}")
        if self.task:
            parts.append(f"Celery task is {self.task!r}")
        if self.task_id:
            parts.append(f"Celery task id is {self.task_id!r}")
        for term in self.search:
            where = ".".join([term.column, *term.path])
            parts.append(f"{where} is {term.value!r}" if term.path else f"{where} contains {term.value!r}")
        return ", ".join(parts) if parts else "every message"

    def without_values(self) -> MessageFilter:
        """The filter with every value typed into it hidden: keys, paths, states, counts and times stay.
        How a filter someone else typed is shown to a user who sees payloads redacted (a value may be
        the very secret redaction hides: an e-mail address, a card number)."""

        def hidden(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: hidden(item) for key, item in value.items()}
            if isinstance(value, list):
                return [hidden(item) for item in value]
            return REDACTED

        return dataclasses.replace(
            self,
            message_contains=None if self.message_contains is None else hidden(self.message_contains),
            headers_contains=None if self.headers_contains is None else hidden(self.headers_contains),
            search=tuple(dataclasses.replace(term, value=REDACTED) for term in self.search),
            task=self.task and REDACTED,
            task_id=self.task_id and REDACTED,
        )

    # In SQL.

    def apply(self, queryset: QuerySet, kind: str) -> QuerySet:
        """`queryset` (of the live table or the archive: `kind`) narrowed to the matches."""
        if kind not in self.sources:
            # A condition this table cannot meet (a state in the archive, archived_at in the live
            # table): nothing matches, rather than the condition being dropped and everything matching.
            return queryset.none()
        if kind == LIVE and self.state:
            queryset = queryset.filter(
                {
                    "visible": Q(vt__lte=Now()),
                    "in_flight": Q(vt__gt=Now(), read_ct__gt=0),
                    "delayed": Q(vt__gt=Now(), read_ct=0),
                }[self.state]
            )
        if self.read_ct_min is not None:
            queryset = queryset.filter(read_ct__gte=self.read_ct_min)
        if self.read_ct_max is not None:
            queryset = queryset.filter(read_ct__lte=self.read_ct_max)
        if self.enqueued_after:
            queryset = queryset.filter(enqueued_at__gte=self.enqueued_after)
        if self.enqueued_before:
            queryset = queryset.filter(enqueued_at__lt=self.enqueued_before)
        if kind == ARCHIVE and self.archived_after:
            queryset = queryset.filter(archived_at__gte=self.archived_after)
        if kind == ARCHIVE and self.archived_before:
            queryset = queryset.filter(archived_at__lt=self.archived_before)
        if self.message_contains is not None:
            queryset = queryset.alias(message_seen=payload("message", redacted=self.redacted)).filter(
                message_seen__contains=self.message_contains
            )
        if self.headers_contains is not None:
            queryset = (
                queryset.alias(headers_seen=payload("headers", redacted=self.redacted)).filter(
                    headers_seen__contains=self.headers_contains
                )
                if queryset.model.has_column("headers")
                else queryset.none()
            )
        if self.copied_from_queue is not None:
            # The stored headers, not the redacted ones: an origin is the dashboard's, never a secret.
            queryset = (
                queryset.filter(headers__contains=origin_filter(self.copied_from_queue, self.copied_from_msg_id))
                if queryset.model.has_column("headers")
                else queryset.none()
            )
        for number, term in enumerate(self.search):
            queryset = _searched(queryset, term, alias=f"search_{number}", redacted=self.redacted)
        for key, value in (("task", self.task), ("id", self.task_id)):
            if value:
                term = SearchTerm(column="message", path=("headers", key), value=value)
                queryset = _searched(
                    queryset, term, alias=f"celery_{key}", redacted=self.redacted, wildcards=key == "task"
                )
        return queryset

    def matching_ids(self, queue: Queue, kind: str, *, after: int, limit: int) -> QuerySet:
        """The query for the next `limit` msg_ids this matches in the live table or the archive,
        after `after`, in msg_id order (a bulk job either reads them or hands the query to pgmq)."""
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        found = self.apply(model.objects.filter(msg_id__gt=after), kind)
        return found.order_by("msg_id").values_list("msg_id", flat=True)[:limit]

    def count(self, queue: Queue, kind: str, *, budget_ms: int) -> int | None:
        """How many messages match, exactly; None when counting takes longer than the budget."""
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        try:
            with statement_budget(budget_ms):
                return self.apply(model.objects.all(), kind).count()
        except OperationalError as error:
            if not took_too_long(error):
                raise
            return None


def _searched(queryset: QuerySet, term: SearchTerm, *, alias: str, redacted: bool, wildcards: bool = True) -> QuerySet:
    """No path: the text anywhere in the column, any case. A path: that value exactly (as text,
    so 42 finds 42 and "42"), with * as a wildcard."""
    if term.column == "headers" and not queryset.model.has_column("headers"):
        return queryset.none()
    if not term.path:
        return queryset.annotate(**{alias: Cast(payload(term.column, redacted=redacted), TextField())}).filter(
            **{f"{alias}__icontains": term.value}
        )
    # The key chain built a key at a time: a key may itself contain "__", which KT() would split.
    value = payload(term.column, redacted=redacted)
    for key in term.path[:-1]:
        value = KeyTransform(key, value)
    queryset = queryset.annotate(**{alias: KeyTextTransform(term.path[-1], value)})
    if wildcards and "*" in term.value:
        wildcard = "^" + ".*".join(re.escape(part) for part in term.value.split("*")) + "$"
        return queryset.filter(**{f"{alias}__iregex": wildcard})
    return queryset.filter(**{alias: term.value})


def words_seen(filter_data: dict, typed_words: str, *, redacted: bool) -> str:
    """A stored filter in words, as the user looking at it may see it."""
    return MessageFilter.from_data(filter_data).without_values().in_words() if redacted else typed_words

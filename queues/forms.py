"""All input validation: every query parameter a page accepts is parsed here, and a bad one
becomes a clear message (the views answer 400), never a server error."""
from __future__ import annotations

import json
import math
import re
import shlex
from datetime import datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from queues.selectors.messages import SORT_COLUMNS, SOURCES, STATES, Cursor, MessageFilter, PageRequest, SearchTerm
from queues.selectors.overview import SORT_KEYS

RANGES = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 604_800}
RANGE_LABELS = {"15m": "15 min", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M",
                    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]
MAX_MSG_ID = 2**63 - 1
MAX_INT = 2**31 - 1
QUALIFIED_TERM = re.compile(r"^(message|headers)((?:\.[^.:]+)*):(.*)$", re.DOTALL)


def sort_choices(keys) -> list[tuple[str, str]]:
    return [(key, key) for key in keys] + [(f"-{key}", f"-{key}") for key in keys]


class OverviewForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search queues")
    sort = forms.ChoiceField(required=False, choices=sort_choices(SORT_KEYS))
    page = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)

    def sort_key(self) -> tuple[str, bool]:
        sort = self.cleaned_data.get("sort") or "name"
        return sort.lstrip("-"), sort.startswith("-")


class RangeForm(forms.Form):
    range = forms.ChoiceField(required=False, choices=[(key, label) for key, label in RANGE_LABELS.items()])

    def seconds(self) -> int:
        return RANGES[self.cleaned_data.get("range") or "1h"]


class JSONDocumentField(forms.CharField):
    """A JSON document typed by a person: parsed, or a message saying what is wrong with it.

    Beyond JSON's own grammar, it refuses what PostgreSQL's jsonb cannot store (NUL characters,
    lone surrogates, NaN and Infinity, numbers out of a float's range) and nesting past 100
    levels, so a filter never reaches the database as a server error.
    """

    MAX_DEPTH = 100

    def __init__(self, *, max_chars: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_chars = max_chars

    def to_python(self, value: str) -> Any:
        text = super().to_python(value)
        if not text:
            return None
        if len(text) > self.max_chars:
            raise ValidationError(f"is longer than {self.max_chars:,} characters")
        try:
            document = json.loads(text, parse_constant=self._refuse_constant, parse_float=self._finite_float)
        except json.JSONDecodeError as error:
            raise ValidationError(f"not valid JSON ({error.msg} at character {error.pos + 1})") from error
        except RecursionError:
            raise ValidationError(f"is nested more than {self.MAX_DEPTH} levels deep") from None
        except ValueError as error:
            raise ValidationError(str(error)) from None
        self._check(document, depth=0)
        return document

    @staticmethod
    def _refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number PostgreSQL can store")

    @staticmethod
    def _finite_float(text: str) -> float:
        number = float(text)
        if math.isinf(number):
            raise ValueError(f"the number {text[:30]} is too large")
        return number

    def _check(self, value: Any, depth: int) -> None:
        if depth > self.MAX_DEPTH:
            raise ValidationError(f"is nested more than {self.MAX_DEPTH} levels deep")
        if isinstance(value, str):
            if "\x00" in value:
                raise ValidationError("holds a NUL character (\\u0000), which PostgreSQL cannot store")
            if any(0xD800 <= ord(character) <= 0xDFFF for character in value):
                raise ValidationError("holds half of a surrogate pair, which is not a character")
        elif isinstance(value, dict):
            for key, item in value.items():
                self._check(key, depth + 1)
                self._check(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                self._check(item, depth + 1)


def parse_search(text: str) -> tuple[SearchTerm, ...]:
    """`timeout`, `"two words"`, `message.customer.id:42`, `headers.trace_id:abc*`, `headers:retry`."""
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
            terms.append(SearchTerm(column=column, path=path, value=value))
        else:
            terms.append(SearchTerm(column="message", path=(), value=token))
    return tuple(terms)


class MessageFilterForm(forms.Form):
    source = forms.ChoiceField(required=False, choices=[(source, source) for source in SOURCES])
    state = forms.ChoiceField(required=False, choices=[("", "any")] + [(key, label) for key, label in STATES.items()])
    read_ct_min = forms.IntegerField(required=False, min_value=0, max_value=MAX_INT)
    read_ct_max = forms.IntegerField(required=False, min_value=0, max_value=MAX_INT)
    enqueued_after = forms.DateTimeField(required=False, input_formats=DATETIME_FORMATS)
    enqueued_before = forms.DateTimeField(required=False, input_formats=DATETIME_FORMATS)
    archived_after = forms.DateTimeField(required=False, input_formats=DATETIME_FORMATS)
    archived_before = forms.DateTimeField(required=False, input_formats=DATETIME_FORMATS)
    message = JSONDocumentField(required=False, max_chars=10_000, label="message @>")
    headers = JSONDocumentField(required=False, max_chars=10_000, label="headers @>")
    q = forms.CharField(required=False, max_length=500, label="Search")
    sort = forms.ChoiceField(required=False, choices=sort_choices(SORT_COLUMNS))
    after = forms.CharField(required=False, max_length=100)
    before = forms.CharField(required=False, max_length=100)
    from_ = forms.IntegerField(required=False, min_value=0, max_value=MAX_MSG_ID, label="Jump to msg_id")
    last = forms.BooleanField(required=False)

    def __init__(self, data=None, *args, **kwargs):
        # `from` is a Python keyword: the field is from_ in code and `from` in the URL.
        if data is not None and "from" in data:
            data = data.copy()
            data["from_"] = data["from"]
        super().__init__(data, *args, **kwargs)

    def clean_q(self) -> tuple[SearchTerm, ...]:
        return parse_search(self.cleaned_data["q"])

    def clean(self) -> dict:
        data = super().clean()
        for low, high in (("read_ct_min", "read_ct_max"), ("enqueued_after", "enqueued_before"),
                          ("archived_after", "archived_before")):
            if data.get(low) is not None and data.get(high) is not None and data[low] > data[high]:
                self.add_error(high, f"must not be before {low}")
        given = [name for name in ("after", "before", "from_", "last")
                 if data.get(name) is not None and data.get(name) != "" and data.get(name) is not False]
        if len(given) > 1:
            raise ValidationError("ask for one place at a time: after, before, from or last")
        sort = data.get("sort") or "-msg_id"
        if data.get("from_") is not None:
            sort = "-msg_id" if sort.startswith("-") else "msg_id"  # a jump is to a msg_id
        data["sort"] = sort
        column = sort.lstrip("-")
        if column == "archived_at" and (data.get("source") or "live") != "archive":
            self.add_error("sort", "archived_at sorts the archive only: look in the archive to sort by it")
        for name in ("after", "before"):
            if data.get(name):
                try:
                    data[name] = decode_cursor(data[name], column)
                except ValueError as error:
                    self.add_error(name, str(error))
            else:
                data[name] = None
        return data

    def message_filter(self) -> MessageFilter:
        data = self.cleaned_data
        return MessageFilter(
            source=data.get("source") or "live", state=data.get("state") or None,
            read_ct_min=data.get("read_ct_min"), read_ct_max=data.get("read_ct_max"),
            enqueued_after=data.get("enqueued_after"), enqueued_before=data.get("enqueued_before"),
            archived_after=data.get("archived_after"), archived_before=data.get("archived_before"),
            message_contains=data.get("message"), headers_contains=data.get("headers"),
            search=data.get("q") or (),
        )

    def page_request(self) -> PageRequest:
        data = self.cleaned_data
        sort = data["sort"]
        return PageRequest(sort=sort.lstrip("-"), descending=sort.startswith("-"), after=data["after"],
                           before=data["before"], from_msg_id=data.get("from_"), last=bool(data.get("last")))


def encode_cursor(cursor: Cursor, column: str) -> str:
    """A row's place as it appears in a link: 123 for msg_id sorts, <value>|123 otherwise."""
    if column == "msg_id":
        return str(cursor.msg_id)
    value = cursor.value.isoformat() if isinstance(cursor.value, datetime) else str(cursor.value)
    return f"{value}|{cursor.msg_id}"


def decode_cursor(text: str, column: str) -> Cursor:
    value_text, _, msg_id_text = text.rpartition("|")
    if column == "msg_id":
        value_text, msg_id_text = "", text
    try:
        msg_id = int(msg_id_text)
    except ValueError:
        raise ValueError("is not a place in this list (it should end with a msg_id)") from None
    if not 0 <= msg_id <= MAX_MSG_ID:
        raise ValueError("names a msg_id out of range")
    if column == "msg_id":
        return Cursor(None, msg_id)
    try:
        value: Any = int(value_text) if column == "read_ct" else datetime.fromisoformat(value_text)
    except ValueError:
        raise ValueError(f"does not hold a {column} value") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("needs a time zone")
    return Cursor(value, msg_id)

"""All input validation: every query parameter a page accepts is parsed here, and a bad one
becomes a clear message (the views answer 400), never a server error."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.utils import timezone

from queues import celery_tasks
from queues.filters import SOURCES, STATES, MessageFilter, SearchTerm, parse_search
from queues.health import SEVERITY
from queues.jsontext import RawJSON
from queues.pgmq import ARCHIVE, LIVE
from queues.selectors.messages import SORT_COLUMNS, Cursor, PageRequest
from queues.selectors.overview import SORT_KEYS
from queues.vocabulary import ARCHIVE_ACTIONS, DELAY, LIVE_ACTIONS, MESSAGE_ACTIONS, MOVE, REQUEUE, RETRY

RANGES = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 604_800}
RANGE_LABELS = {"15m": "15 min", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
DATETIME_FORMATS = [
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
]
MAX_MSG_ID = 2**63 - 1


class UTCDateTimeField(forms.DateTimeField):
    """A moment, in UTC. A time typed without an offset is in the form's zone (ZonedForm: the one
    the user chose to read times in), else UTC. Django also reads ISO 8601 with any offset Python
    takes (-19:23), which PostgreSQL refuses past ±15:59: converted here, the query never sees one."""

    zone = UTC

    def to_python(self, value):
        with timezone.override(self.zone):
            moment = super().to_python(value)
        try:
            return moment.astimezone(UTC) if moment is not None else None
        except OverflowError:
            raise ValidationError("is out of range") from None


def chosen_zone(name: str | None):
    """The zone a form's `tz` names (the header's "Local time": the browser's zone), or UTC."""
    if not name or len(name) > 64:
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ZonedForm(forms.Form):
    """Its moments typed as the tables show them ("2025-03-01 14:05:09"), in the zone named by `tz`
    (set by interface.js when the user reads times in the browser's zone; absent: UTC)."""

    tz = forms.CharField(required=False, max_length=64)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        zone = chosen_zone(self.data.get("tz"))
        self.zone_refused = zone is None
        for field in self.fields.values():
            if isinstance(field, UTCDateTimeField):
                field.zone = zone or UTC

    def clean_tz(self) -> str:
        if self.zone_refused:
            raise ValidationError("is not a time zone this server knows (an IANA name such as Europe/Paris)")
        return self.cleaned_data["tz"]


MAX_INT = 2**31 - 1
# A JSON number with a fraction or an exponent, as json.loads hands it to parse_float.
JSON_FRACTION_EXPONENT = re.compile(r"-?\d+(?:\.(\d+))?(?:[eE]([+-]?\d+))?")
NUMERIC_MAX_SCALE = 16_383  # digits after the point PostgreSQL's numeric (and so jsonb) can hold
INT_MAX_DIGITS = 4_300  # Python's int() reads no longer number (sys.get_int_max_str_digits)
# pgmq's longest table name is template_pgmq_q_<name>, and PostgreSQL's limit is 63 bytes.
MAX_QUEUE_NAME_BYTES = 63 - len("template_pgmq_q_")


def shortened(text: str, length: int = 30) -> str:
    return text if len(text) <= length else text[:length] + "…"


def sort_choices(keys) -> list[tuple[str, str]]:
    return [(key, key) for key in keys] + [(f"-{key}", f"-{key}") for key in keys]


class OverviewForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search queues")
    sort = forms.ChoiceField(required=False, choices=sort_choices(SORT_KEYS))
    page = forms.IntegerField(required=False, min_value=1, max_value=1_000_000)
    health = forms.ChoiceField(
        required=False, choices=[("", "any"), *((state, state) for state in SEVERITY)], label="Health"
    )

    def sort_key(self) -> tuple[str, bool]:
        sort = self.cleaned_data.get("sort") or "name"
        return sort.lstrip("-"), sort.startswith("-")


class RangeForm(forms.Form):
    range = forms.ChoiceField(required=False, choices=[(key, label) for key, label in RANGE_LABELS.items()])

    def seconds(self) -> int:
        return RANGES[self.cleaned_data.get("range") or "1h"]


class RoutingKeyForm(forms.Form):
    """A routing key to try against the topic bindings; pgmq judges its characters (test_routing)."""

    key = forms.CharField(
        max_length=255,  # pgmq's own limit
        label="Routing key",
        error_messages={"required": "Give a routing key to try, such as orders.eu.created."},
    )


class JSONDocumentField(forms.CharField):
    """A JSON document typed by a person: parsed, or a message saying what is wrong with it.

    Beyond JSON's own grammar, it refuses what PostgreSQL's jsonb cannot store (NUL characters,
    lone surrogates, NaN and Infinity, numbers out of a float's range) and nesting past 100
    levels, so a filter never reaches the database as a server error.
    """

    MAX_DEPTH = 100

    def __init__(self, *, max_chars: int, exact: bool = False, object_only: bool = False, **kwargs) -> None:
        """`exact`: the document as its exact text (RawJSON), for what is sent to a queue; otherwise
        parsed, for filters. `object_only`: refuse anything but a JSON object (headers)."""
        super().__init__(**kwargs)
        self.max_chars, self.exact, self.object_only = max_chars, exact, object_only

    def to_python(self, value: str) -> Any:
        text = super().to_python(value)
        if not text:
            return None
        if len(text) > self.max_chars:
            raise ValidationError(f"is longer than {self.max_chars:,} characters")
        try:
            document = json.loads(
                text,
                parse_constant=self._refuse_constant,
                parse_float=self._storable_float,
                parse_int=self._readable_int,
            )
        except json.JSONDecodeError as error:
            raise ValidationError(f"not valid JSON ({error.msg} at character {error.pos + 1})") from error
        except RecursionError:
            raise ValidationError(f"is nested more than {self.MAX_DEPTH} levels deep") from None
        except ValueError as error:
            raise ValidationError(str(error)) from None
        self._check(document, depth=0)
        if self.object_only and not isinstance(document, dict):
            raise ValidationError('must be a JSON object, like {"trace_id": "abc"}')
        return RawJSON(text) if self.exact else document

    @staticmethod
    def _refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number PostgreSQL can store")

    @staticmethod
    def _storable_float(text: str) -> float:
        number = float(text)
        if math.isinf(number):
            raise ValueError(f"the number {text[:30]} is too large")
        # 1e-16384 is 0.0 to Python but more decimals than PostgreSQL's numeric holds: jsonb refuses it,
        # as it refuses an exponent past about a billion (0e9999999999) whatever the digits before it.
        fraction, exponent = JSON_FRACTION_EXPONENT.fullmatch(text).groups()
        if exponent and len(exponent.lstrip("+-").lstrip("0")) > 9:
            raise ValueError(f"the number {shortened(text)} has an exponent too large for PostgreSQL")
        if len(fraction or "") - int(exponent or 0) > NUMERIC_MAX_SCALE:
            raise ValueError(
                f"the number {shortened(text)} has more than {NUMERIC_MAX_SCALE:,} digits after the decimal "
                "point, more than PostgreSQL can store"
            )
        return number

    @staticmethod
    def _readable_int(text: str) -> int:
        if len(text.lstrip("-")) > INT_MAX_DIGITS:
            raise ValueError(f"the number {shortened(text)} has more than {INT_MAX_DIGITS:,} digits")
        return int(text)

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


class MessageFilterForm(ZonedForm):
    source = forms.ChoiceField(required=False, choices=[(source, source) for source in SOURCES])
    state = forms.ChoiceField(required=False, choices=[("", "any")] + [(key, label) for key, label in STATES.items()])
    read_ct_min = forms.IntegerField(required=False, min_value=0, max_value=MAX_INT)
    read_ct_max = forms.IntegerField(required=False, min_value=0, max_value=MAX_INT)
    enqueued_after = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    enqueued_before = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    archived_after = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    archived_before = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    message = JSONDocumentField(required=False, max_chars=10_000, label="message @>")
    headers = JSONDocumentField(required=False, max_chars=10_000, label="headers @>")
    q = forms.CharField(required=False, max_length=500, label="Search")
    task = forms.CharField(required=False, max_length=500, label="Celery task")
    task_id = forms.CharField(required=False, max_length=500, label="Celery task id")
    copied_from = forms.CharField(required=False, max_length=300, label="Copied from")
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

    def clean_copied_from(self) -> tuple[str, int | None] | None:
        """`orders` (any copy of one of its messages) or `orders #117` / `orders#117` (of that one)."""
        text = self.cleaned_data["copied_from"]
        if not text:
            return None
        queue_name, hash_sign, msg_id = text.rpartition("#") if "#" in text else (text, "", "")
        queue_name = queue_name.strip()
        if not queue_name or "\x00" in queue_name:
            raise ValidationError("name a queue, e.g. orders, or one message of it, e.g. orders #117")
        if not hash_sign:
            return queue_name, None
        if not msg_id.strip().isdigit() or int(msg_id) > MAX_MSG_ID:
            raise ValidationError(f"“{msg_id.strip()}” is not a msg_id: write the queue and a number, e.g. orders #117")
        return queue_name, int(msg_id)

    def clean(self) -> dict:
        data = super().clean()
        for low, high in (
            ("read_ct_min", "read_ct_max"),
            ("enqueued_after", "enqueued_before"),
            ("archived_after", "archived_before"),
        ):
            if data.get(low) is not None and data.get(high) is not None and data[low] > data[high]:
                self.add_error(high, f"must not be before {low}")
        given = [
            name
            for name in ("after", "before", "from_", "last")
            if data.get(name) is not None and data.get(name) != "" and data.get(name) is not False
        ]
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

    def message_filter(self, *, redacted: bool = False) -> MessageFilter:
        data = self.cleaned_data
        return MessageFilter(
            redacted=redacted,
            source=data.get("source") or "live",
            state=data.get("state") or None,
            read_ct_min=data.get("read_ct_min"),
            read_ct_max=data.get("read_ct_max"),
            enqueued_after=data.get("enqueued_after"),
            enqueued_before=data.get("enqueued_before"),
            archived_after=data.get("archived_after"),
            archived_before=data.get("archived_before"),
            message_contains=data.get("message"),
            headers_contains=data.get("headers"),
            search=data.get("q") or (),
            task=data.get("task") or None,
            task_id=data.get("task_id") or None,
            copied_from_queue=data["copied_from"][0] if data.get("copied_from") else None,
            copied_from_msg_id=data["copied_from"][1] if data.get("copied_from") else None,
        )

    def page_request(self) -> PageRequest:
        data = self.cleaned_data
        sort = data["sort"]
        return PageRequest(
            sort=sort.lstrip("-"),
            descending=sort.startswith("-"),
            after=data["after"],
            before=data["before"],
            from_msg_id=data.get("from_"),
            last=bool(data.get("last")),
        )


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
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("needs a time zone")
        try:  # in UTC: PostgreSQL refuses offsets past ±15:59 that Python takes (-19:23)
            value = value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"holds a {column} out of range") from None
    return Cursor(value, msg_id)


# Actions


class MsgIdsField(forms.Field):
    """msg_id values sent as repeated form fields (the ticked checkboxes)."""

    widget = forms.MultipleHiddenInput
    MAX = 1000

    def to_python(self, value) -> list[int]:
        if not value:
            return []
        try:
            ids = sorted({int(item) for item in value})
        except (TypeError, ValueError):
            raise ValidationError("msg_ids must be whole numbers") from None
        if len(ids) > self.MAX:
            raise ValidationError(f"at most {self.MAX} messages at a time: use “all matching this filter”")
        if any(not 0 < msg_id <= MAX_MSG_ID for msg_id in ids):
            raise ValidationError("a msg_id is out of range")
        return ids


class OnceForm(forms.Form):
    """A form whose submission acts once. Each rendering carries a fresh token, which the action's
    audit record (or job) keeps as unique: the same form sent twice (a double click, a resent
    request) is refused the second time instead of acting again."""

    request_token = forms.UUIDField(
        required=False,
        widget=forms.HiddenInput,
        error_messages={
            "invalid": "this form is damaged (its request_token is not one the dashboard wrote): open the page again"
        },
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["request_token"].initial = uuid.uuid4()


class MessageActionForm(OnceForm):
    """An action on chosen messages, or on every message a filter matches: the plan a confirmation
    shows, carried unchanged to the run."""

    action = forms.ChoiceField(choices=[(action, action) for action in MESSAGE_ACTIONS])
    source = forms.ChoiceField(choices=[(LIVE, LIVE), (ARCHIVE, ARCHIVE)])
    scope = forms.ChoiceField(choices=[("selected", "selected"), ("matching", "matching")])
    msg_id = MsgIdsField(required=False)
    filter_query = forms.CharField(required=False, max_length=20_000)
    destination = forms.CharField(required=False, max_length=255)
    original = forms.ChoiceField(required=False, choices=[("archive", "archive it"), ("delete", "delete it")])
    remove_archived = forms.BooleanField(required=False)
    until = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    include_in_flight = forms.BooleanField(required=False)
    again = forms.BooleanField(required=False)
    confirmed = forms.BooleanField(required=False)

    def __init__(self, *args, queue_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queue_name = queue_name
        self.filter_form: MessageFilterForm | None = None

    def clean(self) -> dict:
        data = super().clean()
        action, source = data.get("action"), data.get("source")
        if action and source and action not in (LIVE_ACTIONS if source == LIVE else ARCHIVE_ACTIONS):
            raise ValidationError(f"“{action}” is not an action on the {source}")
        if data.get("scope") == "selected" and not data.get("msg_id"):
            raise ValidationError("no message is selected")
        if data.get("scope") == "matching":
            self.filter_form = MessageFilterForm(QueryDict(data.get("filter_query") or "", mutable=False))
            if not self.filter_form.is_valid():
                raise ValidationError(
                    "the filter cannot be used: "
                    + "; ".join(f"{field}: {' '.join(errors)}" for field, errors in self.filter_form.errors.items())
                )
        # What an action needs besides the messages is asked in its confirmation: required only then.
        if data.get("confirmed") and action in (MOVE, REQUEUE):
            if not data.get("destination"):
                self.add_error("destination", "choose the queue to send the messages to")
            elif action == MOVE and data["destination"] == self.queue_name:
                self.add_error("destination", "moving a message to its own queue would only renumber it")
        if data.get("confirmed") and action == DELAY:
            until = data.get("until")
            if not until:
                self.add_error("until", "choose when the messages should become visible again")
            elif until <= timezone.now():
                self.add_error("until", "choose a time in the future: to make messages visible now, retry them")
            elif until > timezone.now() + timedelta(seconds=MAX_INT):
                self.add_error("until", "at most 68 years ahead (pgmq counts the delay in seconds, as an integer)")
        return data

    def parameters(self) -> dict:
        data, action = self.cleaned_data, self.cleaned_data["action"]
        if action == RETRY:
            return {"include_in_flight": data["include_in_flight"]}
        if action == DELAY:
            return {"until": data["until"].isoformat()}
        if action == MOVE:
            return {
                "destination": data["destination"],
                "original": data.get("original") or "archive",
                "include_in_flight": data["include_in_flight"],
            }
        if action == REQUEUE:
            return {
                "destination": data["destination"],
                "remove_archived": data["remove_archived"],
                "again": data["again"],
            }
        return {}

    def message_filter(self, *, redacted: bool = False) -> MessageFilter:
        """The filter, for scope=matching, with the action's source in place of the browser's."""
        return dataclasses.replace(
            self.filter_form.message_filter(redacted=redacted), source=self.cleaned_data["source"]
        )


class JSONMessageForm(OnceForm):
    """A message to send (or an edited copy): JSON checked before anything reaches pgmq."""

    message = JSONDocumentField(max_chars=1_000_000, exact=True, widget=forms.Textarea)
    headers = JSONDocumentField(required=False, max_chars=100_000, exact=True, object_only=True, widget=forms.Textarea)

    def clean_message(self):
        message = self.cleaned_data["message"]
        if message is None:
            raise ValidationError("a message is needed")
        return message


# Each page's form has only the fields the page shows: an error on a field the page does not show
# would refuse the form without saying why.
class SendForm(JSONMessageForm):
    delay_s = forms.IntegerField(required=False, min_value=0, max_value=MAX_INT, label="Delay (seconds)")


class EditForm(JSONMessageForm):
    destination = forms.CharField(required=False, max_length=255)
    include_in_flight = forms.BooleanField(required=False)


class CeleryEditForm(OnceForm):
    """An edited copy of a Celery task: its args and kwargs, encoded back into the envelope of
    `original_text` (the message as stored) by celery_tasks.with_arguments, as `message`."""

    args = JSONDocumentField(max_chars=1_000_000, exact=True, widget=forms.Textarea, label="args (a JSON array)")
    kwargs = JSONDocumentField(max_chars=1_000_000, exact=True, widget=forms.Textarea, label="kwargs (a JSON object)")
    headers = JSONDocumentField(required=False, max_chars=100_000, exact=True, object_only=True, widget=forms.Textarea)
    destination = forms.CharField(required=False, max_length=255)
    include_in_flight = forms.BooleanField(required=False)

    def __init__(self, *args, original_text: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.original_text = original_text

    def clean_args(self) -> RawJSON:
        return self._of_type("args", list, "a JSON array, like [1, 2]")

    def clean_kwargs(self) -> RawJSON:
        return self._of_type("kwargs", dict, 'a JSON object, like {"x": 1}')

    def _of_type(self, name: str, kind: type, example: str) -> RawJSON:
        value = self.cleaned_data[name]
        if value is None or not isinstance(json.loads(value), kind):
            raise ValidationError(f"must be {example}")
        return value

    def clean(self) -> dict:
        data = super().clean()
        if "args" in data and "kwargs" in data:
            try:
                data["message"], data["headers"] = celery_tasks.with_arguments(
                    self.original_text, data["args"], data["kwargs"], data.get("headers")
                )
            except celery_tasks.NotATask as refusal:
                raise ValidationError(f"cannot edit this message as a Celery task: {refusal}") from None
        return data


class TypedConfirmationForm(OnceForm):
    """The name of the thing about to go, typed: a purge or a drop is never one click."""

    confirm_name = forms.CharField(max_length=255, strip=False)

    def __init__(self, *args, expected: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm_name(self) -> str:
        if self.cleaned_data["confirm_name"] != self.expected:
            raise ValidationError(f"type the queue's name, “{self.expected}”, exactly")
        return self.cleaned_data["confirm_name"]


class CreateQueueForm(OnceForm):
    name = forms.CharField(max_length=47, strip=False, label="Queue name")
    confirm_name = forms.CharField(max_length=47, strip=False, label="The name again")
    unlogged = forms.BooleanField(required=False, label="Unlogged (faster; emptied by a database crash)")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if not name or name != name.strip():
            raise ValidationError("a name without spaces at either end")
        bad = [part for part in ("$", ";", "--", "'", "\x00") if part in name]
        if bad:
            raise ValidationError(f"pgmq does not accept {', '.join(repr(part) for part in bad)} in a queue name")
        # pgmq would take them, but a line break, a tab or a right-to-left override hides in every list
        # and makes two different queues look alike.
        invisible = sorted({f"U+{ord(char):04X}" for char in name if unicodedata.category(char).startswith("C")})
        if invisible:
            raise ValidationError(
                f"no control or invisible characters ({', '.join(invisible)}): they would hide in every list"
            )
        # pgmq counts 47 characters, but PostgreSQL cuts a table name at 63 bytes: a name longer in
        # UTF-8 would get a cut-off table, and the next name alike would share it.
        size = max(len(name.encode()), len(name.lower().encode()))
        if size > MAX_QUEUE_NAME_BYTES:
            raise ValidationError(
                f"at most {MAX_QUEUE_NAME_BYTES} bytes in UTF-8 (this name has {size}): PostgreSQL "
                "cuts longer table names"
            )
        return name

    def clean(self) -> dict:
        data = super().clean()
        if data.get("name") and data.get("confirm_name") != data["name"]:
            self.add_error("confirm_name", "the two names differ")
        return data


class AuditFilterForm(ZonedForm):
    ON_QUEUES, ON_ACCOUNTS = "queues", "accounts"
    about = forms.ChoiceField(
        required=False,
        choices=[("", "everything"), (ON_QUEUES, "actions on queues"), (ON_ACCOUNTS, "accounts and roles")],
    )
    queue = forms.CharField(required=False, max_length=255)
    user = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=40)
    outcome = forms.ChoiceField(
        required=False,
        choices=[
            ("", "any"),
            ("done", "done"),
            ("partial", "partial"),
            ("failed", "failed"),
            ("cancelled", "cancelled"),
            ("refused", "refused (the role does not allow it)"),
        ],
    )
    since = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    until = UTCDateTimeField(required=False, input_formats=DATETIME_FORMATS)
    before = forms.IntegerField(required=False, min_value=1, max_value=MAX_MSG_ID)


class AlertHistoryForm(forms.Form):
    before = forms.IntegerField(required=False, min_value=1, max_value=MAX_MSG_ID)

"""Celery tasks as kombu's pgmq transport stores them: the whole kombu envelope is the message.

    {"body": "<base64>", "content-type": "application/json", "content-encoding": "utf-8",
     "headers": {"task": "app.add", "id": "…", "retries": 0, "eta": null, "root_id": "…",
                 "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", …},
     "properties": {"body_encoding": "base64", "delivery_tag": "…", …}}

The body (Celery's message protocol 2) is `[args, kwargs, embed]`. Payloads are untrusted: an
envelope is only read (base64, then JSON), never unpickled, and anything that does not fit is not
a task (`read_task` answers None) or a task whose arguments are not decoded (`not_decoded` says why).
Numbers keep their exact JSON text (RawJSON), so an edited copy changes only what was edited.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import uuid
from datetime import datetime
from typing import Any

from django.utils import timezone

from queues.jsontext import RawJSON, json_text
from queues.redaction import REDACTED

# As much as the message page shows (its display limit): a bigger envelope is not read as a task,
# so no page parses or decodes megabytes for it.
MAX_ENVELOPE_CHARS = 200_000
JSON_TYPES = ("application/json",)
PICKLE = "application/x-python-serialize"
REPR_CHARS = 1024  # Celery cuts argsrepr and kwargsrepr there too (amqp.argsrepr_maxsize)
TEXT_FIELDS = ("task", "id", "parent_id", "root_id", "group", "origin", "argsrepr", "kwargsrepr", "expires")


class NotATask(Exception):
    """The message is not a Celery task whose arguments can be edited (said in words)."""


@dataclasses.dataclass(frozen=True)
class CeleryTask:
    name: str
    id: str
    retries: int | None
    eta: datetime | None
    eta_text: str | None  # as sent, when it is not a readable time
    expires: str | None
    parent_id: str | None
    root_id: str | None
    group: str | None
    origin: str | None
    argsrepr: str | None
    kwargsrepr: str | None
    content_type: str
    args: str | None = None  # JSON text, exact; None when not decoded
    kwargs: str | None = None
    not_decoded: str | None = None  # why the arguments are not shown

    @property
    def decoded(self) -> bool:
        return self.args is not None

    @property
    def seconds_to_eta(self) -> float | None:
        return (self.eta - timezone.now()).total_seconds() if self.eta else None


def _parse(text: str) -> Any:
    """JSON with every number kept as its text (floats as RawJSON), or ValueError."""
    try:
        return json.loads(text, parse_float=RawJSON, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deep") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _moment(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def read_task(message_text: str | None) -> CeleryTask | None:
    """The Celery task this message (its JSON text, whole) carries, or None if it carries none."""
    if not message_text or len(message_text) > MAX_ENVELOPE_CHARS:
        return None
    try:
        envelope = _parse(message_text)
    except ValueError:
        return None
    return task_of(envelope)


def task_of(envelope: Any) -> CeleryTask | None:
    if not isinstance(envelope, dict):
        return None
    headers = envelope.get("headers")
    if not isinstance(headers, dict) or not _text(headers.get("task")) or not _text(headers.get("id")):
        return None
    if not isinstance(envelope.get("body"), str):
        return None
    fields = {name: _text(headers.get(name)) for name in TEXT_FIELDS}
    retries = headers.get("retries")
    eta_text = _text(headers.get("eta"))
    content_type = _text(envelope.get("content-type")) or "unknown content type"
    task = CeleryTask(
        name=fields.pop("task"),
        retries=retries if isinstance(retries, int) and not isinstance(retries, bool) else None,
        eta=_moment(eta_text),
        eta_text=eta_text,
        content_type=content_type,
        **fields,
    )
    try:
        args, kwargs = _arguments(envelope)
    except NotATask as reason:
        return dataclasses.replace(task, not_decoded=str(reason))
    return dataclasses.replace(task, args=json_text(args), kwargs=json_text(kwargs))


def _body_text(envelope: dict) -> str:
    """The body as text, from its base64 when the transport encoded it so."""
    body = envelope["body"]
    if body == REDACTED:
        raise NotATask("redacted for you (DASHBOARD_REDACT)")
    headers = envelope["headers"]
    if headers.get("compression"):
        raise NotATask(f"compressed ({headers['compression']}): not decoded")
    content_type = envelope.get("content-type")
    if content_type == PICKLE:
        raise NotATask("pickle: not decoded")
    if content_type not in JSON_TYPES:
        raise NotATask(f"{content_type or 'no content type'}: not decoded")
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    if encoding is None:
        return body
    if encoding != "base64":
        raise NotATask(f"body encoded as {encoding}: not decoded")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise NotATask("the body is not valid base64: not decoded") from None
    try:
        return raw.decode(_text(envelope.get("content-encoding")) or "utf-8")
    except (LookupError, UnicodeDecodeError):
        raise NotATask("the body is not text in its content-encoding: not decoded") from None


def _body(envelope: dict) -> list:
    try:
        body = _parse(_body_text(envelope))
    except ValueError as error:
        raise NotATask(f"the body is not JSON ({error}): not decoded") from None
    if (
        not isinstance(body, list)
        or len(body) != 3
        or not isinstance(body[0], list)
        or not isinstance(body[1], dict)
        or not isinstance(body[2], dict | None)
    ):
        raise NotATask("the body is not [args, kwargs, embed] (Celery's message protocol 2): not decoded")
    return body


def _arguments(envelope: dict) -> tuple[list, dict]:
    args, kwargs, _ = _body(envelope)
    return args, kwargs


def with_arguments(
    message_text: str, args: RawJSON, kwargs: RawJSON, headers_text: str | None = None
) -> tuple[RawJSON, RawJSON | None]:
    """The envelope with args and kwargs replaced, encoded as the original was, every other field
    kept as it was, except: argsrepr and kwargsrepr (what Celery's logs and monitors show) say the
    new arguments, and the delivery tag is a new one, as each publish has (a worker holding the
    original would otherwise take the two for one delivery). With it, pgmq's headers for the copy:
    `headers_text` as given, or the envelope's new headers where it was a copy of the original's
    (kombu's transport writes them to pgmq's headers too)."""
    if len(message_text) > MAX_ENVELOPE_CHARS:
        raise NotATask(f"the message is longer than {MAX_ENVELOPE_CHARS:,} characters: edit the whole envelope")
    try:
        envelope = _parse(message_text)
    except ValueError:
        raise NotATask("the message is not JSON") from None
    if task_of(envelope) is None:
        raise NotATask("the message is not a Celery task")
    _, _, embed = _body(envelope)
    original_headers = json.loads(json_text(envelope["headers"]), parse_float=RawJSON)
    new_args, new_kwargs = json.loads(args), json.loads(kwargs)
    if not isinstance(new_args, list):
        raise NotATask("args must be a JSON array")
    if not isinstance(new_kwargs, dict):
        raise NotATask("kwargs must be a JSON object")
    body = f"[{args}, {kwargs}, {json_text(embed)}]"
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    charset = _text(envelope.get("content-encoding")) or "utf-8"
    try:
        envelope["body"] = base64.b64encode(body.encode(charset)).decode("ascii") if encoding == "base64" else body
    except UnicodeEncodeError:
        raise NotATask(f"the arguments hold characters its content-encoding ({charset}) cannot write") from None
    envelope["headers"]["argsrepr"] = repr(tuple(new_args))[:REPR_CHARS]
    envelope["headers"]["kwargsrepr"] = repr(new_kwargs)[:REPR_CHARS]
    if isinstance(properties, dict) and "delivery_tag" in properties:
        properties["delivery_tag"] = str(uuid.uuid4())
    headers = RawJSON(headers_text) if headers_text is not None else None
    try:
        mirrored = headers_text is not None and _parse(headers_text) == original_headers
    except ValueError:
        mirrored = False
    if mirrored:
        headers = RawJSON(json_text(envelope["headers"]))
    return RawJSON(json_text(envelope)), headers

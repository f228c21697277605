"""Payloads as PostgreSQL's own JSON text, never whole in the worker when they are big.

jsonb keeps numbers as numeric, and text keeps every digit, so payloads travel as text. A row's
payload may weigh anything pgmq accepts (a 50 MB message is one `send` away), so:

- lists (messages.listing, the API's pages) get a payload only up to a size, cut or left out by
  the database, which also reports the whole size; a payload stored in more than
  LIST_PAYLOAD_MAX_STORED_BYTES is not even turned into text (`if_listable`): a list reports the
  size it is stored in, which PostgreSQL knows without reading it;
- one payload given whole (a download, the API's single message) is measured first and then read
  in chunks of CHUNK_CHARS, one short statement each, as the client takes them: a worker holds
  one chunk per reader, whatever the message weighs.

Every read goes through redaction.payload, so a redacted user's chunks are cut from the redacted
text, and its size is the redacted text's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Case, F, Func, IntegerField, TextField, Value, When
from django.db.models.functions import Cast, Length, Substr
from django.db.models.lookups import LessThanOrEqual

from queues.pgmq import ARCHIVE, LIVE, Queue
from queues.redaction import payload
from queues.watched import watched_alias, watching

# Characters per statement: 2 MiB of ASCII, at most 8 MiB of UTF-8. Each statement turns the whole
# jsonb into text again (about 0.2 s for 50 MB): smaller chunks would cost the database more.
CHUNK_CHARS = 2 * 1024 * 1024


class PayloadGone(RuntimeError):
    """The row went (deleted, archived, moved) while its payload was being read."""


@dataclasses.dataclass(frozen=True)
class PayloadText:
    message: str | None  # None: left out, too big for a list (see `message_left_out`), or SQL NULL
    headers: str | None
    message_chars: int | None = None  # None: SQL NULL, or stored too big to be measured for a list
    headers_chars: int | None = None
    message_stored_bytes: int | None = None
    headers_stored_bytes: int | None = None

    @property
    def message_left_out(self) -> bool:
        return self.message is None and self.message_stored_bytes is not None

    @property
    def headers_left_out(self) -> bool:
        return self.headers is None and self.headers_stored_bytes is not None


def _text(column: str, *, redacted: bool) -> Cast:
    return Cast(payload(column, redacted=redacted), TextField())


def stored_bytes(column: str) -> Func:
    """The bytes a payload is stored in (compressed when large), which PostgreSQL reads from the
    row or its TOAST pointer without reading the payload; NULL for SQL NULL."""
    return Func(F(column), function="pg_column_size", output_field=IntegerField())


def if_listable(column: str, expression, output_field) -> Case:
    """`expression` of a row's payload `column`, computed only if the payload is stored in at most
    LIST_PAYLOAD_MAX_STORED_BYTES; NULL otherwise (PostgreSQL does not evaluate it then)."""
    small_enough = LessThanOrEqual(stored_bytes(column), settings.LIST_PAYLOAD_MAX_STORED_BYTES)
    return Case(When(small_enough, then=expression), default=Value(None), output_field=output_field)


def too_big_for_a_list(row) -> bool:
    """Whether a row of messages.listing() has a payload stored too big to be measured or previewed
    (if_listable left its length NULL while it is not SQL NULL)."""
    return row.message_chars is None and row.message_stored_bytes is not None


def payload_texts(
    queue: Queue, ids_by_source: dict[str, list[int]], *, redacted: bool, max_chars: int
) -> dict[int, PayloadText]:
    """msg_id -> its message and headers as JSON text, each only if at most `max_chars` long (the
    database leaves a longer one out and says how long, or only how big it is stored when that is
    over LIST_PAYLOAD_MAX_STORED_BYTES); a msg_id gone meanwhile is left out."""
    found: dict[int, PayloadText] = {}
    for kind, msg_ids in ids_by_source.items():
        if not msg_ids:
            continue
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        columns = {"message": _text("message", redacted=redacted)}
        if model.has_column("headers"):
            columns["headers"] = _text("headers", redacted=redacted)
        annotations = {}
        for column, text in columns.items():
            annotations[f"{column}_stored_bytes"] = stored_bytes(column)
            annotations[f"{column}_chars"] = if_listable(column, Length(text), IntegerField())
            annotations[f"{column}_text"] = Case(
                When(**{f"{column}_chars__lte": max_chars}, then=text), default=Value(None, TextField())
            )
        rows = model.objects.filter(msg_id__in=msg_ids).annotate(**annotations).values("msg_id", *annotations)
        for row in rows:
            found[row["msg_id"]] = PayloadText(
                row["message_text"],
                row.get("headers_text"),
                row["message_chars"],
                row.get("headers_chars"),
                row["message_stored_bytes"],
                row.get("headers_stored_bytes"),
            )
    return found


@dataclasses.dataclass(frozen=True)
class StoredPayload:
    """One payload of one row, measured by the database but not read: read it with chunks()."""

    queue: Queue
    kind: str
    msg_id: int
    column: str  # "message" or "headers"
    redacted: bool
    chars: int | None  # None: SQL NULL (a message sent as NULL, a row without headers)
    bytes: int | None
    # A download is streamed after the request's middleware has finished: the database it was for.
    database_alias: str = dataclasses.field(default_factory=watched_alias)

    def chunks(self) -> Iterator[str]:
        """The payload's text, CHUNK_CHARS at a time; PayloadGone if the row went meanwhile."""
        if self.chars is None:
            yield "null"
            return
        with watching(self.database_alias):
            model = self.queue.live_messages if self.kind == LIVE else self.queue.archived_messages
            text = _text(self.column, redacted=self.redacted)
            for start in range(1, self.chars + 1, CHUNK_CHARS):
                chunk = (
                    model.objects.filter(msg_id=self.msg_id)
                    .annotate(chunk=Substr(text, start, CHUNK_CHARS))
                    .values_list("chunk", flat=True)
                    .first()
                )
                if chunk is None:
                    raise PayloadGone(
                        f"message {self.msg_id} left {self.queue.queue_name}'s {self.kind} table while it was read"
                    )
                yield chunk
                del chunk  # not held while the next one is read

    def encoded_chunks(self) -> Iterator[bytes]:
        for chunk in self.chunks():
            encoded = chunk.encode()
            del chunk
            yield encoded


def stored_payload(
    queue: Queue, msg_id: int, *, column: str = "message", source: str | None = None, redacted: bool
) -> StoredPayload | None:
    """The payload of msg_id (live, else archived, or in `source`) measured; None if no such row."""
    for kind in [source] if source else [LIVE, ARCHIVE]:
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        if column == "headers" and not model.has_column("headers"):
            sizes = model.objects.filter(msg_id=msg_id).annotate(
                chars=Value(None, IntegerField()), size=Value(None, IntegerField())
            )
        else:
            text = _text(column, redacted=redacted)
            sizes = model.objects.filter(msg_id=msg_id).annotate(
                chars=Length(text), size=Func(text, function="octet_length", output_field=IntegerField())
            )
        found = sizes.values_list("chars", "size").first()
        if found is not None:
            return StoredPayload(
                queue=queue, kind=kind, msg_id=msg_id, column=column, redacted=redacted, chars=found[0], bytes=found[1]
            )
    return None

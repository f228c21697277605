"""The whole message and headers of a page's rows, as PostgreSQL's own JSON text.

The message list (messages.listing) keeps payloads in the database and shows a preview; the API
gives each row's payload whole. They are read here by primary key, redacted the same way
(redaction.payload), and as text: jsonb keeps numbers as numeric, and text keeps every digit.
"""
from __future__ import annotations

import dataclasses

from django.db.models import TextField, Value
from django.db.models.functions import Cast

from queues.pgmq import LIVE, Queue
from queues.redaction import payload
from queues.selectors.messages import _model_has


@dataclasses.dataclass(frozen=True)
class PayloadText:
    message: str
    headers: str | None


def payload_texts(queue: Queue, ids_by_source: dict[str, list[int]], *, redacted: bool) -> dict[int, PayloadText]:
    """msg_id -> its message and headers as JSON text; a msg_id gone meanwhile is left out."""
    found: dict[int, PayloadText] = {}
    for kind, msg_ids in ids_by_source.items():
        if not msg_ids:
            continue
        model = queue.live_messages if kind == LIVE else queue.archived_messages
        headers = (Cast(payload("headers", redacted=redacted), TextField()) if _model_has(model, "headers")
                   else Value(None, TextField()))
        rows = (model.objects.filter(msg_id__in=msg_ids)
                .annotate(message_text=Cast(payload("message", redacted=redacted), TextField()), headers_text=headers)
                .values_list("msg_id", "message_text", "headers_text"))
        found.update({msg_id: PayloadText(message, headers) for msg_id, message, headers in rows})
    return found

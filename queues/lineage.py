"""Where a copy the dashboard made came from, in the copy's own headers; which queue is whose dead-letter queue.

Every copy (move, requeue, edit and resend, singly or by a job) gets under ORIGIN_KEY a list of
origins, oldest first: a copy of a copy keeps the chain, as RabbitMQ's `x-death` does. The merge
is done in SQL on the stored jsonb, so the client's headers stay exactly as they were:
- headers NULL (or JSON null): only the origin key;
- headers an object: the same object, the origin appended to ORIGIN_KEY's list (a value that is not
  a list, put there by someone else, becomes the list's first item);
- headers any other JSON (an array, a string, a number): kept whole under WRAPPED_HEADERS_KEY.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime

from django.conf import settings
from psycopg import sql

from queues import vocabulary

ORIGIN_KEY = "x-pgmq-dashboard-origin"
WRAPPED_HEADERS_KEY = "x-pgmq-dashboard-headers"

# `orders-dlq`, `orders_dlq`, `orders.dead` are orders' dead-letter queues (any case of the suffix).
DEAD_LETTER_NAME = re.compile(r"^(?P<queue>.+?)(?:[-_]dlq|\.dead)$", re.IGNORECASE)


def origin_sql(*, queue_name: str, source: str, action: str, by: str, msg_id, read_ct) -> sql.Composable:
    """One origin as a jsonb expression; `msg_id` and `read_ct` are SQL (a column or a literal)."""
    return sql.SQL(
        "jsonb_build_object('queue', {queue}, 'msg_id', {msg_id}, 'read_ct', {read_ct}, 'source', {source}, "
        "'action', {action}, 'by', {by}, 'at', to_jsonb(clock_timestamp()))"
    ).format(
        queue=sql.Literal(queue_name),
        msg_id=msg_id,
        read_ct=read_ct,
        source=sql.Literal(source),
        action=sql.Literal(action),
        by=sql.Literal(by),
    )


def with_origin_sql(headers: sql.Composable, origin: sql.Composable) -> sql.Composable:
    """`headers` (a jsonb expression) with `origin` added, by the rules of this module's docstring."""
    return sql.SQL(
        "CASE WHEN {h} IS NULL OR jsonb_typeof({h}) = 'null' THEN jsonb_build_object({key}, jsonb_build_array({o})) "
        "WHEN jsonb_typeof({h}) <> 'object' THEN jsonb_build_object({wrapped}, {h}, {key}, jsonb_build_array({o})) "
        "ELSE {h} || jsonb_build_object({key}, "
        "CASE WHEN jsonb_typeof({h} -> {key}) = 'array' THEN {h} -> {key} "
        "WHEN {h} -> {key} IS NULL THEN '[]'::jsonb ELSE jsonb_build_array({h} -> {key}) END "
        "|| jsonb_build_array({o})) END"
    ).format(h=headers, o=origin, key=sql.Literal(ORIGIN_KEY), wrapped=sql.Literal(WRAPPED_HEADERS_KEY))


def origin_filter(queue_name: str, msg_id: int | None) -> dict:
    """The jsonb a copy's headers contain (@>) when it descends from that queue (or message)."""
    wanted = {"queue": queue_name, **({"msg_id": msg_id} if msg_id is not None else {})}
    return {ORIGIN_KEY: [wanted]}


@dataclasses.dataclass(frozen=True)
class Origin:
    queue: str
    msg_id: int
    read_ct: int | None
    source: str
    action: str
    by: str
    at: datetime | None

    @property
    def action_words(self) -> str:
        """The action as the pages name it ("Move to another queue"); a name this version does not know, as written."""
        known = vocabulary.ACTIONS.get(self.action)
        return known.label.lower() if known else self.action.replace("_", " ")


def origins(headers) -> list[Origin]:
    """The origins a copy's headers record, oldest first; what is not one of ours is left out."""
    if not isinstance(headers, dict) or not isinstance(headers.get(ORIGIN_KEY), list):
        return []
    found = []
    for item in headers[ORIGIN_KEY]:
        if not isinstance(item, dict) or not isinstance(item.get("queue"), str) or type(item.get("msg_id")) is not int:
            continue
        try:
            at = datetime.fromisoformat(item["at"]) if isinstance(item.get("at"), str) else None
        except ValueError:
            at = None
        found.append(
            Origin(
                queue=item["queue"],
                msg_id=item["msg_id"],
                read_ct=item["read_ct"] if type(item.get("read_ct")) is int else None,
                source=str(item.get("source", "")),
                action=str(item.get("action", "")),
                by=str(item.get("by", "")),
                at=at,
            )
        )
    return found


def is_dead_letter_queue(queue_name: str) -> bool:
    """Named as one (`X-dlq`, `X_dlq`, `X.dead`) or set as one (DASHBOARD_DEAD_LETTER_QUEUES): messages wait
    there for a person, nobody consumes it."""
    return queue_name in settings.DEAD_LETTER_QUEUES or DEAD_LETTER_NAME.match(queue_name) is not None


def queue_of_dead_letters(queue_name: str, queue_names: list[str]) -> str | None:
    """The queue `queue_name` is the dead-letter queue of: DASHBOARD_DEAD_LETTER_QUEUES says so, or its name."""
    names = set(queue_names)
    configured = settings.DEAD_LETTER_QUEUES.get(queue_name)
    if configured in names:
        return configured
    match = DEAD_LETTER_NAME.match(queue_name)
    return match.group("queue") if match and match.group("queue") in names else None


def dead_letters_of(queue_name: str, queue_names: list[str]) -> str | None:
    """The dead-letter queue of `queue_name`, if it has one."""
    names = set(queue_names)
    for dead_letters, queue in settings.DEAD_LETTER_QUEUES.items():
        if queue == queue_name and dead_letters in names:
            return dead_letters
    return next((queue_name + suffix for suffix in ("-dlq", "_dlq", ".dead") if queue_name + suffix in names), None)


def dead_letter_pair(queue_name: str, queue_names: list[str]) -> str | None:
    """The queue `queue_name` is paired with, either way: what a move from it proposes."""
    return queue_of_dead_letters(queue_name, queue_names) or dead_letters_of(queue_name, queue_names)

"""pgmq's topics (1.11+): the bindings (pattern -> queue) and where a routing key would go.

The routing is pgmq's own: `pgmq.test_routing` matches the key against each binding's compiled
pattern (`*` one dot-separated word, `#` zero or more) without sending anything.
"""

from __future__ import annotations

import dataclasses

from django.db import DatabaseError, connections, transaction

from queues.watched import watched_alias

BINDINGS_SHOWN = 1_000


@dataclasses.dataclass(frozen=True)
class TopicBinding:
    pattern: str
    queue_name: str


@dataclasses.dataclass(frozen=True)
class Bindings:
    shown: list[TopicBinding]
    more: bool  # there are more than BINDINGS_SHOWN


class RoutingKeyRefused(ValueError):
    """pgmq refused the routing key; the message is pgmq's own."""


def bindings() -> Bindings:
    """The bindings by pattern, then queue: at most BINDINGS_SHOWN of them."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT pattern, queue_name FROM pgmq.topic_bindings ORDER BY pattern, queue_name LIMIT %s",
            [BINDINGS_SHOWN + 1],
        )
        found = [TopicBinding(*row) for row in cursor.fetchall()]
    return Bindings(shown=found[:BINDINGS_SHOWN], more=len(found) > BINDINGS_SHOWN)


def routes(routing_key: str) -> list[TopicBinding]:
    """The bindings a message sent with this routing key would follow, one per queue reached and
    pattern matched, by pattern (pgmq.test_routing)."""
    alias = watched_alias()
    try:
        # A savepoint: pgmq's refusal must not break a transaction the request may be in.
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT pattern, queue_name FROM pgmq.test_routing(%s) ORDER BY pattern, queue_name", [routing_key]
            )
            return [TopicBinding(*row) for row in cursor.fetchall()]
    except DatabaseError as error:
        refusal = _pgmq_refusal(error)
        if refusal is None:
            raise
        raise RoutingKeyRefused(refusal) from error


def _pgmq_refusal(error: DatabaseError) -> str | None:
    """pgmq's own words when its validation refused the key (RAISE EXCEPTION: SQLSTATE P0001);
    None for any other failure (a timeout, a lost connection), which is not the key's fault."""
    cause = error.__cause__
    if getattr(cause, "sqlstate", None) != "P0001":
        return None
    return cause.diag.message_primary or str(cause).strip()

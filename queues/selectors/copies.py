"""Where the copies a move, a requeue or an edit-and-resend made of a message went (the copies
table the actions write)."""

from __future__ import annotations

from queues.models import MessageCopy
from queues.pgmq import Queue
from queues.watched import watched_name


def copies_of(
    queue: Queue, msg_ids: list[int], *, action: str | None = None, using: str = "default"
) -> dict[int, dict]:
    """Where copies of these messages of `queue` went (the latest of each), as the copies table says."""
    found = MessageCopy.objects.using(using).filter(
        database=watched_name(), queue_name=queue.queue_name, msg_id__in=msg_ids
    )
    if action:
        found = found.filter(action=action)
    return {
        copy.msg_id: {
            "queue": copy.copy_queue,
            "msg_id": copy.copy_msg_id,
            "at": copy.at.isoformat(),
            "by": copy.username,
            "action": copy.action,
        }
        for copy in found.order_by("id")
    }

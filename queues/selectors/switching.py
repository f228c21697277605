"""Which page of another watched database the header's switcher links to: the same one when it exists there."""

from __future__ import annotations

from django.db import DatabaseError

from queues.pgmq import Queue
from queues.watched import statement_budget, watching

# The header of every queue page asks each other database once: a slow one must not hold the page.
LOOKUP_BUDGET_MS = 500


def has_queue(alias: str, queue_name: str) -> bool:
    """Whether the watched database `alias` lists the queue in pgmq.meta (False when it cannot say in time)."""
    try:
        with watching(alias), statement_budget(LOOKUP_BUDGET_MS):
            return Queue.objects.filter(queue_name=queue_name).exists()
    except DatabaseError:
        return False

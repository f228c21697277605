"""Whether the PostgreSQL role the dashboard connects as may change a queue's messages.

A read-only role (README, "The least privileges it needs") sees everything and changes nothing:
the pages then hide their actions and say why, instead of offering buttons the database refuses.
"""

from __future__ import annotations

from django.db import connections

from queues.pgmq import PGMQ_SCHEMA, Queue
from queues.watched import watched_alias

# What pgmq's functions need on a queue's tables when the dashboard calls them (they run with the
# caller's privileges): send inserts, set_vt updates, delete deletes, archive moves a row across.
NEEDED = {"live": ("SELECT", "INSERT", "UPDATE", "DELETE"), "archive": ("SELECT", "INSERT", "DELETE")}


def write_refusal(queue: Queue) -> str | None:
    """Why the database role may not act on this queue's messages; None when it may."""
    needed = [(queue.tables[kind].name, privilege) for kind, privileges in NEEDED.items() for privilege in privileges]
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT current_user, array_agg(format('%%s on %%I.%%I', privilege, %s::text, name)) "
            "FILTER (WHERE NOT has_table_privilege(format('%%I.%%I', %s::text, name), privilege)) "
            "FROM unnest(%s::text[], %s::text[]) AS needed(name, privilege)",
            [PGMQ_SCHEMA, PGMQ_SCHEMA, [name for name, _ in needed], [privilege for _, privilege in needed]],
        )
        role, missing = cursor.fetchone()
    if not missing:
        return None
    return f"the database role “{role}” may read this queue but not change it: it lacks {', '.join(missing)}"

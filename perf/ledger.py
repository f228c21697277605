"""The ledger: every message ever created is in exactly one place, with its message and headers as
created. The load test (perf/loadtest.py) ends by checking it, and so does tests/test_ledger.py.

A (queue, msg_id) is created by the caller's producers, by the dashboard's send (the audit record
holds the message), or as a copy by a move, a requeue or an edit and resend (the audit record maps
each original msg_id to its copy's). Its one place is then the live table, the archive, the
consumers' log of what they deleted, the audit record of a deletion from the dashboard (which keeps
the payloads), or away: moved with its original deleted, or requeued with its archived copy removed.
Nothing may be purged beyond what the audit record keeps, or the ledger cannot be exact."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from queues import vocabulary
from queues.lineage import ORIGIN_KEY, WRAPPED_HEADERS_KEY
from queues.models import AuditEntry
from queues.pgmq import Queue

Key = tuple[str, int]  # (queue name, msg_id)
Payload = tuple[object, object]  # (message, headers), as PostgreSQL gives them back


@dataclass
class Ledger:
    created: dict[Key, Payload]
    origins: Counter[str]  # how many were created, by whom
    found: Counter[str]  # how many are in each place
    problems: list[str]

    @property
    def holds(self) -> bool:
        return not self.problems

    def figures(self) -> dict:
        return {
            "holds": self.holds,
            "msg_ids": len(self.created),
            "created": dict(self.origins),
            "found": dict(self.found),
            "problems": self.problems[:20],
            "problem_count": len(self.problems),
        }


def as_copied(original: Payload, found: Payload, source: Key, action: str) -> Payload:
    """What a copy of `original` must hold: the same message, and its headers with one more origin
    at the end of ORIGIN_KEY's list naming `source` and `action` (queues/lineage.py's rules, written
    again here so that the SQL that applies them is checked, not trusted)."""
    message, headers = original
    found_headers = found[1]
    chain = found_headers.get(ORIGIN_KEY) if isinstance(found_headers, dict) else None
    last = chain[-1] if isinstance(chain, list) and chain else None
    if not isinstance(last, dict) or (last.get("queue"), last.get("msg_id"), last.get("action")) != (*source, action):
        return (message, {"origin naming": (source, action), "in headers": headers})
    if headers is None:
        return message, {ORIGIN_KEY: [last]}
    if not isinstance(headers, dict):
        return message, {WRAPPED_HEADERS_KEY: headers, ORIGIN_KEY: [last]}
    before = headers.get(ORIGIN_KEY)
    before = before if isinstance(before, list) else [] if before is None else [before]
    return message, {**headers, ORIGIN_KEY: [*before, last]}


def check(
    *,
    queues: list[str],
    sent: dict[Key, Payload],
    consumer_deleted: dict[Key, Payload],
    after_entry: int = 0,
    dashboard_sends: Iterable[tuple[str, int, Payload]] = (),
) -> Ledger:
    """The ledger of `queues`, whose producers sent `sent` and whose consumers deleted
    `consumer_deleted`, from the audit records after `after_entry` and the tables as they are now.
    `dashboard_sends` are messages a user sent from the dashboard and saw the msg_id of."""
    problems: list[str] = []
    created: dict[Key, Payload] = dict(sent)
    origins = Counter({"sent by producers": len(created)})
    dashboard_deleted: dict[Key, Payload] = {}
    moved_away: set[Key] = set()
    copied_from: dict[Key, tuple[Key, str]] = {}  # a copy the dashboard made: its original, and how
    entries = AuditEntry.objects.filter(pk__gt=after_entry, queue_name__in=queues).order_by("pk")
    for entry in entries:
        queue, target, details = entry.queue_name, entry.target, entry.details
        parameters = target.get("parameters") or {}
        if entry.action == vocabulary.SEND and "msg_id" in details:
            created[(queue, details["msg_id"])] = (target["message"], target["headers"])
            origins["sent from the dashboard"] += 1
        if "new_msg_ids_not_kept" in details:
            problems.append(f"audit entry {entry.pk} ({entry.action}) did not keep its new msg_ids")
        for old, new in details.get("new_msg_ids", {}).items():
            original = (queue, int(old))
            if entry.action == vocabulary.EDIT_AND_RESEND:
                created[(target["destination"], new)] = (target["message"], target["headers"])
                copied_from[(target["destination"], new)] = ((queue, int(old)), entry.action)
                continue
            if original not in created:
                problems.append(f"audit entry {entry.pk} copied {original}, which nobody sent")
                continue
            created[(parameters["destination"], new)] = created[original]
            copied_from[(parameters["destination"], new)] = (original, entry.action)
            origins[f"copies made by {entry.action}"] += 1
            if (entry.action == vocabulary.MOVE and parameters.get("original") == "delete") or (
                entry.action == vocabulary.REQUEUE and parameters.get("remove_archived")
            ):
                if original in moved_away:
                    problems.append(f"{original} was moved away twice")
                moved_away.add(original)
        if entry.action in (vocabulary.DELETE, vocabulary.DELETE_ARCHIVED, vocabulary.PURGE) and entry.affected:
            if entry.deleted_payloads is None:
                problems.append(f"audit entry {entry.pk} ({entry.action}) did not keep the deleted payloads")
            for payload in entry.deleted_payloads or []:
                key = (queue, payload["msg_id"])
                if key in dashboard_deleted:
                    problems.append(f"{key} was deleted from the dashboard twice")
                dashboard_deleted[key] = (payload["message"], payload["headers"])
    for queue, msg_id, payload in dashboard_sends:
        if created.get((queue, msg_id)) != payload:
            problems.append(f"({queue!r}, {msg_id}) sent from the dashboard is not in the audit log as sent")

    live, archive = {}, {}
    for queue in Queue.objects.filter(queue_name__in=queues):
        for place, model in ((live, queue.live_messages), (archive, queue.archived_messages)):
            for msg_id, message, headers in model.objects.values_list("msg_id", "message", "headers"):
                place[(queue.queue_name, msg_id)] = (message, headers)
    places = {
        "live": live,
        "archive": archive,
        "deleted by a consumer": consumer_deleted,
        "deleted from the dashboard": dashboard_deleted,
        "moved away": moved_away,
    }

    def expected(key: Key, found: Payload) -> Payload:
        """A copy holds its original as that was expected, with one more origin (a copy of a copy two)."""
        if key not in copied_from:
            return created[key]
        source, action = copied_from[key]
        if action == vocabulary.EDIT_AND_RESEND:  # what the user wrote, not the original, is copied
            return as_copied(created[key], found, source, action)
        message, headers = found
        chain = headers.get(ORIGIN_KEY) if isinstance(headers, dict) else None
        # The original as it was copied: what this copy holds, less the origin the copy added.
        before = (message, {**headers, ORIGIN_KEY: chain[:-1]}) if isinstance(chain, list) else found
        return as_copied(expected(source, before), found, source, action)

    found_in: Counter[str] = Counter()
    for key, payload in created.items():
        found = [name for name, place in places.items() if key in place]
        if len(found) != 1:
            problems.append(f"{key} is in {' and '.join(found) or 'no place'}")
            continue
        found_in[found[0]] += 1
        if found[0] == "moved away":
            continue
        payload = expected(key, places[found[0]][key])
        if places[found[0]][key] != payload:
            problems.append(f"{key} changed: {payload} became {places[found[0]][key]}")
    unknown = set().union(live, archive, consumer_deleted, dashboard_deleted) - set(created)
    problems += [f"{key} is there but nobody sent it" for key in sorted(unknown)[:20]]
    return Ledger(created, origins, found_in, problems)

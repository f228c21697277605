"""The audit log's hash chain, checked: every record's hash recomputed here, in Python, from its
columns' text (as migration 0008's trigger hashes them), so a trigger taken off or replaced shows
as much as an edited or deleted record. Records are walked in id order (the trigger gives ids
under the chain's lock); ids may have gaps (an action rolled back takes an id too), so a record
is missing only when the next one was chained to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Sequence

from django.conf import settings
from django.db import connections

from queues.models import AuditChainHead, AuditEntry

# What the page checks on each load; `manage.py verify_audit` checks every record.
PAGE_CHECKS_NEWEST = 1000
BATCH = 1000


def _digest(column: str) -> str:
    return f"encode(sha256(convert_to({column}::text, 'UTF8')), 'hex')"


# The content's fields, in the trigger's order; the JSON columns travel as digests, so checking
# a record never reads the payloads it kept.
CONTENT_FIELDS = [
    "id::text",
    "chain_prev_id::text",
    "extract(epoch FROM at)::text",
    "database",
    "user_id::text",
    "username",
    "action",
    "queue_name",
    _digest("target"),
    "requested::text",
    "affected::text",
    "already_gone::text",
    "skipped::text",
    "outcome",
    _digest("details"),
    _digest("deleted_payloads"),
    "deleted_count::text",
    "request_token::text",
]
# Each field named apart: `id::text` would be another output column `id`, and ORDER BY id ambiguous.
RECORDS_SQL = (
    f"SELECT id, chain_prev_id, chain_hash, "
    f"{', '.join(f'{field} AS field_{n}' for n, field in enumerate(CONTENT_FIELDS))} "
    f"FROM {AuditEntry._meta.db_table} "
)


def content(fields: Sequence[str | None]) -> bytes:
    """Each field as `<bytes>:<text>`, NULL as `-`, joined by commas: no two records share one."""
    return b",".join(
        b"-" if field is None else b"%d:%s" % (len(encoded := field.encode()), encoded) for field in fields
    )


def link_hash(prev_hash: str, fields: Sequence[str | None]) -> str:
    return hashlib.sha256(prev_hash.encode() + content(fields)).hexdigest()


@dataclasses.dataclass(frozen=True)
class ChainVerdict:
    problem: str | None  # the first one found: "record #12 changed", "record #13 missing (#14 follows #12)"
    through: int | None  # the newest record checked intact
    through_hash: str | None
    checked: int
    whole: bool  # every record was checked, not only the newest

    @property
    def intact(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.problem:
            return self.problem
        if self.through is None:
            return "intact: no records yet"
        records = f"{self.checked:,} record{'s' if self.checked != 1 else ''}"
        return f"intact through #{self.through} ({records if self.whole else f'the newest {records} checked'})"


@dataclasses.dataclass
class _Walk:
    prev_id: int | None
    prev_hash: str
    head: AuditChainHead | None
    checked: int = 0
    head_seen: bool = False

    def problem_at(self, row: Sequence) -> str | None:
        """What is wrong at this record, or None (and it becomes the one the next must follow)."""
        entry_id, prev_id, stored_hash, *fields = row
        if prev_id != self.prev_id:
            if prev_id is not None and (self.prev_id or 0) < prev_id < entry_id:
                follows = f"#{entry_id} follows #{self.prev_id}" if self.prev_id else f"#{entry_id} is the first record"
                return f"record #{prev_id} missing ({follows})"
            if prev_id is None:
                return f"record #{entry_id} is not chained to #{self.prev_id}"
            return f"record #{entry_id} changed"
        if link_hash(self.prev_hash, fields) != stored_hash:
            return f"record #{entry_id} changed"
        if self.head is not None and entry_id == self.head.last_id:
            self.head_seen = True
            if stored_hash != self.head.last_hash:
                return f"record #{entry_id} changed (its hash is not the one the chain's head keeps)"
        self.prev_id, self.prev_hash = entry_id, stored_hash
        self.checked += 1
        return None

    def problem_at_end(self, any_records: bool) -> str | None:
        """A record missing from the end shows against the head, which names the newest."""
        if self.head is None or self.head.last_id is None:
            return "the chain's head (queues_auditchainhead) names no record" if any_records else None
        if not self.head_seen:
            last = f"the last record is #{self.prev_id}" if self.prev_id else "no record is left"
            return f"record #{self.head.last_id} missing (the chain's newest; {last})"
        return None

    def verdict(self, problem: str | None, *, whole: bool) -> ChainVerdict:
        return ChainVerdict(
            problem=problem,
            through=self.prev_id,
            through_hash=self.prev_hash or None,
            checked=self.checked,
            whole=whole,
        )


def _rows(cursor, where: str, params: list) -> list[tuple]:
    cursor.execute(RECORDS_SQL + where, params)
    return cursor.fetchall()


def _all_rows(cursor) -> Iterator[tuple]:
    after = 0
    while rows := _rows(cursor, "WHERE id > %s ORDER BY id LIMIT %s", [after, BATCH]):
        yield from rows
        after = rows[-1][0]


def _walk(walk: _Walk, rows: Iterable[tuple], *, whole: bool) -> ChainVerdict:
    any_records = walk.prev_id is not None
    for row in rows:
        any_records = True
        if problem := walk.problem_at(row):
            return walk.verdict(problem, whole=whole)
    return walk.verdict(walk.problem_at_end(any_records), whole=whole)


def verify_chain(*, newest: int | None = None) -> ChainVerdict:
    """Check every record (newest=None), or only the newest `newest` (each against the stored hash
    of the one before them): the first problem found, or how far the chain is intact."""
    # The head first: records committed after it are newer than the one it names, so it is never
    # ahead of what the records read next show, unless one is missing.
    head = AuditChainHead.objects.filter(pk=1).first()
    with connections[settings.DASHBOARD_DATABASE_ALIAS].cursor() as cursor:
        if newest is None:
            return _walk(_Walk(None, "", head), _all_rows(cursor), whole=True)
        rows = _rows(cursor, "ORDER BY id DESC LIMIT %s", [newest + 1])[::-1]
    if len(rows) <= newest:
        return _walk(_Walk(None, "", head), rows, whole=True)
    anchor, rows = rows[0], rows[1:]
    walk = _Walk(anchor[0], anchor[2], head)
    # More records than the window came since the head was read: the one it names is not in it.
    walk.head_seen = head is not None and head.last_id is not None and head.last_id <= anchor[0]
    return _walk(walk, rows, whole=False)

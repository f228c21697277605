"""Every write the dashboard makes, through pgmq's functions (README: "What you can do").

An action is framed by `acting` (one transaction, its audit record in it, a failure recorded
after the rollback) and done in batches of known msg_ids by `run_batch` (which bulk jobs call
too, see jobs.py). What decides from a message's state (is it in flight?) locks those messages
first (FOR UPDATE): consumers, reading with SKIP LOCKED, pass over them meanwhile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.models import TextField
from django.db.models.functions import Cast, Now
from django.utils import timezone
from psycopg import sql

from queues.jsontext import RawJSON, as_jsonb, json_text
from queues.lineage import origin_sql, with_origin_sql
from queues.models import AuditEntry, BulkJob, MessageCopy
from queues.pgmq import (
    ARCHIVE,
    LIVE,
    PGMQ_SCHEMA,
    Capabilities,
    Queue,
    TableSharing,
    capabilities,
    table_sharing,
    version_mismatch,
)
from queues.selectors.copies import copies_of
from queues.vocabulary import (
    ARCHIVE_ACTION,
    CREATE_QUEUE,
    DELAY,
    DELETE,
    DELETE_ARCHIVED,
    DROP_QUEUE,
    EDIT_AND_RESEND,
    MOVE,
    PURGE,
    REQUEUE,
    RETRY,
    SEND,
)
from queues.watched import statement_budget, watched_alias, watched_name

# Deleted payloads kept in one audit record stop here, whatever their number: far below jsonb's
# 255 MB, and a page that still opens.
PAYLOAD_BYTES_LIMIT = 16 * 1024 * 1024


class ActionRefused(Exception):
    """The action cannot be done as asked (a destination that does not exist, a name pgmq refuses):
    the message says why, for the person who asked."""

    def not_done(self) -> str:
        """What the pages and the API tell the person who asked."""
        return f"Not done: {self}. Nothing was changed; the attempt is in the audit log."


class QueueMissing(ActionRefused):
    """A queue the action names is not there (dropped meanwhile, or never was)."""


class SecondDelivery(ActionRefused):
    """Asked to copy a message a consumer is working on, without saying a second delivery is meant."""


# What an action done through one of several names sharing a table (see pgmq.TableSharing) would
# do to the others' messages.
SHARED_TABLE_CONSEQUENCES = {
    PURGE: "a purge through either name empties the queue of both",
    DROP_QUEUE: "a drop through either name destroys the messages of both and leaves the other listed in "
    "pgmq.meta without tables",
    MOVE: "moving messages into or out of either name moves them into or out of both",
    REQUEUE: "requeueing messages into or out of either name requeues them into or out of both",
    EDIT_AND_RESEND: "a copy sent to either name lands in both",
}


class TablesShared(ActionRefused):
    """Refused because a queue the action names shares its tables with another name."""

    def __init__(self, sharing: TableSharing, action: str) -> None:
        others = ", ".join(f"“{name}”" for name in sharing.others)
        names = "both names" if len(sharing.names) == 2 else f"all {len(sharing.names)} names"
        super().__init__(
            f"“{sharing.queue_name}” shares its tables with {others} (pgmq gives {names} the table "
            f"{sharing.live_table}): {SHARED_TABLE_CONSEQUENCES[action]}; keep one name first"
        )
        self.sharing, self.action = sharing, action


def refuse_shared_tables(action: str, *queues: Queue) -> None:
    """Refuse `action` if one of `queues` shares its tables, asked of pgmq.meta now."""
    found = table_sharing([queue.queue_name for queue in queues])
    for queue in queues:
        if queue.queue_name in found:
            raise TablesShared(found[queue.queue_name], action)


class AlreadyDone(Exception):
    """This very confirmation was acted on before (sent twice: a double click, a resubmitted form)."""

    def __init__(self, record: AuditEntry | BulkJob) -> None:
        super().__init__(f"already done: {record}")
        self.record = record


@dataclasses.dataclass
class BatchResult:
    affected: list[int] = dataclasses.field(default_factory=list)
    already_gone: list[int] = dataclasses.field(default_factory=list)
    skipped: list[int] = dataclasses.field(default_factory=list)
    new_ids: dict[int, int] = dataclasses.field(default_factory=dict)  # original msg_id -> new msg_id
    # A requeue of a message requeued before, left alone: original msg_id -> where its copy went.
    copied_before: dict[int, dict] = dataclasses.field(default_factory=dict)
    payloads_left_out: bool = False  # deleted payloads too big together to keep in the record
    deleted_payloads: list[RawJSON] = dataclasses.field(default_factory=list)  # one JSON object each


@dataclasses.dataclass(frozen=True)
class Outcome:
    result: BatchResult
    audit: AuditEntry


def same_database() -> bool:
    """The dashboard's tables live in the pgmq database, reached as the same role (the default):
    one transaction can hold both."""
    ours, theirs = settings.DATABASES[settings.DASHBOARD_DATABASE_ALIAS], settings.DATABASES[watched_alias()]
    return all(ours[key] == theirs[key] for key in ("NAME", "HOST", "PORT", "USER"))


@contextmanager
def action_transaction() -> Iterator[str]:
    """One transaction on the pgmq database; yields the database alias to record the action with.

    With the dashboard's schema in the same database, the records go through this very
    transaction (its search_path switched to that schema for the transaction's length).
    """
    with transaction.atomic(using=watched_alias()):
        if same_database():
            with connections[watched_alias()].cursor() as cursor:
                cursor.execute("SELECT set_config('search_path', %s, true)", [settings.DASHBOARD_SCHEMA])
            yield watched_alias()
        else:
            yield settings.DASHBOARD_DATABASE_ALIAS


def save_through(instance, alias: str) -> None:
    """Save one of the dashboard's rows through `alias`, then let it belong to its own alias again:
    Django would otherwise read it back later through the pgmq connection, outside the
    transaction whose search_path found the dashboard's schema."""
    instance.save(using=alias)
    instance._state.db = settings.DASHBOARD_DATABASE_ALIAS


def sql_rows(cursor_sql: str, params: list | None) -> list[tuple]:
    """Rows of a statement; params None for one with no placeholders (its % signs, in a quoted table
    name, are then text)."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(cursor_sql, params)
        return cursor.fetchall()


def _pgmq_ids(function_sql: str, params: list) -> set[int]:
    """msg_ids a pgmq set-returning function handled (archive, delete, set_vt, ...)."""
    return {row[0] for row in sql_rows(function_sql, params)}


def _archive(queue: Queue, msg_ids: list[int]) -> set[int]:
    _refuse_if_tables_are_older(queue, "pgmq.archive")
    return _pgmq_ids("SELECT * FROM pgmq.archive(%s, %s::bigint[])", [queue.queue_name, msg_ids])


def _refuse_if_tables_are_older(queue: Queue, function: str) -> Capabilities:
    """set_vt and archive write every column of pgmq's message record: on tables older than the
    functions (a restored dump) they fail with a database error, refused here saying why instead.
    What this database's pgmq can do, read for it, is returned for the caller's use."""
    found = capabilities()
    mismatch = version_mismatch(queue, found)
    if mismatch:
        raise ActionRefused(
            f"{function} cannot run on “{queue.queue_name}”: {mismatch.explanation}; the queue's page gives "
            "the SQL that adds the missing columns"
        )
    return found


def _lock_table(queue: Queue, kind: str) -> None:
    """The lock pgmq's TRUNCATE or DROP takes anyway, taken first: what is counted is what goes."""
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE")
            .format(sql.Identifier("pgmq", queue.tables[kind].name))
            .as_string()
        )


def _still_there(
    queue: Queue, kind: str, msg_ids: list[int], *, payloads: bool = False, lock: bool = False
) -> dict[int, dict]:
    """The messages among msg_ids still there (with their payload as exact JSON text if asked for;
    a payload never changes), and for live ones whether each is in flight by the database's clock.
    With `lock` they stay as read until the transaction ends: consumers, reading with SKIP LOCKED,
    pass over them instead of taking one the action is deciding about."""
    model = queue.live_messages if kind == LIVE else queue.archived_messages
    rows = model.objects.filter(msg_id__in=msg_ids).order_by("msg_id")
    if lock:
        rows = rows.select_for_update()
    texts = {}
    if payloads:
        texts["message_text"] = Cast("message", TextField())
        if "headers" in queue.tables[kind].columns:
            texts["headers_text"] = Cast("headers", TextField())
    found = {row["msg_id"]: row for row in rows.values("msg_id", "read_ct", **texts)}
    for row in found.values():
        for name in texts:
            row[name] = RawJSON(row[name]) if row[name] is not None else None
    if kind == LIVE and found:
        in_flight = set(
            model.objects.filter(msg_id__in=list(found), vt__gt=Now(), read_ct__gt=0).values_list("msg_id", flat=True)
        )
        for msg_id, row in found.items():
            row["in_flight"] = msg_id in in_flight
    return found


def _payload_record(row: dict) -> RawJSON:
    """A deleted message for the audit log, exactly as it was."""
    return RawJSON(
        json_text({"msg_id": row["msg_id"], "message": row["message_text"], "headers": row.get("headers_text")})
    )


def _send_edited_copy(destination: Queue, *, message: RawJSON, headers: RawJSON | None, origin: sql.Composable) -> int:
    """Send an edited message (exact JSON text) to `destination`, its headers marked with `origin`; the new msg_id."""
    arguments = [sql.Literal(destination.queue_name), sql.SQL("{}::jsonb").format(sql.Literal(str(message)))]
    if "headers" in destination.tables[LIVE].columns:
        given = sql.SQL("{}::jsonb").format(sql.Literal(str(headers) if headers is not None else None))
        arguments.append(with_origin_sql(given, origin))
    statement = sql.SQL("SELECT * FROM pgmq.send({})").format(sql.SQL(", ").join(arguments))
    return sql_rows(statement.as_string(), None)[0][0]


def _copy_rows(
    queue: Queue, kind: str, msg_ids: list[int], destination: Queue, *, action: str, by: str
) -> dict[int, int]:
    """Send a copy of these rows of `queue`'s live table or archive to `destination`, in msg_id
    order, in one statement: the payloads go from table to table inside the database, however big,
    exactly as stored, the headers marked with their origin (queues/lineage.py). msg_id -> the
    copy's msg_id."""
    if not msg_ids:
        return {}
    table = sql.Identifier(PGMQ_SCHEMA, queue.tables[kind].name)
    ids = sql.Literal(sorted(msg_ids))

    def column(name: str) -> sql.Composable:
        if name not in queue.tables[kind].columns:
            return sql.SQL("ARRAY(SELECT NULL::jsonb FROM {} WHERE msg_id = ANY({}::bigint[]) ORDER BY msg_id)").format(
                table, ids
            )
        return sql.SQL("ARRAY(SELECT {} FROM {} WHERE msg_id = ANY({}::bigint[]) ORDER BY msg_id)").format(
            sql.Identifier(name), table, ids
        )

    arguments = [sql.Literal(destination.queue_name), column("message")]
    if "headers" in destination.tables[LIVE].columns:
        headers = sql.Identifier("headers") if "headers" in queue.tables[kind].columns else sql.SQL("NULL::jsonb")
        origin = origin_sql(
            queue_name=queue.queue_name,
            source=kind,
            action=action,
            by=by,
            msg_id=sql.Identifier("msg_id"),
            read_ct=sql.Identifier("read_ct"),
        )
        arguments.append(
            sql.SQL("ARRAY(SELECT {} FROM {} WHERE msg_id = ANY({}::bigint[]) ORDER BY msg_id)").format(
                with_origin_sql(headers, origin), table, ids
            )
        )
    statement = sql.SQL("SELECT * FROM pgmq.send_batch({})").format(sql.SQL(", ").join(arguments))
    ordered = sorted(
        sql_rows(
            sql.SQL("SELECT msg_id FROM {} WHERE msg_id = ANY({}::bigint[]) ORDER BY msg_id")
            .format(table, ids)
            .as_string(),
            None,
        )
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(statement.as_string())
        copies = [row[0] for row in cursor.fetchall()]
    return dict(zip((row[0] for row in ordered), copies, strict=True))


# One batch of an action on known msg_ids, inside an action_transaction.


# pgmq's functions say which messages they handled: what a consumer took meanwhile is simply not
# among them (already gone), so archive, delete and requeue need no lock of their own.


def _payloads_fit_record(queue: Queue, kind: str, msg_ids: list[int]) -> bool:
    """Whether these messages' payloads, together, fit in one audit record: measured in the
    database, so a huge one is never read only to be left out."""
    if not msg_ids:
        return True
    table = sql.Identifier(PGMQ_SCHEMA, queue.tables[kind].name)
    headers = (
        sql.SQL("coalesce(octet_length(headers::text), 0)") if "headers" in queue.tables[kind].columns else sql.SQL("0")
    )
    statement = sql.SQL(
        "SELECT coalesce(sum(coalesce(octet_length(message::text), 0) + {}), 0) FROM {} "
        "WHERE msg_id = ANY({}::bigint[])"
    ).format(headers, table, sql.Literal(msg_ids))
    return sql_rows(statement.as_string(), None)[0][0] <= PAYLOAD_BYTES_LIMIT


def batch_delete(queue: Queue, msg_ids: list[int], *, capture_payloads: bool) -> BatchResult:
    capture = capture_payloads and _payloads_fit_record(queue, LIVE, msg_ids)
    there = _still_there(queue, LIVE, msg_ids, payloads=True) if capture else None
    targets = list(there) if there is not None else msg_ids
    deleted = _pgmq_ids("SELECT * FROM pgmq.delete(%s, %s::bigint[])", [queue.queue_name, targets])
    return BatchResult(
        affected=sorted(deleted),
        already_gone=sorted(set(msg_ids) - deleted),
        deleted_payloads=[_payload_record(there[i]) for i in sorted(deleted)] if there else [],
        payloads_left_out=capture_payloads and not capture,
    )


def batch_archive(queue: Queue, msg_ids: list[int]) -> BatchResult:
    archived = _archive(queue, msg_ids)
    return BatchResult(affected=sorted(archived), already_gone=sorted(set(msg_ids) - archived))


def _set_vt(queue: Queue, msg_ids: list[int], seconds_from_now: int) -> set[int]:
    if not msg_ids:
        return set()
    if _refuse_if_tables_are_older(queue, "pgmq.set_vt").array_set_vt:
        return _pgmq_ids(
            "SELECT msg_id FROM pgmq.set_vt(%s, %s::bigint[], %s::integer)",
            [queue.queue_name, msg_ids, seconds_from_now],
        )
    return {
        row[0]
        for msg_id in msg_ids  # pgmq before 1.8 sets one message at a time
        for row in sql_rows(
            "SELECT msg_id FROM pgmq.set_vt(%s, %s::bigint, %s::integer)", [queue.queue_name, msg_id, seconds_from_now]
        )
    }


def _split_in_flight(there: dict[int, dict], include_in_flight: bool) -> tuple[list[int], list[int]]:
    """(what to act on, what to leave alone because a consumer is working on it)."""
    in_flight = sorted(msg_id for msg_id, row in there.items() if row["in_flight"])
    if include_in_flight:
        return sorted(there), []
    return sorted(set(there) - set(in_flight)), in_flight


def batch_retry(queue: Queue, msg_ids: list[int], *, include_in_flight: bool) -> BatchResult:
    """vt to now: consumers see the messages at once. Locked, so none starts flying meanwhile."""
    there = _still_there(queue, LIVE, msg_ids, lock=True)
    targets, skipped = _split_in_flight(there, include_in_flight)
    updated = _set_vt(queue, targets, 0)
    return BatchResult(affected=sorted(updated), already_gone=sorted(set(msg_ids) - set(there)), skipped=skipped)


def batch_delay(queue: Queue, msg_ids: list[int], *, until: datetime) -> BatchResult:
    """vt to `until`. Once that time has passed (a long job), it would be a retry: messages in
    flight are then left alone, as a retry leaves them."""
    there = _still_there(queue, LIVE, msg_ids, lock=True)
    seconds = sql_rows(
        "SELECT greatest(ceil(extract(epoch FROM %s::timestamptz - clock_timestamp())), 0)::int", [until]
    )[0][0]
    targets, skipped = _split_in_flight(there, include_in_flight=seconds > 0)
    updated = _set_vt(queue, targets, seconds)
    return BatchResult(affected=sorted(updated), already_gone=sorted(set(msg_ids) - set(there)), skipped=skipped)


def batch_move(
    queue: Queue, msg_ids: list[int], *, destination: Queue, original: str, include_in_flight: bool, by: str
) -> BatchResult:
    """The redrive: a copy to `destination` of each message this takes out of the queue."""
    if destination.tables[LIVE].name == queue.tables[LIVE].name:
        raise ActionRefused(
            f"“{destination.queue_name}” and “{queue.queue_name}” are one queue to pgmq "
            "(their names differ only by case): a move would only renumber the messages"
        )
    refuse_shared_tables(MOVE, queue, destination)
    there = _still_there(queue, LIVE, msg_ids, lock=True)
    targets, skipped = _split_in_flight(there, include_in_flight)
    # Copied while locked, then taken out: the locks keep consumers off them in between.
    new_ids = _copy_rows(queue, LIVE, targets, destination, action=MOVE, by=by)
    if original == "archive":
        removed = _archive(queue, targets)
    else:
        removed = _pgmq_ids("SELECT * FROM pgmq.delete(%s, %s::bigint[])", [queue.queue_name, targets])
    if removed != set(targets):
        raise ActionRefused(
            f"messages {sorted(set(targets) - removed)} went while locked: try again"
        )  # undoes the copies
    return BatchResult(
        affected=sorted(removed), already_gone=sorted(set(msg_ids) - set(there)), skipped=skipped, new_ids=new_ids
    )


def _delete_archived_rows(queue: Queue, msg_ids: list[int]) -> set[int]:
    """pgmq has no function to delete from the archive: a plain DELETE, the table name quoted
    (and the ids as literals: with parameters, a % in the table name would read as a placeholder)."""
    statement = sql.SQL("DELETE FROM {} WHERE msg_id = ANY({}) RETURNING msg_id").format(
        sql.Identifier("pgmq", queue.tables[ARCHIVE].name), sql.Literal(msg_ids)
    )
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute(statement.as_string())
        return {row[0] for row in cursor.fetchall()}


def batch_requeue(
    queue: Queue, msg_ids: list[int], *, destination: Queue, remove_archived: bool, again: bool, alias: str, by: str
) -> BatchResult:
    """A copy of each archived message sent to `destination`. One requeued before (by anyone, even
    at this very moment: the archived rows are locked first) is left alone unless asked `again`:
    a second copy is a second delivery."""
    refuse_shared_tables(REQUEUE, queue, destination)
    there = _still_there(queue, ARCHIVE, msg_ids, lock=True)
    copied_before = {} if again else copies_of(queue, list(there), action=REQUEUE, using=alias)
    wanted = sorted(msg_id for msg_id in there if msg_id not in copied_before)
    new_ids = _copy_rows(queue, ARCHIVE, wanted, destination, action=REQUEUE, by=by)
    if remove_archived:
        _delete_archived_rows(queue, wanted)
    return BatchResult(
        affected=wanted,
        already_gone=sorted(set(msg_ids) - set(there)),
        skipped=sorted(copied_before),
        copied_before=copied_before,
        new_ids=new_ids,
    )


def _record_copies(
    alias: str, *, username: str, action: str, queue: Queue, source: str, destination: Queue, new_ids: dict[int, int]
) -> None:
    MessageCopy.objects.using(alias).bulk_create(
        [
            MessageCopy(
                database=watched_name(),
                queue_name=queue.queue_name,
                msg_id=original,
                source=source,
                copy_queue=destination.queue_name,
                copy_msg_id=copy,
                action=action,
                username=username,
            )
            for original, copy in new_ids.items()
        ]
    )


def batch_delete_archived(queue: Queue, msg_ids: list[int], *, capture_payloads: bool) -> BatchResult:
    capture = capture_payloads and _payloads_fit_record(queue, ARCHIVE, msg_ids)
    there = _still_there(queue, ARCHIVE, msg_ids, payloads=capture)
    deleted = _delete_archived_rows(queue, list(there))
    return BatchResult(
        affected=sorted(deleted),
        already_gone=sorted(set(msg_ids) - deleted),
        deleted_payloads=[_payload_record(there[i]) for i in sorted(deleted)] if capture else [],
        payloads_left_out=capture_payloads and not capture,
    )


def run_batch(
    action: str,
    queue: Queue,
    msg_ids: list[int],
    parameters: dict,
    *,
    capture_payloads: bool,
    alias: str,
    username: str,
) -> BatchResult:
    """One batch of `action`, inside an action_transaction whose records go through `alias`; the
    copies it sends are recorded there too."""
    result = _run_batch(
        action, queue, msg_ids, parameters, capture_payloads=capture_payloads, alias=alias, username=username
    )
    if result.new_ids:
        _record_copies(
            alias,
            username=username,
            action=action,
            queue=queue,
            source=ARCHIVE if action == REQUEUE else LIVE,
            destination=existing_queue(parameters["destination"]),
            new_ids=result.new_ids,
        )
    return result


def _run_batch(
    action: str,
    queue: Queue,
    msg_ids: list[int],
    parameters: dict,
    *,
    capture_payloads: bool,
    alias: str,
    username: str,
) -> BatchResult:
    if action == DELETE:
        return batch_delete(queue, msg_ids, capture_payloads=capture_payloads)
    if action == ARCHIVE_ACTION:
        return batch_archive(queue, msg_ids)
    if action == RETRY:
        return batch_retry(queue, msg_ids, include_in_flight=parameters.get("include_in_flight", False))
    if action == DELAY:
        return batch_delay(queue, msg_ids, until=datetime.fromisoformat(parameters["until"]))
    if action == MOVE:
        return batch_move(
            queue,
            msg_ids,
            destination=existing_queue(parameters["destination"]),
            original=parameters.get("original", "archive"),
            include_in_flight=parameters.get("include_in_flight", False),
            by=username,
        )
    if action == REQUEUE:
        return batch_requeue(
            queue,
            msg_ids,
            destination=existing_queue(parameters["destination"]),
            remove_archived=parameters.get("remove_archived", False),
            again=parameters.get("again", False),
            alias=alias,
            by=username,
        )
    if action == DELETE_ARCHIVED:
        return batch_delete_archived(queue, msg_ids, capture_payloads=capture_payloads)
    raise ActionRefused(f"unknown action {action!r}")


def existing_queue(name: str) -> Queue:
    queue = Queue.objects.filter(queue_name=name).first()
    if queue is None:
        raise QueueMissing(f"there is no queue named “{name}” (it may have been dropped)")
    return queue


# Recording


def _payloads_fit(payloads: list[RawJSON]) -> bool:
    return len(payloads) <= settings.AUDIT_PAYLOAD_LIMIT and sum(map(len, payloads)) <= PAYLOAD_BYTES_LIMIT


def audit_entry(
    *,
    user_id: int | None,
    username: str,
    action: str,
    queue_name: str,
    target: dict,
    requested: int,
    affected: int,
    already_gone: int = 0,
    skipped: int = 0,
    outcome: str,
    details: dict,
    deleted_payloads: list[RawJSON] | RawJSON | None = None,
    deleted_count: int | None = None,
    request_token=None,
) -> AuditEntry:
    """Every audit record of an action is made here (unsaved). JSON goes in as exact text: a
    payload in the record is the payload as it was."""
    return AuditEntry(
        user_id=user_id,
        username=username or "(system)",
        action=action,
        queue_name=queue_name,
        target=as_jsonb(target),
        requested=requested,
        affected=affected,
        already_gone=already_gone,
        skipped=skipped,
        outcome=outcome,
        details=as_jsonb(details),
        deleted_payloads=as_jsonb(deleted_payloads) if deleted_payloads is not None else None,
        deleted_count=deleted_count
        if deleted_count is not None
        else (affected if action in (DELETE, DELETE_ARCHIVED) else None),
        request_token=request_token,
    )


def _record(
    alias: str,
    *,
    user,
    action: str,
    queue_name: str,
    target: dict,
    requested: int,
    result: BatchResult | None = None,
    affected: int | None = None,
    outcome: str | None = None,
    details: dict | None = None,
    deleted_count: int | None = None,
    deleted_payloads: list[RawJSON] | None = None,
    request_token=None,
) -> AuditEntry:
    """Write the action's audit record through `alias` (the action's own transaction when it can)."""
    result = result or BatchResult()
    affected = len(result.affected) if affected is None else affected
    if outcome is None:
        outcome = AuditEntry.DONE if affected + len(result.skipped) == requested else AuditEntry.PARTIAL
    payloads = deleted_payloads if deleted_payloads is not None else (result.deleted_payloads or None)
    if result.payloads_left_out or payloads is not None and not _payloads_fit(payloads):
        payloads = None  # too many to keep: the count says how many went
    details = dict(details or {})
    if result.new_ids:
        details["new_msg_ids"] = {str(k): v for k, v in result.new_ids.items()}
    if result.already_gone:
        details["already_gone_msg_ids"] = result.already_gone
    if result.skipped:
        details["skipped_msg_ids"] = result.skipped
    if result.copied_before:
        details["requeued_before"] = {str(k): v for k, v in result.copied_before.items()}
    entry = audit_entry(
        user_id=getattr(user, "pk", None),
        username=getattr(user, "username", ""),
        action=action,
        queue_name=queue_name,
        target=target,
        requested=requested,
        affected=affected,
        already_gone=len(result.already_gone),
        skipped=len(result.skipped),
        outcome=outcome,
        details=details,
        deleted_payloads=payloads,
        deleted_count=deleted_count,
        request_token=request_token,
    )
    try:
        with transaction.atomic(using=alias):
            entry.save(using=alias)
    except IntegrityError as error:
        earlier = request_token and AuditEntry.objects.using(alias).filter(request_token=request_token).first()
        if earlier:
            raise AlreadyDone(earlier) from error
        raise
    entry.refresh_from_db(using=alias, fields=["target", "details", "deleted_payloads"])  # values, not SQL
    entry._state.db = settings.DASHBOARD_DATABASE_ALIAS  # as save_through does
    return entry


# Refused attempts kept per account and hour: a viewer (or a script with a viewer's token) asking
# again and again must not fill the table without bound; past it, refusals are answered, not kept.
REFUSALS_KEPT_PER_HOUR = 20


def record_refusal(*, user, action: str, queue_name: str, reason: str) -> AuditEntry | None:
    """A 403 recorded (through the audit chain's trigger, as every record): who asked what, and why
    not. At most REFUSALS_KEPT_PER_HOUR per account an hour; the last one kept says so."""
    if not getattr(user, "is_authenticated", False):
        return None
    kept = AuditEntry.objects.filter(
        user_id=user.pk, outcome=AuditEntry.REFUSED, at__gte=timezone.now() - timedelta(hours=1)
    ).count()
    if kept >= REFUSALS_KEPT_PER_HOUR:
        return None
    details = {"reason": reason}
    if kept + 1 == REFUSALS_KEPT_PER_HOUR:
        details["note"] = (
            f"the {REFUSALS_KEPT_PER_HOUR}th refusal of this account within an hour: more are not recorded"
        )
    entry = audit_entry(
        user_id=user.pk,
        username=user.username,
        action=action,
        queue_name=queue_name,
        target={"queue": queue_name} if queue_name else {},
        requested=0,
        affected=0,
        outcome=AuditEntry.REFUSED,
        details=details,
    )
    entry.save(using=settings.DASHBOARD_DATABASE_ALIAS)
    return entry


@contextmanager
def recording_failure(*, user, action: str, queue_name: str, target: dict, requested: int) -> Iterator[None]:
    """A failed or refused action is recorded too, after its transaction was rolled back."""
    try:
        yield
    except (ActionRefused, DatabaseError) as error:
        _record(
            settings.DASHBOARD_DATABASE_ALIAS,
            user=user,
            action=action,
            queue_name=queue_name,
            target=target,
            requested=requested,
            outcome=AuditEntry.FAILED,
            details={"error": str(error).strip()},
        )
        raise


def _refuse_if_dropped(queue: Queue, error: DatabaseError) -> None:
    """A queue dropped since the page was loaded: say so, rather than 'relation does not exist'."""
    if (
        isinstance(error.__cause__, psycopg.errors.UndefinedTable)
        and not Queue.objects.filter(queue_name=queue.queue_name).exists()
    ):
        raise QueueMissing(f"the queue “{queue.queue_name}” was dropped meanwhile") from error


@contextmanager
def acting(
    *,
    user,
    action: str,
    queue_name: str,
    target: dict,
    requested: int,
    queues: tuple[Queue, ...] = (),
    budget_ms: int | None = None,
) -> Iterator[str]:
    """The frame of every action: one transaction on the pgmq database (yields the alias its record
    goes through), a queue among `queues` dropped meanwhile said so, and a failed or refused action
    recorded too. `budget_ms`: a statement timeout of its own, for what may take longer than a page."""
    with recording_failure(user=user, action=action, queue_name=queue_name, target=target, requested=requested):
        try:
            with statement_budget(budget_ms) if budget_ms else nullcontext(), action_transaction() as alias:
                yield alias
        except DatabaseError as error:
            for queue in queues:
                _refuse_if_dropped(queue, error)
            raise


def _capture(action: str, count: int) -> bool:
    return action in (DELETE, DELETE_ARCHIVED) and count <= settings.AUDIT_PAYLOAD_LIMIT


# Actions on chosen messages (a selection: at most a page)


def act_on_messages(
    *, user, queue: Queue, action: str, msg_ids: list[int], parameters: dict, request_token=None
) -> Outcome:
    target = {"msg_ids": msg_ids, **({"parameters": parameters} if parameters else {})}
    with acting(
        user=user, action=action, queue_name=queue.queue_name, target=target, requested=len(msg_ids), queues=(queue,)
    ) as alias:
        result = run_batch(
            action,
            queue,
            msg_ids,
            parameters,
            capture_payloads=_capture(action, len(msg_ids)),
            alias=alias,
            username=user.username,
        )
        entry = _record(
            alias,
            user=user,
            action=action,
            queue_name=queue.queue_name,
            target=target,
            requested=len(msg_ids),
            result=result,
            request_token=request_token,
        )
    return Outcome(result, entry)


def send_message(
    *, user, queue: Queue, message: RawJSON, headers: RawJSON | None, delay_s: int, request_token=None
) -> Outcome:
    target = {"message": message, "headers": headers, "delay_s": delay_s}
    with acting(
        user=user, action=SEND, queue_name=queue.queue_name, target=target, requested=1, queues=(queue,)
    ) as alias:
        if "headers" in queue.tables[LIVE].columns:
            new_id = sql_rows(
                "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb, %s::integer)",
                [queue.queue_name, str(message), str(headers) if headers is not None else None, delay_s],
            )[0][0]
        else:
            new_id = sql_rows(
                "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::integer)", [queue.queue_name, str(message), delay_s]
            )[0][0]
        result = BatchResult(affected=[new_id])
        entry = _record(
            alias,
            user=user,
            action=SEND,
            queue_name=queue.queue_name,
            target=target,
            requested=1,
            result=result,
            details={"msg_id": new_id},
            request_token=request_token,
        )
    return Outcome(result, entry)


def edit_and_resend(
    *,
    user,
    queue: Queue,
    msg_id: int,
    source: str,
    destination: Queue,
    message: RawJSON,
    headers: RawJSON | None,
    include_in_flight: bool = False,
    request_token=None,
) -> Outcome:
    """Send an edited copy and archive the original, in one step. If a consumer took the original
    meanwhile, nothing is sent: the copy would be a second delivery of work already done. One a
    consumer is working on (in flight) is refused unless `include_in_flight`, for the same reason."""
    target = {
        "msg_id": msg_id,
        "source": source,
        "destination": destination.queue_name,
        "message": message,
        "headers": headers,
    }
    with acting(
        user=user,
        action=EDIT_AND_RESEND,
        queue_name=queue.queue_name,
        target=target,
        requested=1,
        queues=(queue, destination),
    ) as alias:
        if destination.queue_name != queue.queue_name:
            refuse_shared_tables(EDIT_AND_RESEND, queue, destination)
        there = _still_there(queue, source, [msg_id], lock=True)
        if source == LIVE and there.get(msg_id, {}).get("in_flight") and not include_in_flight:
            raise SecondDelivery(
                f"message {msg_id} is in flight: a consumer is working on it now, and if it "
                "finishes the edited copy is a second delivery of the same work; ask again "
                "including messages in flight to send it anyway"
            )
        if source == LIVE and there:
            archived = _archive(queue, [msg_id])
        else:
            archived = set(there)
        if not archived:
            result = BatchResult(already_gone=[msg_id])
        else:
            origin = origin_sql(
                queue_name=queue.queue_name,
                source=source,
                action=EDIT_AND_RESEND,
                by=user.username,
                msg_id=sql.Literal(msg_id),
                read_ct=sql.Literal(there[msg_id]["read_ct"]),
            )
            new_id = _send_edited_copy(destination, message=message, headers=headers, origin=origin)
            result = BatchResult(affected=[msg_id], new_ids={msg_id: new_id})
            _record_copies(
                alias,
                username=user.username,
                action=EDIT_AND_RESEND,
                queue=queue,
                source=source,
                destination=destination,
                new_ids=result.new_ids,
            )
        entry = _record(
            alias,
            user=user,
            action=EDIT_AND_RESEND,
            queue_name=queue.queue_name,
            target=target,
            requested=1,
            result=result,
            request_token=request_token,
            details={
                "original_msg_id": msg_id,
                "destination": destination.queue_name,
                "original_archived": source == LIVE and bool(archived),
            },
        )
    return Outcome(result, entry)


def purge_queue(*, user, queue: Queue, request_token=None) -> Outcome:
    """pgmq.purge_queue empties the live table. The payloads are kept in the record when few.

    The table is locked first, with the lock the purge's TRUNCATE takes anyway: what is recorded
    is then exactly what goes, even with producers sending meanwhile (they wait while pgmq counts
    the rows, about a second per ten million). Like a job, it may take longer than a page.
    """
    target = {"queue": queue.queue_name}
    with acting(
        user=user,
        action=PURGE,
        queue_name=queue.queue_name,
        target=target,
        requested=0,
        queues=(queue,),
        budget_ms=settings.JOB_STATEMENT_TIMEOUT_MS,
    ) as alias:
        refuse_shared_tables(PURGE, queue)
        _lock_table(queue, LIVE)
        first_ids = list(
            queue.live_messages.objects.order_by("msg_id").values_list("msg_id", flat=True)[
                : settings.AUDIT_PAYLOAD_LIMIT + 1
            ]
        )
        keep = len(first_ids) <= settings.AUDIT_PAYLOAD_LIMIT and _payloads_fit_record(queue, LIVE, first_ids)
        first = list(_still_there(queue, LIVE, first_ids, payloads=True).values()) if keep else []
        purged = sql_rows("SELECT pgmq.purge_queue(%s)", [queue.queue_name])[0][0]
        payloads = [_payload_record(row) for row in first] if keep and purged <= len(first) else None
        entry = _record(
            alias,
            user=user,
            action=PURGE,
            queue_name=queue.queue_name,
            target=target,
            requested=purged,
            affected=purged,
            outcome=AuditEntry.DONE,
            deleted_count=purged,
            deleted_payloads=payloads,
            request_token=request_token,
        )
    return Outcome(BatchResult(), entry)


def create_queue(*, user, name: str, unlogged: bool, request_token=None) -> Outcome:
    target = {"queue": name, "unlogged": unlogged}
    with acting(user=user, action=CREATE_QUEUE, queue_name=name, target=target, requested=1) as alias:
        clash = Queue.objects.given_the_tables_of(name).first()
        if clash is not None:
            # pgmq names tables by lower(name): Orders and orders would share one table.
            raise ActionRefused(f"a queue named “{clash.queue_name}” exists; pgmq would give both the same table")
        try:
            sql_rows("SELECT pgmq.create_unlogged(%s)" if unlogged else "SELECT pgmq.create(%s)", [name])
        except DatabaseError as error:
            if isinstance(error.__cause__, psycopg.errors.RaiseException):
                raise ActionRefused(f"pgmq refused the name: {error.__cause__.diag.message_primary}") from error
            raise
        entry = _record(
            alias,
            user=user,
            action=CREATE_QUEUE,
            queue_name=name,
            target=target,
            requested=1,
            affected=1,
            request_token=request_token,
        )
    return Outcome(BatchResult(), entry)


def drop_queue(*, user, queue: Queue, request_token=None) -> Outcome:
    """pgmq.drop_queue, with what went counted first under the lock the drop takes anyway (which,
    like a job, may take longer than a page). The queue's unfinished jobs are cancelled with it: a
    queue created later under the same name is another queue."""
    target = {"queue": queue.queue_name}
    with acting(
        user=user,
        action=DROP_QUEUE,
        queue_name=queue.queue_name,
        target=target,
        requested=1,
        queues=(queue,),
        budget_ms=settings.JOB_STATEMENT_TIMEOUT_MS,
    ) as alias:
        refuse_shared_tables(DROP_QUEUE, queue)
        _lock_table(queue, LIVE)
        live = queue.live_messages.objects.count()
        archived = 0
        if queue.tables[ARCHIVE].exists:
            _lock_table(queue, ARCHIVE)
            archived = queue.archived_messages.objects.count()
        sql_rows("SELECT pgmq.drop_queue(%s)", [queue.queue_name])
        BulkJob.objects.using(alias).filter(
            queue_name=queue.queue_name, status__in=[BulkJob.PENDING, BulkJob.RUNNING]
        ).update(cancel_requested=True, cancelled_by=f"{user.username} (dropped the queue)")
        entry = _record(
            alias,
            user=user,
            action=DROP_QUEUE,
            queue_name=queue.queue_name,
            target=target,
            requested=1,
            affected=1,
            deleted_count=live + archived,
            request_token=request_token,
            details={"live_messages": live, "archived_messages": archived},
        )
    return Outcome(BatchResult(), entry)

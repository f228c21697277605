"""Bulk jobs: an action on every message a filter matches, done in batches by the job runner
(`manage.py run_jobs`, whose loop calls `claim` and `step`).

A runner claims a job with a lease (status running, a heartbeat every batch) rather than a lock
held for the job's length, which would be a long transaction holding back vacuum; a job whose
runner died is taken over once its heartbeat is older than any batch can take. Each batch, the
job's new cursor and counts (and, at the end, its audit record) are written in one transaction
when the databases allow it; the cursor only moves from where this runner found it, so two
runners never both handle a batch.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Func, JSONField, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from psycopg import sql

from dashboard.databases import is_connection_failure
from queues.access import READ_ONLY_REASON, read_only
from queues.filters import MessageFilter
from queues.jsontext import RawJSON, as_jsonb
from queues.models import AuditEntry, BulkJob
from queues.pgmq import ARCHIVE, Queue
from queues.services import (
    PAYLOAD_BYTES_LIMIT,
    ActionRefused,
    AlreadyDone,
    BatchResult,
    action_transaction,
    audit_entry,
    recording_failure,
    refuse_shared_tables,
    run_batch,
    save_through,
    sql_rows,
)
from queues.vocabulary import ARCHIVE_ACTION, DELETE, DELETE_ARCHIVED, MOVE, REQUEUE
from queues.watched import watched_alias, watched_name

# A batch runs a few statements, each at most JOB_STATEMENT_TIMEOUT_MS: a heartbeat older than
# five of those means the runner is gone, not slow.
STALE_AFTER = timedelta(milliseconds=5 * settings.JOB_STATEMENT_TIMEOUT_MS)


def in_this_database(job_id: int) -> BulkJob | None:
    """A job of the database being watched: a job belongs to the database it acts in, and its
    permissions are that database's."""
    return BulkJob.objects.filter(pk=job_id, database=watched_name()).first()


def of_queue(queue: Queue, *, limit: int) -> list[BulkJob]:
    """The queue's latest jobs, newest first."""
    return list(BulkJob.objects.filter(database=watched_name(), queue_name=queue.queue_name).order_by("-id")[:limit])


def create(
    *,
    user,
    queue: Queue,
    source: str,
    action: str,
    parameters: dict,
    message_filter: MessageFilter,
    expected: int | None,
    request_token=None,
) -> BulkJob:
    """A job for the runner: `action` on every message of `queue`'s `source` table `message_filter` matches."""
    if read_only():
        raise PermissionError(READ_ONLY_REASON)
    filter_data, filter_words = message_filter.to_data(), message_filter.in_words()
    if action in (MOVE, REQUEUE):
        destination = Queue.objects.filter(queue_name=parameters.get("destination")).first()
        with recording_failure(
            user=user,
            action=action,
            queue_name=queue.queue_name,
            requested=expected or 0,
            target={"filter": filter_data, "filter_in_words": filter_words, "source": source, "parameters": parameters},
        ):
            refuse_shared_tables(action, queue, *([destination] if destination else []))
    try:
        with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
            return BulkJob.objects.create(
                user_id=getattr(user, "pk", None),
                username=user.username,
                queue_name=queue.queue_name,
                source=source,
                action=action,
                parameters=parameters,
                filter=filter_data,
                filter_words=filter_words,
                expected=expected,
                deleted_payloads=[] if action in (DELETE, DELETE_ARCHIVED) else None,
                request_token=request_token,
            )
    except IntegrityError as error:
        earlier = request_token and BulkJob.objects.filter(request_token=request_token).first()
        if earlier:
            raise AlreadyDone(earlier) from error
        raise


def cancel(job: BulkJob, *, user) -> None:
    """A running job stops after its current batch; one no runner has taken yet ends now."""
    BulkJob.objects.filter(pk=job.pk).update(cancel_requested=True, cancelled_by=user.username)
    job.refresh_from_db()
    if job.status == BulkJob.PENDING:
        end(job, BulkJob.CANCELLED)


def claim() -> BulkJob | None:
    """The next job waiting, or one whose runner is gone, now this runner's. Only jobs of the
    databases this runner watches: another dashboard sharing this dashboard database (or a release
    watching one more) runs the others. None while read-only: queued jobs wait for the switch to go."""
    if read_only():
        return None
    with transaction.atomic(using=settings.DASHBOARD_DATABASE_ALIAS):
        job = (
            BulkJob.objects.select_for_update(skip_locked=True)
            .filter(
                Q(status=BulkJob.PENDING) | Q(status=BulkJob.RUNNING, heartbeat_at__lt=timezone.now() - STALE_AFTER),
                database__in=list(settings.WATCHED_DATABASES),
            )
            .order_by("id")
            .first()
        )
        if job is None:
            return None
        job.status, job.heartbeat_at = BulkJob.RUNNING, timezone.now()
        job.started_at = job.started_at or job.heartbeat_at
        job.save(update_fields=["status", "heartbeat_at", "started_at"])
        return job


class JobTakenOver(Exception):
    """Another runner moved the job on meanwhile (this one's lease had run out): its batch is undone."""


class TryAgain(Exception):
    """The batch was undone by something passing (a consumer held a lock a moment too long, a
    deadlock with a consumer's own batch): the same batch can simply be tried again."""


TRANSIENT = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def step(job: BulkJob, queue: Queue, *, batch_size: int) -> bool:
    """Handle the next batch of `job` on `queue`; False when the job has ended or is no longer ours."""
    state = BulkJob.objects.filter(pk=job.pk).values("status", "cursor", "cancel_requested", "cancelled_by").first()
    if state is None or state["status"] != BulkJob.RUNNING or state["cursor"] != job.cursor:
        return False
    if state["cancel_requested"]:
        job.cancelled_by = state["cancelled_by"]
        end(job, BulkJob.CANCELLED)
        return False
    collecting = job.action in (DELETE, DELETE_ARCHIVED) and job.deleted_payloads is not None
    if collecting:
        # While the payloads still fit in the record, batches only as big as the room left (+1, to
        # see it overflow): no batch reads thousands of payloads only to throw them away.
        batch_size = min(batch_size, settings.AUDIT_PAYLOAD_LIMIT - job.affected + 1)
    try:
        with action_transaction() as alias:
            chosen = job.message_filter.matching_ids(queue, job.source, after=job.cursor, limit=batch_size)
            if job.action in REMOVALS and not collecting:
                chosen_count, removed, last = _remove_chosen(queue, job.action, chosen)
                result = BatchResult()
                affected, already_gone, skipped = removed, chosen_count - removed, 0
            else:
                msg_ids = list(chosen)
                result = run_batch(
                    job.action,
                    queue,
                    msg_ids,
                    job.parameters,
                    capture_payloads=collecting,
                    alias=alias,
                    username=job.username,
                )
                last = max(msg_ids, default=None)
                affected, already_gone, skipped = len(result.affected), len(result.already_gone), len(result.skipped)
            if last is None:
                _finish(job, BulkJob.DONE, alias=alias)
                return False
            progress = _save_progress(
                job,
                alias,
                cursor=last,
                affected=affected,
                already_gone=already_gone,
                skipped=skipped,
                result=result,
                collecting=collecting,
            )
    except JobTakenOver:
        return False
    except (ActionRefused, DatabaseError) as error:
        if isinstance(error.__cause__, TRANSIENT):
            raise TryAgain(str(error).strip()) from error
        if is_connection_failure(error):
            raise  # the batch was not done: the runner waits for the database and goes on
        fail(job, str(error).strip())
        return False
    # Only once committed: a batch whose commit was lost with the connection is done again, from
    # where the database says the job is.
    for name, value in progress.items():
        if name != "deleted_payloads":
            setattr(job, name, value)
    if progress.get("deleted_payloads", True) is None:
        job.deleted_payloads = None
    return True


def fail(job: BulkJob, error: str) -> None:
    """End the job as failed, saying why, unless another runner has moved it on meanwhile (then the
    error was a race this runner lost, not the job's failure)."""
    fresh = BulkJob.objects.filter(pk=job.pk).first()
    if fresh is None or fresh.status not in (BulkJob.PENDING, BulkJob.RUNNING) or fresh.cursor != job.cursor:
        return
    if not Queue.objects.filter(queue_name=job.queue_name).exists():
        error = f"the queue “{job.queue_name}” was dropped"
    end(fresh, BulkJob.FAILED, error=error)


def _save_progress(
    job: BulkJob,
    alias: str,
    *,
    cursor: int,
    affected: int,
    already_gone: int,
    skipped: int,
    result: BatchResult,
    collecting: bool,
) -> dict[str, Any]:
    """Move the job on, from the cursor this runner found it at and only if it is still running;
    the changes written."""
    changes: dict[str, Any] = {
        "cursor": cursor,
        "affected": job.affected + affected,
        "already_gone": job.already_gone + already_gone,
        "skipped": job.skipped + skipped,
        "batches": job.batches + 1,
        "heartbeat_at": timezone.now(),
    }
    # What the record keeps in full stops at its limits: past them, payloads and new ids are counted only.
    if collecting:
        batch_bytes = sum(map(len, result.deleted_payloads))
        if (
            not result.payloads_left_out
            and changes["affected"] <= settings.AUDIT_PAYLOAD_LIMIT
            and job.payload_bytes + batch_bytes <= PAYLOAD_BYTES_LIMIT
        ):
            # Appended in the database, as exact JSON text: payloads never pass through Python floats.
            changes["deleted_payloads"] = Func(
                F("deleted_payloads"),
                as_jsonb(result.deleted_payloads),
                function="",
                arg_joiner=" || ",
                output_field=JSONField(),
            )
            changes["payload_bytes"] = job.payload_bytes + batch_bytes
        else:
            changes["deleted_payloads"] = None
    if result.new_ids and job.new_ids is not None:
        new_ids = {**job.new_ids, **{str(k): v for k, v in result.new_ids.items()}}
        changes["new_ids"] = new_ids if len(new_ids) <= settings.AUDIT_PAYLOAD_LIMIT else None
    moved_on = (
        BulkJob.objects.using(alias).filter(pk=job.pk, cursor=job.cursor, status=BulkJob.RUNNING).update(**changes)
    )
    if not moved_on:
        raise JobTakenOver(job.pk)
    return changes


# Actions that only take messages out and keep no payload: by filter, the batch's ids are chosen
# and handed to pgmq in one statement, so only counts travel back. (Sending 5,000 ids out and back
# per batch costs more than pgmq's removal itself.)
REMOVALS = {DELETE, ARCHIVE_ACTION, DELETE_ARCHIVED}


def _remove_chosen(queue: Queue, action: str, chosen) -> tuple[int, int, int | None]:
    """Remove the messages the `chosen` query picks: how many it chose, how many were removed (the
    rest were already gone), and the highest msg_id chosen (None: it chose none)."""
    try:
        chosen_sql, params = chosen.query.get_compiler(using=watched_alias()).as_sql()
    except EmptyResultSet:  # a filter that can match nothing here (headers on a queue without them)
        return 0, 0, None
    params = list(params)
    if action == DELETE_ARCHIVED:
        # pgmq has no function for it; the table name escaped for the placeholders that follow.
        removal = (
            sql.SQL("DELETE FROM {} WHERE msg_id IN (SELECT msg_id FROM chosen) RETURNING msg_id")
            .format(sql.Identifier("pgmq", queue.tables[ARCHIVE].name))
            .as_string()
            .replace("%", "%%")
        )
    else:
        removal = f"SELECT * FROM pgmq.{action}(%s, ARRAY(SELECT msg_id FROM chosen))"
        params.append(queue.queue_name)
    return sql_rows(
        f"WITH chosen AS MATERIALIZED ({chosen_sql}), removed AS ({removal}) "
        "SELECT (SELECT count(*) FROM chosen), (SELECT count(*) FROM removed), (SELECT max(msg_id) FROM chosen)",
        params,
    )[0]


def end(job: BulkJob, status: str, *, error: str = "") -> None:
    """End the job outside a batch's transaction (cancelled, failed)."""
    with suppress(JobTakenOver):
        _finish(job, status, error=error)


def _finish(job: BulkJob, status: str, *, alias: str | None = None, error: str = "") -> None:
    """End the job with its audit record (both or neither), unless another runner moved it on.
    The payloads go from the job's row to the record inside the database, exactly as they were."""
    outcome = {
        BulkJob.DONE: AuditEntry.DONE,
        BulkJob.CANCELLED: AuditEntry.CANCELLED,
        BulkJob.FAILED: AuditEntry.FAILED,
    }[status]
    details = {
        "batches": job.batches,
        **({"error": error} if error else {}),
        **({"cancelled_by": job.cancelled_by} if status == BulkJob.CANCELLED and job.cancelled_by else {}),
        **({"new_msg_ids": job.new_ids} if job.new_ids else {}),
        **({"new_msg_ids_not_kept": "too many to list"} if job.new_ids is None else {}),
    }
    alias = alias or settings.DASHBOARD_DATABASE_ALIAS
    with transaction.atomic(using=alias):
        # The job's row is locked before the record takes the audit chain's lock, the order a drop
        # of the queue takes them in (its jobs, then its record): never each waiting on the other.
        if (
            not BulkJob.objects.using(alias)
            .select_for_update()
            .filter(pk=job.pk, cursor=job.cursor, status__in=[BulkJob.PENDING, BulkJob.RUNNING])
            .values_list("pk")
        ):
            raise JobTakenOver(job.pk)
        payloads = None
        if job.deleted_payloads is not None and job.affected:
            payloads = RawJSON(
                BulkJob.objects.using(alias)
                .filter(pk=job.pk)
                .values_list(Cast("deleted_payloads", TextField()), flat=True)
                .get()
            )
        entry = audit_entry(
            user_id=job.user_id,
            username=job.username,
            action=job.action,
            queue_name=job.queue_name,
            target={
                "filter": job.filter,
                "filter_in_words": job.filter_words,
                "source": job.source,
                "parameters": job.parameters,
                "job": job.pk,
            },
            requested=job.expected if job.expected is not None else job.affected + job.already_gone + job.skipped,
            affected=job.affected,
            already_gone=job.already_gone,
            skipped=job.skipped,
            outcome=outcome,
            details=details,
            deleted_payloads=payloads,
        )
        save_through(entry, alias)
        ended = (
            BulkJob.objects.using(alias)
            .filter(pk=job.pk, cursor=job.cursor, status__in=[BulkJob.PENDING, BulkJob.RUNNING])
            .update(
                status=status, error=error, finished_at=timezone.now(), audit_entry_id=entry.pk, deleted_payloads=None
            )
        )
        if not ended:
            raise JobTakenOver(job.pk)
    job.status, job.error, job.audit_entry_id, job.deleted_payloads = status, error, entry.pk, None

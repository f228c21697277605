"""Actions on every message matching a filter: a job, in batches, stoppable, resumable."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from queues import jobs
from queues.management.commands.run_jobs import run_job, run_pending_jobs
from queues.models import AuditEntry, BulkJob
from queues.pgmq import Queue
from tests.conftest import action_records, uses_databases
from tests.pages import parse

pytestmark = uses_databases


def start_job(client, queue: str, action: str, filter_query: str, *, source: str = "live", **extra):
    data = {
        "action": action,
        "source": source,
        "scope": "matching",
        "filter_query": filter_query,
        "confirmed": "1",
        **extra,
    }
    response = client.post(f"/queues/{queue}/act/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.content.decode()[:500]
    return BulkJob.objects.latest("id")


@pytest.fixture
def typed_queue(make_queue, pgmq_sql):
    """30 messages: every third an order_created, the rest order_paid."""
    make_queue("typed")
    for n in range(1, 31):
        pgmq_sql.execute(
            "SELECT pgmq.send('typed', %s::jsonb)",
            [json.dumps({"n": n, "type": "order_created" if n % 3 == 0 else "order_paid"})],
        )
    return "typed"


def test_the_confirmation_counts_exactly_what_the_filter_matches(operator_client, typed_queue):
    data = {
        "action": "archive",
        "source": "live",
        "scope": "matching",
        "filter_query": "message=%7B%22type%22%3A%22order_created%22%7D",
    }
    dialog = parse(operator_client.post("/queues/typed/act/", data, headers={"HX-Request": "true"}))
    plan = " ".join(dialog.select_one("[data-plan]").get_text().split())
    assert 'matching message contains {"type": "order_created"}: 10 messages now.' in plan
    assert not BulkJob.objects.exists()


def test_a_job_archives_exactly_what_matches_in_batches(operator_client, typed_queue, pgmq_sql):
    with override_settings(BULK_BATCH_SIZE=4):
        job = start_job(operator_client, "typed", "archive", "message=%7B%22type%22%3A%22order_created%22%7D")
        assert (job.status, job.expected) == ("pending", 10)
        assert run_pending_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.affected, job.batches) == ("done", 10, 3)
    archived = [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.a_typed ORDER BY msg_id")]
    assert archived == list(range(3, 31, 3))
    entry = job.audit_entry
    assert (entry.action, entry.requested, entry.affected, entry.outcome) == ("archive", 10, 10, "done")
    assert entry.target["filter_in_words"] == 'message contains {"type": "order_created"}'


def test_a_delete_job_keeps_payloads_up_to_the_limit(operator_client, typed_queue):
    with override_settings(AUDIT_PAYLOAD_LIMIT=5, BULK_BATCH_SIZE=3):
        few = start_job(operator_client, "typed", "delete", "q=message.n%3A1*")  # 1 and 10-19: eleven
        run_pending_jobs()
    entry = AuditEntry.objects.get(pk=BulkJob.objects.get(pk=few.pk).audit_entry_id)
    assert (entry.affected, entry.deleted_count, entry.deleted_payloads) == (11, 11, None)  # too many to keep
    with override_settings(AUDIT_PAYLOAD_LIMIT=5):
        start_job(operator_client, "typed", "delete", "q=message.n%3A2*")  # 2 and 20-29 minus deleted: 11
        run_pending_jobs()
    with override_settings(AUDIT_PAYLOAD_LIMIT=50):
        start_job(operator_client, "typed", "delete", "q=message.n%3A3")
        run_pending_jobs()
    kept = action_records().latest("id")
    assert kept.deleted_payloads == [{"msg_id": 3, "message": {"n": 3, "type": "order_created"}, "headers": None}]


def test_a_retry_job_leaves_messages_in_flight_alone(operator_client, typed_queue, pgmq_sql):
    pgmq_sql.execute("SELECT pgmq.set_vt('typed', array_agg(i), 3600) FROM generate_series(1, 20) i")
    pgmq_sql.execute("UPDATE pgmq.q_typed SET read_ct = 1 WHERE msg_id <= 5")  # as if read by a consumer
    start_job(operator_client, "typed", "retry", "")
    run_pending_jobs()
    visible = {row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_typed WHERE vt <= now()")}
    assert visible == set(range(6, 31))
    assert action_records().latest("id").skipped == 5


def test_a_move_job_redrives_to_another_queue(operator_client, typed_queue, make_queue, pgmq_sql):
    make_queue("typed_dlq")
    start_job(
        operator_client,
        "typed",
        "move",
        "message=%7B%22type%22%3A%22order_created%22%7D",
        destination="typed_dlq",
        original="delete",
    )
    run_pending_jobs()
    moved = [row[0]["n"] for row in pgmq_sql.execute("SELECT message FROM pgmq.q_typed_dlq ORDER BY msg_id")]
    assert moved == list(range(3, 31, 3))
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_typed").fetchone()[0] == 20


def test_a_requeue_job_replays_the_archive(operator_client, typed_queue, pgmq_sql):
    pgmq_sql.execute("SELECT pgmq.archive('typed', array_agg(i)) FROM generate_series(1, 30) i")
    start_job(
        operator_client,
        "typed",
        "requeue",
        "q=message.n%3A1*",
        source="archive",
        destination="typed",
        remove_archived="1",
    )
    run_pending_jobs()
    replayed = sorted(row[0]["n"] for row in pgmq_sql.execute("SELECT message FROM pgmq.q_typed"))
    assert replayed == [1, *range(10, 20)]
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.a_typed").fetchone()[0] == 19


def test_a_job_stops_between_batches_when_asked(operator_client, typed_queue, pgmq_sql):
    with override_settings(BULK_BATCH_SIZE=5):
        job = start_job(operator_client, "typed", "archive", "")
        claimed = jobs.claim()
        queue = Queue.objects.get(queue_name="typed")
        assert jobs.step(claimed, queue, batch_size=5)
        response = operator_client.post(f"/jobs/{job.pk}/cancel/")
        assert response.status_code == 302
        run_job(claimed)
    job.refresh_from_db()
    assert (job.status, job.affected) == ("cancelled", 5)
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.a_typed").fetchone()[0] == 5
    assert job.audit_entry.outcome == "cancelled"


def test_a_job_whose_runner_died_is_taken_over_and_handles_nothing_twice(
    operator_client, typed_queue, pgmq_sql, make_queue
):
    make_queue("typed_copy")
    with override_settings(BULK_BATCH_SIZE=7):
        job = start_job(operator_client, "typed", "requeue", "", source="archive", destination="typed_copy")
        pgmq_sql.execute("SELECT pgmq.archive('typed', array_agg(i)) FROM generate_series(1, 30) i")
        first_runner = jobs.claim()
        queue = Queue.objects.get(queue_name="typed")
        step = lambda runner: jobs.step(runner, queue, batch_size=7)  # noqa: E731
        assert step(first_runner) and step(first_runner)  # two batches, then the runner dies
        assert jobs.claim() is None  # its lease still holds
        BulkJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
        second_runner = jobs.claim()
        assert second_runner.pk == job.pk and second_runner.cursor == 14
        assert step(second_runner)
        assert not step(first_runner)  # it was only slow, and comes back: the job is no longer its own
        run_job(second_runner)
    copies = sorted(row[0]["n"] for row in pgmq_sql.execute("SELECT message FROM pgmq.q_typed_copy"))
    assert copies == list(range(1, 31))  # every archived message exactly once
    job.refresh_from_db()
    assert (job.status, job.affected, job.batches) == ("done", 30, 5)


def test_a_job_on_a_queue_dropped_meanwhile_fails_saying_why(operator_client, make_queue, pgmq_sql):
    make_queue("vanishing", messages=3)
    job = start_job(operator_client, "vanishing", "archive", "")
    pgmq_sql.execute("SELECT pgmq.drop_queue('vanishing')")
    run_pending_jobs()
    job.refresh_from_db()
    assert job.status == "failed" and "was dropped" in job.error
    assert job.audit_entry.outcome == "failed"


def test_the_job_page_shows_its_progress(operator_client, typed_queue):
    job = start_job(operator_client, "typed", "archive", "")
    waiting = parse(operator_client.get(f"/jobs/{job.pk}/"))
    assert waiting.select_one("[data-job-field=status]").get_text() == "pending"
    assert "Waiting for the job runner" in waiting.get_text()
    run_pending_jobs()
    done = parse(operator_client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true", "HX-Target": "job-live"}))
    assert done.select_one("[data-job-field=affected]").get_text() == "30"
    assert done.select_one("#job-live").get("data-live") is None  # a finished job stops refreshing


@override_settings(AUDIT_PAYLOAD_LIMIT=1)  # deletes read two payloads, then take the path that reads none
def test_jobs_on_queues_with_awkward_names(operator_client, make_queue, pgmq_sql):
    from django.urls import reverse

    for name in ('say "hi"', "50%", "a/b"):
        make_queue(name, messages=8)
        url = reverse("message-action", args=[name])
        table = pgmq_sql.execute("SELECT pgmq.format_table_name(%s, 'q')", [name]).fetchone()[0]
        quoted = table.replace(chr(34), chr(34) * 2)
        pgmq_sql.execute(f"UPDATE pgmq.\"{quoted}\" SET message = jsonb_build_object('n', msg_id, 'tag', '50%')")
        pgmq_sql.execute("SELECT pgmq.archive(%s, ARRAY[1, 2, 3]::bigint[])", [name])
        for action, source, filter_query in (
            ("archive", "live", "q=message.n%3A4"),
            ("delete", "live", "q=50%25"),
            ("delete_archived", "archive", ""),
        ):
            response = operator_client.post(
                url,
                {
                    "action": action,
                    "source": source,
                    "scope": "matching",
                    "filter_query": filter_query,
                    "confirmed": "1",
                },
                headers={"HX-Request": "true"},
            )
            assert response.status_code == 200, (name, action, response.content[:300])
            assert run_pending_jobs() == 1
            job = BulkJob.objects.latest("id")
            assert job.status == "done", (name, action, job.error)
        counts = pgmq_sql.execute(
            f'SELECT (SELECT count(*) FROM pgmq."{quoted}"), (SELECT count(*) FROM pgmq."a{quoted[1:]}")'
        ).fetchone()
        assert counts == (0, 0), name
        entries = AuditEntry.objects.filter(queue_name=name).order_by("id")
        assert [(entry.affected, entry.deleted_payloads) for entry in entries] == [(1, None), (4, None), (4, None)]


def test_a_filter_the_table_cannot_meet_matches_nothing(operator_client, typed_queue, pgmq_sql):
    # archived_at on the live table (left over from browsing the archive): no live message has one.
    query = "archived_after=2000-01-01T00%3A00"
    data = {"action": "delete", "source": "live", "scope": "matching", "filter_query": query}
    dialog = parse(operator_client.post("/queues/typed/act/", data, headers={"HX-Request": "true"}))
    assert dialog.select_one("[data-plan-count]").get_text() == "0"
    assert dialog.select_one("button[type=submit]").has_attr("disabled")
    start_job(operator_client, "typed", "delete", query)  # sent anyway
    start_job(operator_client, "typed", "delete_archived", "state=in_flight", source="archive")
    run_pending_jobs()
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_typed").fetchone()[0] == 30
    assert [job.affected for job in BulkJob.objects.all()] == [0, 0]


def test_a_bug_in_a_batch_ends_the_job_saying_why_and_the_runner_goes_on(operator_client, typed_queue, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("something unexpected")

    monkeypatch.setattr(jobs, "run_batch", broken)
    job = start_job(operator_client, "typed", "retry", "")
    second = start_job(operator_client, "typed", "retry", "")
    assert run_pending_jobs() == 2
    job.refresh_from_db()
    assert (job.status, job.error) == ("failed", "ValueError: something unexpected")
    assert job.audit_entry.outcome == "failed"
    second.refresh_from_db()
    assert second.status == "failed"


def test_a_consumer_holding_a_lock_for_a_moment_does_not_fail_the_job(operator_client, typed_queue, pgmq_database_url):
    import threading

    import psycopg

    holder = psycopg.connect(pgmq_database_url)
    holder.execute("SELECT * FROM pgmq.q_typed WHERE msg_id = 2 FOR UPDATE")  # as a slow consumer would
    threading.Timer(2.5, holder.rollback).start()  # longer than lock_timeout: the first tries fail
    try:
        with override_settings(BULK_BATCH_SIZE=10):
            job = start_job(operator_client, "typed", "archive", "")
            run_pending_jobs()
    finally:
        holder.close()
    job.refresh_from_db()
    assert (job.status, job.affected, job.already_gone) == ("done", 30, 0)


def test_cancelling_a_job_no_runner_has_taken_ends_it_now(operator_client, typed_queue):
    job = start_job(operator_client, "typed", "archive", "")
    operator_client.post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.audit_entry.details["cancelled_by"] == "operator-user"
    assert run_pending_jobs() == 0


def test_dropping_a_queue_cancels_its_jobs(operator_client, typed_queue, pgmq_sql, django_user_model):
    from queues import services
    from queues.pgmq import Queue

    job = start_job(operator_client, "typed", "delete", "")
    admin = django_user_model.objects.create_user("dropper", password="a-long-password-for-it")
    services.drop_queue(user=admin, queue=Queue.objects.get(queue_name="typed"))
    pgmq_sql.execute("SELECT pgmq.create('typed')")  # another queue, with the same name
    pgmq_sql.execute("""SELECT pgmq.send('typed', '{"new": true}')""")
    run_pending_jobs()
    job.refresh_from_db()
    assert job.status == "cancelled" and job.affected == 0
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_typed").fetchone()[0] == 1


def test_a_batch_whose_commit_is_lost_with_the_connection_is_done_again_and_the_job_ends(
    operator_client, typed_queue, pgmq_sql, monkeypatch
):
    """The connection dies after a batch's progress was written but before its commit: nothing of
    the batch happened, and the same runner goes on from where the database says it was (not from
    where it had counted itself), so the job ends instead of waiting out its lease."""
    from django.db import connections

    from queues.watched import watched_alias

    save_progress, saved, killed = jobs._save_progress, [], []

    def then_lose_the_connection(job, alias, **progress):
        written = save_progress(job, alias, **progress)
        saved.append(progress["cursor"])
        if len(saved) == 2:
            pid = connections[watched_alias()].connection.info.backend_pid
            killed.append(pgmq_sql.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0])
        return written

    monkeypatch.setattr(jobs, "_save_progress", then_lose_the_connection)
    with override_settings(BULK_BATCH_SIZE=4):
        job = start_job(operator_client, "typed", "archive", "")
        run_job(jobs.claim())
    assert killed == [True]
    job.refresh_from_db()
    assert (job.status, job.affected) == ("done", 30)
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.a_typed").fetchone()[0] == 30


def test_a_runner_leaves_the_jobs_of_databases_it_does_not_watch_for_a_runner_that_does(
    operator_client, typed_queue, pgmq_sql
):
    # Two dashboards share this dashboard database; the other one watches "billing" too and
    # queued a job there. A runner watching only "main" must not take it (and so fail it).
    theirs = start_job(operator_client, "typed", "archive", "")
    BulkJob.objects.filter(pk=theirs.pk).update(database="billing")
    ours = start_job(operator_client, "typed", "archive", "message=%7B%22type%22%3A%22order_created%22%7D")

    assert run_pending_jobs() == 1

    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert ours.status == "done" and ours.affected == 10
    assert (theirs.status, theirs.error) == ("pending", "")
    with override_settings(WATCHED_DATABASES={**settings.WATCHED_DATABASES, "billing": "pgmq"}):
        assert run_pending_jobs() == 1  # a runner that watches billing takes it
    theirs.refresh_from_db()
    assert theirs.status == "done"

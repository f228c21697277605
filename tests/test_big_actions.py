"""Actions on huge messages: copies go from table to table inside the database, and deleted payloads
too big for the audit record are never read, so an operator's move of a 20 MB message costs the web
worker nothing like 20 MB."""

from __future__ import annotations

import tracemalloc

from queues import services, vocabulary
from queues.models import AuditEntry
from queues.pgmq import Queue
from tests.conftest import uses_databases

pytestmark = uses_databases

BIG = "SELECT jsonb_build_object('blob', repeat('x', 20 * 1024 * 1024), 'price', 1.10, 'n', 12345678901234567890.5)"


def peak_python_bytes(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_move_and_a_requeue_of_a_huge_message_copy_it_exactly_without_reading_it(make_queue, pgmq_sql, operator):
    make_queue("heavy")
    make_queue("heavy-dlq")
    pgmq_sql.execute(f"SELECT pgmq.send('heavy', ({BIG}), '{{\"trace\": \"t-1\"}}'::jsonb)")
    stored = pgmq_sql.execute("SELECT md5(message::text), headers::text FROM pgmq.q_heavy").fetchone()
    heavy = Queue.objects.get(queue_name="heavy")

    def move() -> None:
        outcome = services.act_on_messages(
            user=operator,
            queue=heavy,
            action=vocabulary.MOVE,
            msg_ids=[1],
            parameters={"destination": "heavy-dlq", "original": "archive"},
        )
        assert outcome.result.new_ids == {1: 1}

    assert peak_python_bytes(move) < 2 * 1024 * 1024
    assert (
        pgmq_sql.execute(
            "SELECT md5(message::text), (headers - 'x-pgmq-dashboard-origin')::text FROM pgmq.\"q_heavy-dlq\""
        ).fetchone()
        == stored
    )

    def requeue() -> None:
        outcome = services.act_on_messages(
            user=operator,
            queue=heavy,
            action=vocabulary.REQUEUE,
            msg_ids=[1],
            parameters={"destination": "heavy", "remove_archived": True},
        )
        assert outcome.result.new_ids == {1: 2}

    assert peak_python_bytes(requeue) < 2 * 1024 * 1024
    assert (
        pgmq_sql.execute(
            "SELECT md5(message::text), (headers - 'x-pgmq-dashboard-origin')::text FROM pgmq.q_heavy"
        ).fetchone()
        == stored
    )
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.a_heavy").fetchone()[0] == 0


def test_deleting_payloads_too_big_for_the_record_keeps_their_count_and_never_reads_them(
    make_queue, pgmq_sql, operator
):
    make_queue("heavy-delete")
    pgmq_sql.execute(f"SELECT pgmq.send('heavy-delete', ({BIG}))")
    pgmq_sql.execute("SELECT pgmq.send('heavy-delete', '{\"small\": 1}')")
    queue = Queue.objects.get(queue_name="heavy-delete")

    def delete() -> None:
        services.act_on_messages(user=operator, queue=queue, action=vocabulary.DELETE, msg_ids=[1, 2], parameters={})

    assert peak_python_bytes(delete) < 2 * 1024 * 1024
    entry = AuditEntry.objects.get(action="delete", queue_name="heavy-delete")
    assert (entry.affected, entry.deleted_count, entry.deleted_payloads) == (2, 2, None)

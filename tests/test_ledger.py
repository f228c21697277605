"""The ledger: real producers and consumers (pgmq's own Python client) work the whole time while
every bulk action, the actions on chosen messages and a purge run; afterwards every msg_id ever
created in the queue is in exactly one place, with its payload unchanged:
the live table, the archive, the consumers' log of deletions, the audit log's record of what the
dashboard deleted, or moved away (then its copy is in the other queue, same payload). The check
is perf/ledger.py's, which the load test makes too."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from pgmq import PGMQueue
from psycopg_pool import ConnectionPool

from perf import ledger
from queues import jobs, services, vocabulary
from queues.filters import MessageFilter, SearchTerm
from queues.management.commands.run_jobs import run_pending_jobs
from queues.models import AuditEntry
from queues.pgmq import Queue
from tests.conftest import uses_databases, wait_for

pytestmark = uses_databases
QUEUE, DEAD_LETTERS = "ledger", "ledger_dlq"
KINDS = ["archive", "delete", "move_keep", "move_drop", "requeue", "forget", "plain", "plain", "plain"]


class Workload:
    """Producers sending, consumers reading, archiving, deleting (and logging what they delete),
    or failing (the message comes back after its vt), through pgmq's Python client."""

    def __init__(self, url: str) -> None:
        # A pool of our own: the client's settings would let its default host override a socket
        # directory given in the URL.
        self.pool = ConnectionPool(url, min_size=1, max_size=6, open=True)
        self.client = PGMQueue(pool=self.pool, init_extension=False)
        self.stopping = threading.Event()
        self.producers_stopping = threading.Event()
        self.sent: dict[ledger.Key, ledger.Payload] = {}
        self.consumer_deleted: dict[ledger.Key, ledger.Payload] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.sequence = iter(range(10**9))

    def produce(self) -> None:
        while not self.producers_stopping.is_set():
            payload = {"seq": next(self.sequence), "kind": random.choice(KINDS), "body": "x" * 40}
            msg_id = self.client.send(QUEUE, payload)
            with self.lock:
                self.sent[(QUEUE, msg_id)] = (payload, None)  # no headers
            self.producers_stopping.wait(0.005)

    def consume(self) -> None:
        while not self.stopping.is_set():
            for message in self.client.read_batch(QUEUE, vt=2, batch_size=5) or []:
                roll = random.random()
                if roll < 0.35:
                    self.client.archive(QUEUE, message.msg_id)
                elif roll < 0.55:
                    if self.client.delete(QUEUE, message.msg_id):  # False: the dashboard was faster
                        with self.lock:
                            self.consumer_deleted[(QUEUE, message.msg_id)] = (message.message, message.headers)
                # else: the consumer failed; the message comes back when its vt passes
            self.stopping.wait(0.02)

    def guarded(self, work):
        def run():
            try:
                work()
            except BaseException as error:  # noqa: BLE001 (reported by the test)
                self.errors.append(error)

        return run

    def __enter__(self) -> Workload:
        self.threads = [
            threading.Thread(target=self.guarded(work))
            for work in (self.produce, self.produce, self.consume, self.consume)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.producers_stopping.set()
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.pool.close()


def kind_filter(kind: str, source: str = "live") -> MessageFilter:
    return MessageFilter(source=source, search=(SearchTerm("message", ("kind",), kind),))


def run_job(user, action: str, message_filter: MessageFilter, *, source: str = "live", **parameters) -> None:
    jobs.create(
        user=user,
        queue=Queue.objects.get(queue_name=QUEUE),
        source=source,
        action=action,
        parameters=parameters,
        message_filter=message_filter,
        expected=None,
    )
    assert run_pending_jobs() == 1


@pytest.fixture
def queues_for_the_ledger(make_queue):
    make_queue(QUEUE)
    make_queue(DEAD_LETTERS)


@override_settings(AUDIT_PAYLOAD_LIMIT=10**6, BULK_BATCH_SIZE=50)
def test_every_message_ends_up_exactly_once_with_its_payload(queues_for_the_ledger, pgmq_database_url, pgmq_sql):
    user = get_user_model().objects.create_superuser("ledger-keeper", password="a-long-password-for-it")
    with Workload(pgmq_database_url) as workload:
        wait_for(lambda: len(workload.sent) > 300, timeout=30, what="the producers to send 300 messages")
        # Every bulk action, by filter, while everyone works.
        run_job(user, vocabulary.RETRY, MessageFilter(), include_in_flight=True)
        until = (pgmq_sql.execute("SELECT now()").fetchone()[0] + timedelta(seconds=2)).isoformat()
        run_job(user, vocabulary.DELAY, kind_filter("plain"), until=until)
        run_job(user, vocabulary.ARCHIVE_ACTION, kind_filter("archive"))
        run_job(user, vocabulary.DELETE, kind_filter("delete"))
        run_job(user, vocabulary.MOVE, kind_filter("move_keep"), destination=DEAD_LETTERS, original="archive")
        run_job(user, vocabulary.MOVE, kind_filter("move_drop"), destination=DEAD_LETTERS, original="delete")
        run_job(
            user,
            vocabulary.REQUEUE,
            kind_filter("requeue", "archive"),
            source="archive",
            destination=QUEUE,
            remove_archived=True,
        )
        run_job(user, vocabulary.DELETE_ARCHIVED, kind_filter("forget", "archive"), source="archive")
        # The same actions on chosen messages.
        queue = Queue.objects.get(queue_name=QUEUE)
        for action, parameters in (
            (vocabulary.RETRY, {"include_in_flight": False}),
            (vocabulary.ARCHIVE_ACTION, {}),
            (vocabulary.DELETE, {}),
            (vocabulary.MOVE, {"destination": DEAD_LETTERS, "original": "delete"}),
        ):
            chosen = [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_ledger ORDER BY random() LIMIT 20")]
            services.act_on_messages(user=user, queue=queue, action=action, msg_ids=chosen, parameters=parameters)
        # And a purge, with producers still sending.
        services.purge_queue(user=user, queue=queue)
        wait_for(lambda: len(workload.sent) > 600, timeout=30, what="more messages after the purge")
    assert not workload.errors, workload.errors

    books = ledger.check(queues=[QUEUE, DEAD_LETTERS], sent=workload.sent, consumer_deleted=workload.consumer_deleted)
    assert books.holds, books.problems[:20]
    assert len(books.created) > 600

    # Each copy in the dead-letter queue carries its original's payload.
    copies = dict(pgmq_sql.execute("SELECT msg_id, message FROM pgmq.q_ledger_dlq").fetchall())
    copied = {msg_id: message for (queue, msg_id), (message, _) in books.created.items() if queue == DEAD_LETTERS}
    assert copies == copied and len(copies) > 0
    kinds = set(AuditEntry.objects.filter(queue_name=QUEUE).values_list("action", flat=True))
    assert {
        vocabulary.RETRY,
        vocabulary.DELAY,
        vocabulary.ARCHIVE_ACTION,
        vocabulary.DELETE,
        vocabulary.MOVE,
        vocabulary.REQUEUE,
        vocabulary.DELETE_ARCHIVED,
        vocabulary.PURGE,
    } <= kinds

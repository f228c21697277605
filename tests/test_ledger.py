"""The ledger: real producers and consumers (pgmq's own Python client) work the whole time while
every bulk action, the actions on chosen messages and a purge run; afterwards every msg_id ever
created in the queue is in exactly one place, with its payload unchanged:
the live table, the archive, the consumers' log of deletions, the audit log's record of what the
dashboard deleted, or moved away (then its copy is in the other queue, same payload)."""
from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from pgmq import PGMQueue
from psycopg_pool import ConnectionPool

from queues import services, vocabulary
from queues.management.commands.run_jobs import run_pending_jobs
from queues.models import AuditEntry
from queues.pgmq import Queue
from queues.selectors.messages import MessageFilter, SearchTerm, filter_to_data
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
        self.sent: dict[int, dict] = {}
        self.consumer_deleted: dict[int, dict] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.sequence = iter(range(10**9))

    def produce(self) -> None:
        while not self.producers_stopping.is_set():
            payload = {"seq": next(self.sequence), "kind": random.choice(KINDS), "body": "x" * 40}
            msg_id = self.client.send(QUEUE, payload)
            with self.lock:
                self.sent[msg_id] = payload
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
                            self.consumer_deleted[message.msg_id] = message.message
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
        self.threads = [threading.Thread(target=self.guarded(work)) for work in
                        (self.produce, self.produce, self.consume, self.consume)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.producers_stopping.set()
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.pool.close()


def kind_filter(kind: str, source: str = "live") -> dict:
    return filter_to_data(MessageFilter(source=source, search=(SearchTerm("message", ("kind",), kind),)))


def run_job(user, action: str, filter_data: dict, *, source: str = "live", **parameters) -> None:
    services.create_bulk_job(user=user, queue=Queue.objects.get(queue_name=QUEUE), source=source, action=action,
                             parameters=parameters, filter_data=filter_data, filter_words=action, expected=None)
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
        run_job(user, vocabulary.RETRY, filter_to_data(MessageFilter()), include_in_flight=True)
        until = (pgmq_sql.execute("SELECT now()").fetchone()[0] + timedelta(seconds=2)).isoformat()
        run_job(user, vocabulary.DELAY, kind_filter("plain"), until=until)
        run_job(user, vocabulary.ARCHIVE_ACTION, kind_filter("archive"))
        run_job(user, vocabulary.DELETE, kind_filter("delete"))
        run_job(user, vocabulary.MOVE, kind_filter("move_keep"), destination=DEAD_LETTERS, original="archive")
        run_job(user, vocabulary.MOVE, kind_filter("move_drop"), destination=DEAD_LETTERS, original="delete")
        run_job(user, vocabulary.REQUEUE, kind_filter("requeue", "archive"), source="archive", destination=QUEUE,
                remove_archived=True)
        run_job(user, vocabulary.DELETE_ARCHIVED, kind_filter("forget", "archive"), source="archive")
        # The same actions on chosen messages.
        queue = Queue.objects.get(queue_name=QUEUE)
        for action, parameters in ((vocabulary.RETRY, {"include_in_flight": False}), (vocabulary.ARCHIVE_ACTION, {}),
                                   (vocabulary.DELETE, {}),
                                   (vocabulary.MOVE, {"destination": DEAD_LETTERS, "original": "delete"})):
            chosen = [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_ledger ORDER BY random() LIMIT 20")]
            services.act_on_messages(user=user, queue=queue, action=action, msg_ids=chosen, parameters=parameters)
        # And a purge, with producers still sending.
        services.purge_queue(user=user, queue=queue)
        wait_for(lambda: len(workload.sent) > 600, timeout=30, what="more messages after the purge")
    assert not workload.errors, workload.errors

    # Every msg_id ever created in the queue: by the producers, or by the dashboard requeueing.
    created = dict(workload.sent)
    entries = list(AuditEntry.objects.filter(queue_name=QUEUE).order_by("id"))
    for entry in entries:
        if entry.action == vocabulary.REQUEUE:
            for old, new in entry.details.get("new_msg_ids", {}).items():
                created[new] = created[int(old)]
    live = dict(pgmq_sql.execute("SELECT msg_id, message FROM pgmq.q_ledger").fetchall())
    archive = dict(pgmq_sql.execute("SELECT msg_id, message FROM pgmq.a_ledger").fetchall())
    dashboard_deleted = {payload["msg_id"]: payload["message"] for entry in entries
                         if entry.deleted_payloads for payload in entry.deleted_payloads}
    moved_away = {}  # original msg_id -> the copy's msg_id in the other queue
    for entry in entries:
        original = (entry.target.get("parameters") or {}).get("original")
        removed_by_requeue = entry.action == vocabulary.REQUEUE and entry.target["parameters"].get("remove_archived")
        if (entry.action == vocabulary.MOVE and original == "delete") or removed_by_requeue:
            moved_away.update({int(old): new for old, new in entry.details.get("new_msg_ids", {}).items()})

    places = {"live": live, "archive": archive, "deleted by a consumer": workload.consumer_deleted,
              "deleted from the dashboard": dashboard_deleted, "moved away": moved_away}
    assert len(created) > 600
    for msg_id, payload in created.items():
        found = [name for name, place in places.items() if msg_id in place]
        assert len(found) == 1, f"msg_id {msg_id} is in {found or 'no place'}"
        if found[0] != "moved away":
            assert places[found[0]][msg_id] == payload, f"msg_id {msg_id} changed"
    unknown = set().union(live, archive, workload.consumer_deleted, dashboard_deleted) - set(created)
    assert not unknown, f"messages nobody sent: {sorted(unknown)[:10]}"

    # Each copy in the dead-letter queue carries its original's payload.
    copies = dict(pgmq_sql.execute("SELECT msg_id, message FROM pgmq.q_ledger_dlq").fetchall())
    copied = {new: created[int(old)] for entry in entries if entry.action == vocabulary.MOVE
              for old, new in entry.details.get("new_msg_ids", {}).items()}
    assert copies == copied and len(copies) > 0
    kinds = {entry.action for entry in entries}
    assert {vocabulary.RETRY, vocabulary.DELAY, vocabulary.ARCHIVE_ACTION, vocabulary.DELETE, vocabulary.MOVE,
            vocabulary.REQUEUE, vocabulary.DELETE_ARCHIVED, vocabulary.PURGE} <= kinds

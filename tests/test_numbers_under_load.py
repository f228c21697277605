"""The figures stay true while real producers and consumers work on the queue.

Backlog and rates move between any two queries, so each page load is bracketed by SQL: a counter
that only grows (messages sent, messages archived) must lie between its value just before and
just after the page was made, and what one page shows must add up (with only archiving, never a
delete: backlog + archived = sent, up to the sends under way).
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.conftest import uses_databases
from tests.pages import number, overview_rows, parse, stat

pytestmark = uses_databases
SENDS_UNDER_WAY = 20  # one batch at most can be sent but not yet committed
# What a page counted (backlog + archived, one snapshot) is at least what had been committed when
# the request began: every msg_id sent by then but the producers' two batches under way. It is not
# bounded by the sent figure less those batches: sent is read at the end of the page's statement,
# and on a starved machine more batches committed meanwhile (1,760 sent against 1,360 + 280 seen).


@pytest.fixture
def busy_queue(make_queue, pgmq_database_url):
    make_queue("busy", messages=200)
    stopping = threading.Event()
    errors: list[Exception] = []

    def produce() -> None:
        with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
            while not stopping.is_set():
                connection.execute(
                    "SELECT pgmq.send_batch('busy', array_fill('{\"n\": 1}'::jsonb, ARRAY[%s]))", [SENDS_UNDER_WAY]
                )
                stopping.wait(0.01)

    def consume() -> None:
        with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
            while not stopping.is_set():
                ids = [row[0] for row in connection.execute("SELECT msg_id FROM pgmq.read('busy', 30, 15)")]
                if ids:
                    connection.execute("SELECT pgmq.archive('busy', %s::bigint[])", [ids[:10]])  # 5 left in flight
                stopping.wait(0.01)

    def guarded(work):
        def run():
            try:
                work()
            except Exception as error:  # noqa: BLE001 (reported by the test below)
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(work)) for work in (produce, produce, consume)]
    for thread in threads:
        thread.start()
    yield "busy"
    stopping.set()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors, errors


def counters(pgmq_sql) -> tuple[int, int]:
    return pgmq_sql.execute(
        "SELECT (SELECT last_value FROM pgmq.q_busy_msg_id_seq), (SELECT count(*) FROM pgmq.a_busy)"
    ).fetchone()


def test_overview_figures_hold_under_load(signed_in_client, busy_queue, pgmq_sql):
    for _ in range(15):
        sent_before, archived_before = counters(pgmq_sql)
        row = overview_rows(parse(signed_in_client.get("/")))["busy"]
        sent_after, archived_after = counters(pgmq_sql)

        sent, archived, backlog = number(row["sent"]), number(row["archived"]), number(row["backlog"])
        assert sent_before <= sent <= sent_after
        assert archived_before <= archived <= archived_after
        assert sent_before - 2 * SENDS_UNDER_WAY <= backlog + archived <= sent
        # One snapshot: the states add up to the backlog (the code clamps visible at 0, so a
        # visible >= 0 check could not fail).
        assert number(row["visible"]) + number(row["in-flight"]) + number(row["delayed"]) == backlog


def test_queue_page_figures_hold_under_load(signed_in_client, busy_queue, pgmq_sql):
    for _ in range(15):
        sent_before, archived_before = counters(pgmq_sql)
        page = parse(signed_in_client.get("/queues/busy/"))
        sent_after, archived_after = counters(pgmq_sql)

        sent, archived, backlog = (
            number(stat(page, "sent")),
            number(stat(page, "archived")),
            number(stat(page, "backlog")),
        )
        assert sent_before <= sent <= sent_after
        assert archived_before <= archived <= archived_after
        assert sent_before - 2 * SENDS_UNDER_WAY <= backlog + archived <= sent


def test_paging_under_load_shows_each_message_once(signed_in_client, busy_queue):
    seen: list[int] = []
    url = "/queues/busy/messages/?source=both&sort=msg_id"
    for _ in range(4):
        page = parse(signed_in_client.get(url))
        ids = [int(row["data-msg-id"]) for row in page.select("#messages-live tbody tr[data-msg-id]")]
        seen += ids
        next_link = page.select_one("#messages-live .pager a[rel=next]")
        if next_link is None:
            break
        url = "/queues/busy/messages/" + next_link["href"]
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert len(seen) >= 150

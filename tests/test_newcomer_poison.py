"""Newcomer tasks on the demo's queues, done in Chromium as a new on-call engineer would: open the
most-retried message of `orders`, retry every poison message by filter, move them to `orders-dlq`
and back seeing their lineage, edit and resend.

The demo's queues are made once for the module; each task first empties `orders` and `orders-dlq`
and produces what it needs as the demo's producer and failing consumer would (pgmq.send, then
pgmq.read again and again: a consumer that fails on the message and lets it come back)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from dashboard.demo import DEAD_LETTERS, ORDERS
from queues.management.commands.run_jobs import run_pending_jobs
from tests.conftest import sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]
PASSWORD = "a-long-newcomer-password-5"
POISON_ORDER = '{"type": "order_created", "items": [{"sku": "SKU-UNKNOWN", "qty": 1}], "id": %d}'
GOOD_ORDER = '{"type": "order_paid", "items": [{"sku": "SKU-1", "qty": 2}], "id": %d}'


@pytest.fixture
def orders(demo_queues: str) -> Iterator[psycopg.Connection]:
    """`orders` and `orders-dlq` empty, through a producer's connection."""
    with psycopg.connect(demo_queues, autocommit=True) as connection:
        for queue in (ORDERS, DEAD_LETTERS):
            connection.execute("SELECT pgmq.purge_queue(%s)", [queue])
            connection.execute(f'DELETE FROM pgmq."a_{queue}"')  # the archive too: ids of other tasks
        yield connection


def produce(sql: psycopg.Connection, *, poison_reads: list[int], good: int = 0) -> list[int]:
    """Poison orders the consumer failed on as often as `poison_reads` says (each in flight again
    now, as poison nearly always is), and `good` orders waiting; the poison msg_ids, in order."""
    ids = [
        sql.execute("SELECT pgmq.send(%s, %s::jsonb)", [ORDERS, POISON_ORDER % n]).fetchone()[0]
        for n in range(len(poison_reads))
    ]
    wanted = dict(zip(ids, poison_reads, strict=True))
    for round_number in range(1, max(poison_reads) + 1):
        read = [row[0] for row in sql.execute("SELECT msg_id FROM pgmq.read(%s, 0, 100)", [ORDERS])]
        done = [msg_id for msg_id in read if wanted[msg_id] == round_number]
        if done:  # the consumer holds these from its last failed read on: in flight
            sql.execute("SELECT pgmq.set_vt(%s, %s::bigint[], 3600)", [ORDERS, done])
    for n in range(good):
        sql.execute("SELECT pgmq.send(%s, %s::jsonb)", [ORDERS, GOOD_ORDER % n])
    return ids


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("newcomer-operator", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Operator"))
    return user


def follow_job_to_its_end(page, dialog, affected: int) -> None:
    expect(dialog).to_contain_text("started")
    dialog.get_by_role("link", name="Follow job").click()
    run_pending_jobs()
    expect(page.locator("[data-job-field=status]")).to_have_text("done", timeout=10_000)
    expect(page.locator("[data-job-field=affected]")).to_have_text(str(affected))


def test_open_the_most_retried_message_of_orders(page, dashboard_server, orders, operator):
    worst = produce(orders, poison_reads=[6, 11, 7], good=3)[1]
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.get_by_role("link", name=ORDERS, exact=True).first.click()
    poison = page.locator("#queue-poison")
    expect(poison.locator("tbody tr[data-msg-id]")).to_have_count(3)
    poison.locator("tbody tr[data-msg-id]").first.get_by_role("link").click()
    expect(page.locator("h1")).to_contain_text(f"Message {worst}")
    expect(page.locator("[data-fact=read_ct]")).to_have_text("11")
    expect(page.locator("pre.json")).to_contain_text("SKU-UNKNOWN")


def test_retry_every_poison_message_of_orders_by_filter(page, dashboard_server, orders, operator):
    poison = produce(orders, poison_reads=[5, 8, 6], good=2)
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.goto(f"{dashboard_server}/queues/{ORDERS}/")
    page.get_by_role("link", name="See them all in the message browser").click()
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(3)
    page.get_by_role("button", name="Select every message matching these filters").click()
    page.get_by_role("button", name="Retry now").click()
    dialog = page.locator("#action-dialog")
    # Chosen by read_ct: the dialog says first that these are in flight, and what a second delivery is.
    expect(dialog.locator("[data-read-ct-lead]")).to_contain_text("3 of the 3 are in flight")
    expect(dialog.locator("[data-in-flight]")).to_contain_text("second delivery")
    dialog.get_by_role("button", name="Retry now all 3, in flight included").click()
    follow_job_to_its_end(page, dialog, 3)
    visible = orders.execute(
        "SELECT msg_id FROM pgmq.q_orders WHERE vt <= clock_timestamp() AND msg_id = ANY(%s) ORDER BY msg_id", [poison]
    ).fetchall()
    assert [row[0] for row in visible] == poison


def test_move_them_to_orders_dlq_and_back_seeing_their_lineage(page, dashboard_server, orders, operator):
    poison = produce(orders, poison_reads=[9, 5], good=1)
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.goto(f"{dashboard_server}/queues/{ORDERS}/messages/?read_ct_min=5")
    page.get_by_role("button", name="Select every message matching these filters").click()
    page.get_by_role("button", name="Move…").click()
    dialog = page.locator("#action-dialog")
    expect(dialog.get_by_label("To the queue")).to_have_value(DEAD_LETTERS)  # its pair, not the first by name
    dialog.get_by_role("button", name="Move all 2, in flight included").click()
    follow_job_to_its_end(page, dialog, 2)

    page.goto(f"{dashboard_server}/queues/{DEAD_LETTERS}/")
    page.get_by_role("button", name=f"Send all back to {ORDERS}").click()
    expect(dialog.get_by_label("To the queue")).to_have_value(ORDERS)
    expect(dialog.locator("[data-plan-count]")).to_have_text("2")
    dialog.get_by_role("button", name="Move to another queue (2)").click()
    follow_job_to_its_end(page, dialog, 2)

    # Back in orders: the copies of the copies, found by their origin.
    page.goto(f"{dashboard_server}/queues/{ORDERS}/messages/?copied_from={DEAD_LETTERS}")
    rows = page.locator("#messages-live tbody tr[data-msg-id]")
    expect(rows).to_have_count(2)
    rows.last.get_by_role("link").first.click()  # the older one: the copy of the most-read poison
    lineage = page.locator("[data-copied-from]")
    expect(lineage).to_contain_text(f"Copied from {DEAD_LETTERS} #")
    expect(page.locator("[data-origin-chain]")).to_contain_text(f"{ORDERS} #{poison[0]} (read 9 times)")
    lineage.get_by_role("link").first.click()
    expect(page.locator("h1")).to_contain_text("Message")
    expect(page.locator("[data-copies]")).to_contain_text(f"{ORDERS} #")
    page.locator("[data-copied-from]").get_by_role("link", name=f"{ORDERS} #{poison[0]}").click()
    expect(page.locator("h1")).to_contain_text(f"Message {poison[0]}")
    expect(page.locator("[data-copies]")).to_contain_text(f"{DEAD_LETTERS} #")


def test_edit_and_resend_and_the_copy_shows_where_it_came_from(page, dashboard_server, orders, operator):
    original = produce(orders, poison_reads=[3])[0]
    orders.execute("SELECT pgmq.set_vt(%s, %s::bigint, 0)", [ORDERS, original])  # back from its consumer
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.goto(f"{dashboard_server}/queues/{ORDERS}/messages/{original}/")
    page.get_by_role("link", name="Edit and resend").click()
    message = page.get_by_label("Message")
    message.fill(message.input_value().replace("SKU-UNKNOWN", "SKU-1"))
    page.get_by_role("button", name=re.compile("Send the edited copy")).click()
    expect(page.locator("h1")).not_to_contain_text(f"Message {original} ")
    expect(page.locator("pre.json").first).to_contain_text("SKU-1")
    lineage = page.locator("[data-copied-from]")
    expect(lineage).to_contain_text(f"Copied from {ORDERS} #{original} (read 3 times)")
    expect(lineage).to_contain_text("edit and resend")
    lineage.get_by_role("link").first.click()
    expect(page.locator("h1")).to_contain_text(f"Message {original}")
    expect(page.locator(".page-head")).to_contain_text("archive")
    expect(page.locator("[data-copies]")).to_contain_text(f"{ORDERS} #")

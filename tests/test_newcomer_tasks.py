"""Issue 15's newcomer tasks on the demo's `orders`, done in Chromium as a new user would: find a
message by `customer.id`, send a message with headers and a delay, use the keyboard. (Switching
database on a queue page is in tests/test_several_databases.py, beside its second database.)

The demo's queues are made once for the module; each task first empties `orders` and sends what it
needs as the demo's producer does: order events shaped by dashboard/demo.py's order_event."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import psycopg
import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect
from psycopg.types.json import Jsonb

from dashboard.demo import ORDERS, order_event
from tests.conftest import sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]
PASSWORD = "a-long-newcomer-password-7"


@pytest.fixture
def orders(demo_queues: str) -> Iterator[psycopg.Connection]:
    """`orders` empty, through a producer's connection."""
    with psycopg.connect(demo_queues, autocommit=True) as connection:
        connection.execute("SELECT pgmq.purge_queue(%s)", [ORDERS])
        yield connection


def send_orders(sql: psycopg.Connection, *events: dict) -> list[int]:
    sent = sql.execute("SELECT * FROM pgmq.send_batch(%s, %s::jsonb[])", [ORDERS, [Jsonb(e) for e in events]])
    return [row[0] for row in sent]


def order_of(customer_id: int, *, event_id: int, email: str) -> dict:
    event = order_event(event_id)
    event["customer"].update(id=customer_id, email=email)
    return event


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user("newcomer-tasks", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Operator"))
    return user


def test_find_a_message_by_customer_id(page, dashboard_server, orders, operator):
    customer = 2122
    sent = send_orders(
        orders,
        order_of(customer, event_id=1, email="first@example.com"),
        # 2122 elsewhere in these: as the event's own id, in another customer's address.
        order_of(17, event_id=customer, email="seventeen@example.com"),
        order_of(212, event_id=3, email=f"customer{customer}@example.com"),
        order_of(customer, event_id=4, email="again@example.com"),
        *(order_of(1000 + n, event_id=10 + n, email=f"c{n}@example.com") for n in range(8)),
    )
    matching = [sent[3], sent[0]]  # newest first, as the browser lists
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.get_by_role("link", name=ORDERS, exact=True).first.click()
    page.get_by_role("navigation", name="This queue").get_by_role("link", name="Messages").click()
    search = page.get_by_role("searchbox", name="Search")
    search.fill(f"customer.id:{customer}")
    search.press("Enter")

    rows = page.locator("#messages-live tbody tr[data-msg-id]")
    expect(rows).to_have_count(2)
    assert [rows.nth(n).get_attribute("data-msg-id") for n in range(2)] == [str(msg_id) for msg_id in matching]
    expect(page.locator("details.filter-fold summary")).to_contain_text(f"message.customer.id is '{customer}'")
    for n in range(2):
        expect(rows.nth(n).locator("td.payload summary code mark")).to_have_text([str(customer)])
    rows.first.get_by_role("link", name=str(matching[0]), exact=True).click()
    expect(page.locator("h1")).to_contain_text(f"Message {matching[0]}")
    expect(page.locator("pre.json").first).to_contain_text(f'"id": {customer}')
    expect(page.locator("pre.json").first).to_contain_text("again@example.com")


def test_send_a_message_with_headers_and_a_delay(page, dashboard_server, orders, operator):
    message = order_of(2122, event_id=77, email="sent-by-hand@example.com")
    headers = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "x-pgmq-group": "tenant-3", "attempt": 1}
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.get_by_role("link", name=ORDERS, exact=True).first.click()
    page.get_by_role("link", name="Send a message").click()
    page.get_by_label("Message", exact=True).fill(json.dumps(message, indent=2))
    page.get_by_label("Headers", exact=True).fill(json.dumps(headers))
    page.get_by_label(re.compile("^Delay")).fill("60")
    page.get_by_role("button", name="Send", exact=True).click()

    expect(page).to_have_url(re.compile(rf"/queues/{ORDERS}/messages/\d+/$"))
    msg_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("ul.flash")).to_contain_text(f"Sent message {msg_id} to {ORDERS}.")
    expect(page.locator("h1")).to_have_text(f"Message {msg_id} delayed")
    expect(page.locator("[data-countdown]")).to_be_visible()  # "visible again in ..."
    shown_headers = page.locator("section.panel", has=page.get_by_role("heading", name="Headers")).locator("pre.json")
    for value in ("4bf92f3577b34da6a3ce929d0e0e4736", "tenant-3"):
        expect(shown_headers).to_contain_text(value)

    stored, stored_headers, ahead_s, delay_s = orders.execute(
        "SELECT message, headers, extract(epoch FROM vt - clock_timestamp()), extract(epoch FROM vt - enqueued_at) "
        "FROM pgmq.q_orders WHERE msg_id = %s",
        [msg_id],
    ).fetchone()
    assert (stored, stored_headers) == (message, headers)
    assert 59 <= delay_s <= 61, delay_s  # vt set 60 s after it was sent
    assert 45 < ahead_s <= 60, ahead_s  # and still about a minute ahead now


def test_use_the_keyboard(page, dashboard_server, orders, operator):
    send_orders(orders, *(order_event(n) for n in range(70)))  # two pages in the message browser
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    heading = page.get_by_role("heading", level=1)

    page.keyboard.press("?")
    shortcuts = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(shortcuts).to_be_visible()
    for text in ("Go to the overview", "Go to the alerts", "Go to the audit log", "Refresh now", "Previous, next page"):
        expect(shortcuts).to_contain_text(text)
    page.keyboard.press("Escape")
    expect(shortcuts).to_be_hidden()

    for keys, title in (("ga", "Alerts"), ("gl", "Audit log"), ("go", "Queues")):
        for key in keys:
            page.keyboard.press(key)
        expect(heading).to_have_text(title)

    # r: the live regions now, even with refreshing paused, showing what was sent meanwhile.
    page.get_by_role("button", name="Pause").click()
    backlog = page.locator(f"tr[data-queue={ORDERS}] [data-column=backlog]")
    expect(backlog).to_have_text("70")
    send_orders(orders, order_event(70))
    page.keyboard.press("r")
    expect(backlog).to_have_text("71")

    page.keyboard.press("/")
    expect(page.locator("[data-search-shortcut]")).to_be_focused()

    page.goto(f"{dashboard_server}/queues/{ORDERS}/messages/")
    rows = page.locator("#messages-live tbody tr[data-msg-id]")
    newest = rows.first.get_attribute("data-msg-id")
    page.keyboard.press("]")
    expect(rows.first).not_to_have_attribute("data-msg-id", newest)
    expect(rows).to_have_count(21)
    page.keyboard.press("[")
    expect(rows.first).to_have_attribute("data-msg-id", newest)
    expect(rows).to_have_count(50)

    # Once a filter is applied its form folds away: / opens it again, in the search field.
    search = page.get_by_role("searchbox", name="Search")
    search.fill("type:order_*")
    search.press("Enter")
    expect(search).to_be_hidden()
    heading.click()
    page.keyboard.press("/")
    expect(search).to_be_visible()
    expect(search).to_be_focused()

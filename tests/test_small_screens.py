"""In Chromium on a 390 × 844 phone: what someone on call reaches first on each page is on the first
screen, queue names read as words, no page scrolls sideways, and the long lists are cards of a
bounded height instead of tables cut off at the right edge."""

from __future__ import annotations

import base64
import json
import random

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from dashboard.demo import order_event
from tests.conftest import SCREENSHOTS, sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]

PHONE = {"width": 390, "height": 844}
PASSWORD = "a-long-password-to-check"
# pgmq's longest name (its tables' names must fit PostgreSQL's 63 bytes), with nowhere to break it.
UNBREAKABLE_NAME = "x" * 47

# How many lines an element's text takes: its height over its line height.
LINES = """element => {
  const style = getComputedStyle(element);
  const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.2;
  return Math.round(element.getBoundingClientRect().height / lineHeight);
}"""
# How many lines a text itself takes, however tall its box is stretched (a label beside a long value).
TEXT_LINES = """element => {
  const range = document.createRange();
  range.selectNodeContents(element);
  return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size;
}"""
# Against the phone's width, not window.innerWidth: a mobile browser zooms out to fit a page too wide.
SIDEWAYS_SCROLL = f"document.documentElement.scrollWidth - {PHONE['width']}"


@pytest.fixture
def phone_data(make_queue, pgmq_sql, django_user_model):
    """The demo's queues with realistic orders, ten of them poison (read 5 times, some in flight),
    a few archived, and audit entries with a destination and a filter to show."""
    random.seed(15)
    make_queue("notifications", messages=3)
    make_queue("orders")
    pgmq_sql.execute(
        "SELECT pgmq.send_batch('orders', %s::jsonb[])", [[json.dumps(order_event(n)) for n in range(1, 41)]]
    )
    make_queue("orders-dlq", messages=4)
    for _ in range(5):  # the ten oldest orders read five times: poison
        pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 0, 10)")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 600, 4)")  # four of them now in flight
    pgmq_sql.execute("SELECT pgmq.archive('orders', ARRAY[38, 39, 40]::bigint[])")
    user = django_user_model.objects.create_user("oncall", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Admin"))
    from queues.models import AuditEntry

    for n in range(6):
        AuditEntry.objects.create(
            username="oncall",
            action="move",
            queue_name="orders",
            target={"msg_ids": [n + 1, n + 2], "destination": "orders-dlq"},
            requested=2,
            affected=2,
            outcome="done",
        )


@pytest.fixture
def phone(browser, dashboard_server, phone_data, request):
    """A signed-in tab on a phone; fails the test if the page logs an error."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(tab, dashboard_server, "oncall", PASSWORD)
    yield tab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()
    assert errors == [], f"errors on the page: {errors}"


def loaded(page) -> None:
    page.wait_for_load_state("networkidle")
    expect(page.locator(".loading")).to_have_count(0, timeout=15_000)


def top(locator) -> float:
    return locator.evaluate("element => element.getBoundingClientRect().top + window.scrollY")


def test_the_overview_shows_the_first_queue_on_the_first_screen(phone, dashboard_server):
    loaded(phone)
    first_row = phone.locator("#overview-live tr[data-queue]").first
    expect(first_row).to_be_visible()
    assert top(first_row) < PHONE["height"], "the first queue starts below the first screen"
    # the whole row is there, not cut at the screen's right edge: its cause and its backlog
    assert first_row.evaluate("row => row.getBoundingClientRect().right") <= PHONE["width"]
    expect(first_row.locator("[data-column=backlog]")).to_be_in_viewport()
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0


def test_queue_names_are_whole_words_on_one_line(phone, dashboard_server, make_queue):
    make_queue(UNBREAKABLE_NAME, messages=1)
    phone.reload()
    loaded(phone)
    for name in ("notifications", "orders-dlq"):
        link = phone.locator("a.queue-link", has_text=name).first
        assert link.evaluate(LINES) == 1, f"“{name}” is broken over lines on the overview"
    # A name with no break opportunity wider than the card breaks where the card ends, not beyond it.
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0

    phone.goto(dashboard_server + "/queues/notifications/")
    loaded(phone)
    assert phone.get_by_role("heading", level=1).evaluate(LINES) == 1
    phone.goto(dashboard_server + f"/queues/{UNBREAKABLE_NAME}/")
    loaded(phone)
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0


def test_the_queue_page_with_ten_poison_messages_stays_a_few_screens_long(phone, dashboard_server):
    phone.goto(dashboard_server + "/queues/orders/")
    loaded(phone)
    rows = phone.locator("#queue-poison tr[data-msg-id]")
    expect(rows).to_have_count(10)
    heights = rows.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
    assert max(heights) <= 130, f"poison rows of {heights} px"
    expect(rows.first.locator("[data-column=read_ct]")).to_have_text("6")  # worst first: read once more, in flight
    page_height = phone.evaluate("document.documentElement.scrollHeight")
    assert page_height <= 6 * PHONE["height"], f"the queue page is {page_height} px tall"
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0


def test_the_message_browser_folds_its_filters_and_shows_messages_first(phone, dashboard_server):
    phone.goto(dashboard_server + "/queues/orders/messages/")
    loaded(phone)
    filters = phone.locator("details.filter-fold")
    expect(filters).not_to_have_attribute("open", "")
    first_row = phone.locator("#messages-live tr[data-msg-id]").first
    assert top(first_row) < PHONE["height"], "the first message starts below the first screen"
    rows = phone.locator("#messages-live tr[data-msg-id]")
    heights = rows.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
    assert max(heights) <= 160, f"message rows of {heights} px"
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0

    # Unfolded with a tap, they filter as before, and fold again with what they filter in words.
    filters.locator("summary").click()
    phone.get_by_label("read_ct from").fill("5")
    phone.get_by_role("button", name="Apply").click()
    expect(phone.locator("#messages-live tr[data-msg-id]")).to_have_count(10)
    expect(filters).not_to_have_attribute("open", "")
    expect(filters.locator("summary")).to_contain_text("read_ct")
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0


def test_the_audit_log_shows_entries_first_as_cards(phone, dashboard_server):
    phone.goto(dashboard_server + "/audit/")
    loaded(phone)
    rows = phone.locator("tr[data-audit-entry]")
    assert top(rows.first) < PHONE["height"], "the newest entry starts below the first screen"
    heights = rows.evaluate_all("rows => rows.map(row => row.getBoundingClientRect().height)")
    assert max(heights) <= 220, f"audit rows of {heights} px"
    expect(rows.first.locator("[data-column=destination]")).to_be_in_viewport()
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0


def test_a_celery_task_reads_whole_on_a_phone(phone, dashboard_server, make_queue, pgmq_sql):
    """Its facts' labels on one line each, its task name's underscores not under the link's underline,
    and a list filtered by that task saying the whole filter, wrapped rather than cut."""
    task = "tests.celery_app.divide_by_the_number_of_orders"
    make_queue("celery_tasks")
    body = base64.b64encode(json.dumps([[1, 2], {}, {}]).encode()).decode()
    envelope = {"body": body, "content-type": "application/json", "properties": {"body_encoding": "base64"}}
    envelope["headers"] = {"task": task, "id": "1431ea8e-8f85-4504-8148-894365df0e96", "retries": 1}
    msg_id = pgmq_sql.execute("SELECT pgmq.send('celery_tasks', %s::jsonb)", [json.dumps(envelope)]).fetchone()[0]
    phone.goto(dashboard_server + f"/queues/celery_tasks/messages/{msg_id}/")
    loaded(phone)
    labels = phone.locator("#celery-task dt")
    expect(labels.filter(has_text="Task id")).to_have_count(1)
    assert labels.evaluate_all(f"labels => labels.map({TEXT_LINES})") == [1] * labels.count()
    # The underline runs below the code's descenders (an underscore sits on them), not through them.
    link = phone.locator("[data-celery=task] a")
    underline_offset = link.evaluate("a => parseFloat(getComputedStyle(a).textUnderlineOffset)")
    code = link.locator("code").evaluate("code => parseFloat(getComputedStyle(code).fontSize)")
    assert underline_offset >= 0.3 * code, f"an underline {underline_offset} px below text of {code} px"

    link.click()
    loaded(phone)
    summary = phone.locator("details.filter-fold > summary")
    expect(summary).to_contain_text(task)
    assert summary.evaluate("element => element.scrollWidth <= element.clientWidth")
    assert phone.evaluate(SIDEWAYS_SCROLL) <= 0

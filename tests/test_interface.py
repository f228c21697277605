"""In Chromium: keyboard shortcuts and timestamps in UTC or the browser's time zone."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from tests.conftest import sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]


def test_j_k_and_enter_walk_the_queues_and_question_mark_lists_the_shortcuts(
    page, dashboard_server, operator, operator_password, make_queue
):
    for name in ("kbd-a", "kbd-b", "kbd-c"):
        make_queue(name, messages=1)
    sign_in(page, dashboard_server, operator.username, operator_password)
    current = page.locator("tr.keyboard-current")
    page.keyboard.press("j")
    expect(current).to_have_attribute("data-queue", "kbd-a")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    expect(current).to_have_attribute("data-queue", "kbd-b")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("kbd-b")

    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    expect(help_dialog).to_contain_text("Next, previous row")
    help_dialog.get_by_role("button", name="Close").click()
    expect(help_dialog).to_be_hidden()


def test_x_ticks_the_current_message(page, dashboard_server, operator, operator_password, make_queue):
    make_queue("kbd-ticks", messages=3)
    operator.groups.add(Group.objects.get(name="Operator"))  # who may tick messages to act on them
    sign_in(page, dashboard_server, operator.username, operator_password)
    page.goto(dashboard_server + "/queues/kbd-ticks/messages/")
    page.keyboard.press("j")
    page.keyboard.press("x")
    expect(page.get_by_label("Select message 3")).to_be_checked()
    expect(page.locator("[data-selection-count]")).to_have_text("1 selected")


def test_times_switch_between_utc_and_the_browsers_time_zone(
    browser, dashboard_server, operator, operator_password, make_queue, pgmq_sql
):
    make_queue("zoned", messages=1)
    pgmq_sql.execute("UPDATE pgmq.q_zoned SET enqueued_at = '2026-01-02 03:04:05+00'")
    context = browser.new_context(timezone_id="Asia/Tokyo")  # UTC+9, no daylight saving
    page = context.new_page()
    try:
        sign_in(page, dashboard_server, operator.username, operator_password)
        page.goto(dashboard_server + "/queues/zoned/messages/")
        enqueued = page.locator("tr[data-msg-id='1'] time").first
        expect(enqueued).to_have_text("2026-01-02 03:04:05")
        page.get_by_role("button", name="UTC").click()
        expect(enqueued).to_have_text("2026-01-02 12:04:05")
        expect(enqueued).to_have_attribute(
            "title", re.compile(r"UTC · 2026-01-02 12:04:05\.000 Asia/Tokyo · \d+ d ago")
        )
        page.reload()  # the choice is kept, and applies to rows a refresh brings
        expect(page.locator("tr[data-msg-id='1'] time").first).to_have_text("2026-01-02 12:04:05")
        page.get_by_role("button", name="Local time").click()
        expect(page.locator("tr[data-msg-id='1'] time").first).to_have_text("2026-01-02 03:04:05")
    finally:
        context.close()


def test_g_then_a_letter_goes_to_a_page_r_refreshes_and_brackets_turn_the_pages(
    page, dashboard_server, operator, operator_password, make_queue, pgmq_sql
):
    make_queue("kbd-pages", messages=60)  # two pages of messages (50 a page)
    sign_in(page, dashboard_server, operator.username, operator_password)
    heading = page.get_by_role("heading", level=1)
    for keys, title in ((["g", "a"], "Alerts"), (["g", "l"], "Audit log"), (["g", "o"], "Queues")):
        for key in keys:
            page.keyboard.press(key)
        expect(heading).to_have_text(title)

    # r refreshes the live regions now, even while refreshing is paused.
    page.get_by_role("button", name="Pause").click()
    backlog = page.locator("tr[data-queue=kbd-pages] [data-column=backlog]")
    expect(backlog).to_have_text("60")
    pgmq_sql.execute("SELECT pgmq.send('kbd-pages', '{}')")
    page.keyboard.press("r")
    expect(backlog).to_have_text("61")

    page.goto(dashboard_server + "/queues/kbd-pages/messages/")
    first_row = page.locator("#messages-live tbody tr[data-msg-id]").first
    newest = first_row.get_attribute("data-msg-id")
    page.keyboard.press("]")
    expect(first_row).not_to_have_attribute("data-msg-id", newest)
    page.keyboard.press("[")
    expect(first_row).to_have_attribute("data-msg-id", newest)

    # Typed into a field, the keys are text, not shortcuts.
    address = page.url
    page.keyboard.press("/")
    page.keyboard.type("g a ] r")
    expect(page.locator("[data-search-shortcut]")).to_have_value("g a ] r")
    assert page.url == address

    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 1, "y": 1})
    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    for text in ("Go to the overview", "Go to the alerts", "Go to the audit log", "Refresh now", "Previous, next page"):
        expect(help_dialog).to_contain_text(text)

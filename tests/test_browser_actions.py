"""In Chromium: selecting messages, the confirmation that states what will happen, the result,
a job by filter followed to its end, and what a viewer does not see."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from queues.management.commands.run_jobs import run_pending_jobs
from tests.conftest import SCREENSHOTS, sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]
PASSWORD = "a-long-browser-password-7"


@pytest.fixture
def role_user(django_user_model):
    def make(role: str):
        user = django_user_model.objects.create_user(f"browser-{role.lower()}", password=PASSWORD)
        user.groups.add(Group.objects.get(name=role))
        return user

    return make


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"action-{name}.png", full_page=True)


def test_an_operator_selects_a_range_confirms_and_sees_the_result(
    page, dashboard_server, role_user, make_queue, pgmq_sql
):
    make_queue("clicked", messages=8)
    operator = role_user("Operator")
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.goto(dashboard_server + "/queues/clicked/messages/")
    page.get_by_label("Select message 7").check()
    page.get_by_label("Select message 4").click(modifiers=["Shift"])  # 7, 6, 5, 4
    expect(page.locator("[data-selection-count]")).to_have_text("4 selected")

    page.get_by_role("button", name="Archive").click()
    dialog = page.locator("#action-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("[data-plan]")).to_contain_text("Move 4 messages of clicked to its archive.")
    shot(page, "confirm-selected")
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.a_clicked").fetchone()[0] == 0  # nothing done yet

    dialog.get_by_role("button", name="Archive (4)").click()
    expect(dialog.locator("[data-result-affected]")).to_have_text("4")
    shot(page, "result-selected")
    archived = [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.a_clicked ORDER BY msg_id")]
    assert archived == [4, 5, 6, 7]

    dialog.get_by_role("button", name="Close").click()
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(4)
    expect(page.locator("[data-selection-count]")).to_have_text("Select messages to act on them")


def test_an_operator_deletes_everything_a_filter_matches_as_a_job(
    page, dashboard_server, role_user, make_queue, pgmq_sql
):
    make_queue("filtered_out")
    for n in range(1, 13):
        pgmq_sql.execute("SELECT pgmq.send('filtered_out', %s::jsonb)", [f'{{"n": {n}, "bad": {str(n > 9).lower()}}}'])
    operator = role_user("Operator")
    sign_in(page, dashboard_server, operator.username, PASSWORD)
    page.goto(dashboard_server + "/queues/filtered_out/messages/?message=%7B%22bad%22%3Atrue%7D")
    page.get_by_role("button", name="Select every message matching these filters").click()
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.locator("#action-dialog")
    expect(dialog.locator("[data-plan-count]")).to_have_text("3")
    expect(dialog.locator("[data-plan]")).to_contain_text('matching message contains {"bad": true}')
    shot(page, "confirm-filter")
    dialog.get_by_role("button", name="Delete (3)").click()
    expect(dialog).to_contain_text("started")

    dialog.get_by_role("link", name="Follow job").click()
    expect(page.locator("[data-job-field=status]")).to_have_text("pending")
    run_pending_jobs()
    expect(page.locator("[data-job-field=status]")).to_have_text("done", timeout=15_000)  # it refreshes itself
    expect(page.locator("[data-job-field=affected]")).to_have_text("3")
    shot(page, "job-done")
    remaining = [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_filtered_out ORDER BY msg_id")]
    assert remaining == list(range(1, 10))

    page.get_by_role("link", name="entry").click()
    expect(page.locator("h1")).to_contain_text("Delete on filtered_out")
    shot(page, "audit-entry")


def test_a_retry_counts_the_messages_in_flight_only_once_their_box_is_ticked(
    page, dashboard_server, role_user, make_queue, pgmq_sql
):
    make_queue("half_read", messages=3)
    pgmq_sql.execute("SELECT * FROM pgmq.read('half_read', 3600, 1)")  # msg 1: a consumer has it
    sign_in(page, dashboard_server, role_user("Operator").username, PASSWORD)
    page.goto(dashboard_server + "/queues/half_read/messages/")
    page.locator("[data-select-page]").check()
    page.get_by_role("button", name="Retry now").click()
    dialog = page.locator("#action-dialog")
    expect(dialog.locator("[data-in-flight]")).to_contain_text("1 is in flight")
    confirm = dialog.locator("button[type=submit]")
    expect(confirm).to_have_text("Retry now (2)")
    dialog.get_by_label("Retry it too").check()
    expect(confirm).to_have_text("Retry now (3)")
    dialog.get_by_label("Retry it too").uncheck()
    confirm.click()
    expect(dialog.locator("[data-result-skipped]")).to_have_text("1")
    assert pgmq_sql.execute("SELECT vt > now() FROM pgmq.q_half_read WHERE msg_id = 1").fetchone()[0]


def test_an_admin_purges_only_after_typing_the_name(page, dashboard_server, role_user, make_queue, pgmq_sql):
    make_queue("to_empty", messages=5)
    admin = role_user("Admin")
    sign_in(page, dashboard_server, admin.username, PASSWORD)
    page.goto(dashboard_server + "/queues/to_empty/")
    page.get_by_role("link", name="Purge…").click()
    expect(page.locator("[data-plan]")).to_contain_text("5 messages now")
    page.expected_errors.append("status of 400")  # the wrong name is answered with 400
    page.get_by_label("Type the queue's name").fill("to_emtpy")
    page.get_by_role("button", name="Purge to_empty").click()
    expect(page.get_by_role("alert")).to_contain_text("exactly")
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_to_empty").fetchone()[0] == 5
    shot(page, "purge-refused")
    page.get_by_label("Type the queue's name").fill("to_empty")
    page.get_by_role("button", name="Purge to_empty").click()
    expect(page.locator(".flash")).to_contain_text("Purged 5 messages from to_empty.")
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_to_empty").fetchone()[0] == 0


def test_a_viewer_has_nothing_to_click(page, dashboard_server, role_user, make_queue):
    make_queue("look_only", messages=3)
    viewer = role_user("Viewer")
    sign_in(page, dashboard_server, viewer.username, PASSWORD)
    page.goto(dashboard_server + "/queues/look_only/messages/")
    expect(page.locator("#messages-live tbody tr[data-msg-id]")).to_have_count(3)
    expect(page.locator("input[name=msg_id], [data-action-form]")).to_have_count(0)
    page.goto(dashboard_server + "/queues/look_only/")
    expect(page.get_by_role("link", name="Send a message")).to_have_count(0)
    expect(page.get_by_role("link", name="Purge…")).to_have_count(0)

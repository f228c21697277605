"""In Chromium: sign in, see the queues, follow a link and come back, watch the page refresh itself."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]


def test_signing_in_shows_the_queues_and_their_links_work(page, dashboard_server, operator, operator_password,
                                                          make_queue):
    make_queue("Orders-EU", messages=3)
    make_queue("with space", messages=1)

    sign_in(page, dashboard_server, operator.username, operator_password)

    table = page.locator("#overview-live")
    orders_row = table.locator("tr", has=page.get_by_role("link", name="Orders-EU", exact=True))
    expect(orders_row.locator("[data-column=backlog]")).to_have_text("3")
    page.get_by_role("link", name="with space", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("with space")
    assert page.url == dashboard_server + "/queues/with%20space/"
    expect(page.locator("[data-stat=backlog]")).to_have_text("1")

    page.go_back()
    expect(page.get_by_role("heading", level=1)).to_have_text("Queues")
    page.go_forward()
    expect(page.get_by_role("heading", level=1)).to_have_text("with space")


def test_the_overview_refreshes_itself_without_a_reload(page, dashboard_server, operator, operator_password,
                                                       make_queue, pgmq_sql):
    make_queue("growing", messages=1)
    sign_in(page, dashboard_server, operator.username, operator_password)
    page.evaluate("window.loadedOnce = true")  # gone if the page reloads
    backlog = page.locator("tr", has=page.get_by_role("link", name="growing", exact=True)).locator(
        "[data-column=backlog]")
    expect(backlog).to_have_text("1")

    pgmq_sql.execute("""SELECT pgmq.send_batch('growing', array_fill('{"more": true}'::jsonb, ARRAY[5]))""")

    expect(backlog).to_have_text("6", timeout=15_000)  # the table polls every 5 s
    assert page.evaluate("window.loadedOnce") is True


def test_the_sign_in_form_says_when_the_password_is_wrong(page, dashboard_server, operator):
    page.goto(dashboard_server + "/")
    expect(page).to_have_url(dashboard_server + "/login/?next=/")
    page.get_by_label("Username").fill(operator.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")

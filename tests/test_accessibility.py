"""In Chromium: axe-core, the standard accessibility engine, checks every page and dialog of the
dashboard against WCAG 2.0 and 2.1, levels A and AA, in light and dark, on a laptop and on a
phone; on the way every page is saved to shots/pages/ to look at, and none may be wider than the
screen; and every control reached with Tab shows where the focus is.

axe-core is fetched pinned and checksummed by `scripts/fetch_static.py --tests` into tests/vendor/
(never served to users) and injected into each page by Playwright as an init script, which runs
beside the page's own scripts without loosening its Content-Security-Policy.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from tests.conftest import BASE_DIR, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SCHEMES = ["light", "dark"]
SCREENS = {"laptop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
SHOTS = BASE_DIR / "shots" / "pages"
PASSWORD = "a-long-password-to-check"

RUN_AXE = """async (tags) => {
  const results = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return results.violations.map(violation => ({
    id: violation.id, impact: violation.impact, help: violation.help, helpUrl: violation.helpUrl,
    nodes: violation.nodes.map(node => ({target: node.target.join(" "), summary: node.failureSummary})),
  }));
}"""


@pytest.fixture
def dashboard_data(make_queue, pgmq_sql, django_user_model):
    """Something on every page: messages live, in flight and archived, an audit entry, a second queue
    to move to and act on."""
    make_queue("orders", messages=30)
    make_queue("orders-dlq", messages=4)
    pgmq_sql.execute("SELECT pgmq.archive('orders', ARRAY[1, 2, 3]::bigint[])")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 600, 2)")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders-dlq', 0, 1)")  # read_ct 1, visible again
    pgmq_sql.execute("SELECT pgmq.bind_topic('orders.#', 'orders')")
    user = django_user_model.objects.create_user("checker", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="Admin"))
    from queues.models import AuditEntry

    entry = AuditEntry.objects.create(
        username="checker",
        action="archive",
        queue_name="orders",
        target={"msg_ids": [1, 2, 3]},
        requested=3,
        affected=3,
        outcome="done",
    )
    return {"audit_entry": entry.pk}


class Checker:
    """Runs axe on what the tab shows now and keeps every violation, named by where it was."""

    def __init__(self, page, where: str):
        self.page, self.where, self.found, self.checked = page, where, [], []
        self.too_wide: dict[str, int] = {}

    def check(self, state: str, *, shot: str | None = None) -> None:
        """axe on what the tab shows now, in light and in dark (one page load for both: the colours
        follow the scheme at once, the charts redraw); with `shot`, the page is also saved as
        shots/pages/<shot>-<scheme>.png and measured: wider than the screen is a failure too."""
        self.page.wait_for_load_state("networkidle")
        # Live regions loading on their own (hx-trigger="load") are part of the page.
        expect(self.page.locator(".loading")).to_have_count(0, timeout=15_000)
        self.checked.append(state)
        for scheme in SCHEMES:
            self.page.emulate_media(color_scheme=scheme)
            for violation in self.page.evaluate(RUN_AXE, WCAG_TAGS):
                self.found.append({**violation, "state": f"{state}, {scheme}"})
            if shot:
                SHOTS.mkdir(parents=True, exist_ok=True)
                self.page.screenshot(path=SHOTS / f"{shot}-{scheme}.png", full_page=True)
        if shot:
            overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 1:
                self.too_wide[state] = overflow

    def report(self) -> str:
        lines = [f"{len(self.found)} WCAG 2 A/AA violation(s) in {len(self.checked)} pages and dialogs ({self.where}):"]
        for violation in self.found:
            lines.append(
                f"- {violation['state']}: {violation['id']} ({violation['impact']}): {violation['help']} "
                f"<{violation['helpUrl']}>"
            )
            for node in violation["nodes"]:
                summary = " ".join(node["summary"].split())
                lines.append(f"    {node['target']}  -- {summary}")
        return "\n".join(lines)


def sign_in(page, base_url: str) -> None:
    page.goto(base_url + "/login/")
    page.get_by_label("Username").fill("checker")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + "/")


@pytest.mark.parametrize("screen", SCREENS)
def test_every_page_meets_wcag_2_a_and_aa(browser, dashboard_server, dashboard_data, axe_script, screen):
    context = browser.new_context(viewport=SCREENS[screen])
    context.add_init_script(path=axe_script)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    axe = Checker(page, screen)
    base = dashboard_server
    try:
        page.goto(base + "/login/")
        axe.check("sign-in", shot=f"login-{screen}")
        page.get_by_label("Username").fill("checker")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        axe.check("sign-in refused")
        sign_in(page, base)

        pages = {  # what each is checked as: (its address, the name of its screenshot)
            "overview": ("/", "overview"),
            "queue page": ("/queues/orders/", "queue"),
            "message list": ("/queues/orders/messages/", "messages"),
            "archive": ("/queues/orders/messages/?source=archive", "archive"),
            "queue and archive": ("/queues/orders/messages/?source=both&q=n", "queue-and-archive"),
            "message": ("/queues/orders/messages/10/", "message"),
            "archived message": ("/queues/orders/messages/2/?source=archive", "archived-message"),
            "edit and resend": ("/queues/orders/messages/10/edit/", "edit"),
            "send": ("/queues/orders/send/", "send"),
            "purge": ("/queues/orders/purge/", "purge"),
            "drop": ("/queues/orders/drop/", "drop"),
            "new queue": ("/new-queue/", "new-queue"),
            "audit log": ("/audit/", "audit"),
            "audit entry": (f"/audit/{dashboard_data['audit_entry']}/", "audit-entry"),
            "alerts": ("/alerts/", "alerts"),
            "topics": ("/topics/?key=orders.eu.created", "topics"),
            "no such queue": ("/queues/no-such-queue/", "missing"),
        }
        for state, (path, shot) in pages.items():
            page.goto(base + path)
            axe.check(state, shot=f"{shot}-{screen}")

        page.goto(base + "/")
        page.get_by_role("button", name="Keyboard shortcuts (?)").click()
        expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
        axe.check("keyboard shortcuts dialog")

        page.goto(base + "/queues/orders/messages/")
        page.locator("tr[data-msg-id] .payload summary").first.click()  # an open row
        page.get_by_label("Select message 10").check()
        page.get_by_role("button", name="Move…").click()
        dialog = page.locator("#action-dialog")
        expect(dialog.locator("[data-plan]")).to_be_visible()
        axe.check("confirmation dialog (move)")
        dialog.get_by_role("button", name="Move to another queue (1)").click()
        expect(dialog.locator("[data-result-affected]")).to_have_text("1")
        axe.check("result dialog")

        # The confirmation as a page of its own: what a browser without script gets.
        page.goto(base + "/queues/orders/messages/")
        page.evaluate("""() => {
          const form = document.createElement("form");
          form.method = "post";
          form.action = document.querySelector("#action-form").getAttribute("action");
          const fields = {csrfmiddlewaretoken: document.querySelector("[name=csrfmiddlewaretoken]").value,
                          action: "delete", source: "live", scope: "selected", msg_id: "11"};
          for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement("input");
            Object.assign(input, {type: "hidden", name, value});
            form.append(input);
          }
          document.body.append(form);
          form.submit();
        }""")
        expect(page.locator("[data-plan]")).to_contain_text("Delete 1 message")
        axe.check("confirmation page")

        page.goto(base + "/queues/orders-dlq/messages/")
        page.get_by_role("button", name="Select every message matching").click()
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(dialog.locator("[data-plan-count]")).to_have_text("5")  # its 4 and the one moved there
        axe.check("confirmation dialog (all matching)")
        dialog.get_by_role("button", name="Delete (5)").click()
        expect(dialog).to_contain_text("started")
        axe.check("job started dialog")
        dialog.get_by_role("link", name="Follow job").click()
        expect(page.locator("[data-job-field=status]")).to_be_visible()
        axe.check("job page")
    finally:
        context.close()
    assert axe.found == [], axe.report()
    assert axe.too_wide == {}, f"pages wider than the {screen} screen (pixels): {axe.too_wide}"
    assert [error for error in errors if "404" not in error] == []  # the missing queue answers 404


FOCUS_STYLE = """() => {
  const element = document.activeElement;
  if (!element || element === document.body) return null;
  const style = getComputedStyle(element);
  const outlined = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2;
  const label = element.id ? `#${element.id}`
    : element.getAttribute("aria-label") || element.textContent.trim().slice(0, 40);
  return {what: `<${element.tagName.toLowerCase()}> ${label}`, shown: outlined || style.boxShadow !== "none"};
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_keyboard_focus_is_always_visible(browser, dashboard_server, dashboard_data, scheme):
    context = browser.new_context(viewport=SCREENS["laptop"], color_scheme=scheme)
    page = context.new_page()
    try:
        sign_in(page, dashboard_server)
        unmarked = {}
        for path in (
            "/",
            "/queues/orders/",
            "/queues/orders/messages/",
            "/queues/orders/messages/10/",
            "/queues/orders/send/",
            "/audit/",
        ):
            page.goto(dashboard_server + path)
            page.wait_for_load_state("networkidle")
            seen = set()
            for _ in range(80):
                page.keyboard.press("Tab")
                focused = page.evaluate(FOCUS_STYLE)
                if focused is None or focused["what"] in seen:
                    continue
                seen.add(focused["what"])
                if not focused["shown"]:
                    unmarked.setdefault(path, []).append(focused["what"])
            assert len(seen) > 5, f"Tab reached almost nothing on {path}: {seen}"
        assert unmarked == {}, f"controls whose keyboard focus shows no outline: {unmarked}"
    finally:
        context.close()


def test_each_chart_says_in_words_what_it_shows(page, dashboard_server, dashboard_data):
    sign_in(page, dashboard_server)
    page.goto(dashboard_server + "/queues/orders/")
    # 27 messages in the queue, 2 of them read once (tests' fixture): the read_ct chart, in words.
    expect(page.get_by_role("img", name="How many messages have been read how many times")).to_have_accessible_name(
        re.compile(r"^How many messages have been read how many times\. 0: 25, 1: 2(, [^:]+: 0)*\.$")
    )
    expect(page.locator("canvas[data-chart=age]")).to_have_attribute("aria-label", re.compile(r"\. .+: 27"))

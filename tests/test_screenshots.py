"""In Chromium: every page in light and dark, on a laptop and on a phone, saved to shots/pages/ to
look at; on a phone no page may be wider than the screen."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests.conftest import BASE_DIR, action_records, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]

SHOTS = BASE_DIR / "shots" / "pages"
SCREENS = {"laptop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def every_page(make_queue, pgmq_sql, django_user_model):
    make_queue("orders", messages=30)
    make_queue("orders-dlq", messages=2)
    pgmq_sql.execute("SELECT pgmq.archive('orders', ARRAY[1, 2, 3]::bigint[])")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 600, 2)")
    user = django_user_model.objects.create_user("looker", password="a-long-password-to-look", is_staff=True)
    user.groups.add(Group.objects.get(name="Admin"))
    from queues.models import AuditEntry
    AuditEntry.objects.create(username="looker", action="archive", queue_name="orders", target={"msg_ids": [1, 2, 3]},
                              requested=3, affected=3, outcome="done")
    entry = action_records().get()
    return {
        "overview": "/", "queue": "/queues/orders/", "messages": "/queues/orders/messages/",
        "archive": "/queues/orders/messages/?source=archive", "message": "/queues/orders/messages/10/",
        "send": "/queues/orders/send/", "purge": "/queues/orders/purge/", "new-queue": "/new-queue/",
        "audit": "/audit/", "audit-entry": f"/audit/{entry.pk}/", "missing": "/queues/no-such-queue/",
        "alerts": "/alerts/",
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("screen", SCREENS)
def test_every_page_in_both_themes_fits_the_screen(browser, dashboard_server, every_page, scheme, screen):
    context = browser.new_context(viewport=SCREENS[screen], color_scheme=scheme)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(dashboard_server + "/login/")
        page.screenshot(path=SHOTS / f"login-{screen}-{scheme}.png", full_page=True)
        page.get_by_label("Username").fill("looker")
        page.get_by_label("Password").fill("a-long-password-to-look")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(dashboard_server + "/")
        too_wide = {}
        for name, path in every_page.items():
            page.goto(dashboard_server + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=SHOTS / f"{name}-{screen}-{scheme}.png", full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 1:
                too_wide[name] = overflow
        assert too_wide == {}, f"pages wider than the {screen} screen (pixels): {too_wide}"
        assert [error for error in errors if "404" not in error] == []  # the missing queue answers 404
    finally:
        context.close()

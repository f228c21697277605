"""Issue 15's newcomer tasks about the audit log and the charts, done in Chromium as a new user
would on the demo's queues: purge as admin and be refused as viewer (the refusal in the log), read
the audit log, read the 1 h and 24 h charts."""

from __future__ import annotations

import re
from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from playwright.sync_api import expect

from dashboard.demo import DEMO_QUEUES, set_up_demo_queues
from tests.conftest import sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]

PASSWORD = "a-long-test-password-42"


@pytest.fixture(scope="module")
def demo(pgmq_database_url: str):
    """The demo's queues; dropped at the module's end."""
    set_up_demo_queues(pgmq_database_url)
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        yield connection
        for queue in DEMO_QUEUES:
            connection.execute("SELECT pgmq.drop_queue(%s)", [queue])


def make_user(django_user_model, username: str, role: str):
    user = django_user_model.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    return user


def test_purge_as_admin_be_refused_as_viewer_and_see_the_refusal_in_the_audit_log(
    page, browser, dashboard_server, demo, django_user_model
):
    demo.execute("SELECT pgmq.send_batch('notifications', array_fill('{\"to\": \"x\"}'::jsonb, ARRAY[4]))")
    make_user(django_user_model, "newcomer-admin", "Admin")
    make_user(django_user_model, "newcomer-viewer", "Viewer")

    viewer = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    sign_in(viewer, dashboard_server, "newcomer-viewer", PASSWORD)
    viewer.goto(dashboard_server + "/queues/notifications/")
    expect(viewer.get_by_role("link", name="Purge…")).to_have_count(0)
    answer = viewer.goto(dashboard_server + "/queues/notifications/purge/")  # a link someone shared
    assert answer.status == 403
    expect(viewer.get_by_role("heading", level=1)).to_have_text("Your role does not allow this")
    viewer.context.close()

    sign_in(page, dashboard_server, "newcomer-admin", PASSWORD)
    page.goto(dashboard_server + "/queues/notifications/")
    page.get_by_role("link", name="Purge…").click()
    page.get_by_role("textbox").fill("notifications")
    page.get_by_role("button", name="Purge").click()
    expect(page.get_by_text("Purged 4 messages from notifications.")).to_be_visible()

    page.goto(dashboard_server + "/audit/?queue=notifications")
    rows = page.locator("tr[data-audit-entry]")
    expect(rows).to_have_count(2)
    purged, refused = rows.nth(0), rows.nth(1)
    expect(purged.locator("[data-column=action]")).to_have_text("Purge")
    expect(purged.locator("[data-column=outcome]")).to_have_text("done")
    expect(refused.locator("[data-column=who]")).to_have_text("newcomer-viewer")
    expect(refused.locator("[data-column=action]")).to_have_text("Purge")
    expect(refused.locator("[data-column=outcome]")).to_have_text("refused")
    refused.get_by_role("link").first.click()
    expect(page.locator("[data-field=reason]")).to_contain_text("Admin role")


def test_read_the_audit_log(page, dashboard_server, demo, django_user_model):
    from queues import jobs, services
    from queues.filters import MessageFilter
    from queues.jsontext import RawJSON
    from queues.management.commands.run_jobs import run_pending_jobs
    from queues.models import BulkJob
    from queues.pgmq import LIVE, Queue
    from queues.vocabulary import MOVE

    demo.execute("SELECT pgmq.send_batch('orders', array_fill('{\"order\": 1}'::jsonb, ARRAY[3]))")
    first = demo.execute("SELECT min(msg_id) FROM pgmq.q_orders WHERE message ? 'order'").fetchone()[0]
    for _ in range(3):  # a consumer that fails on each of them, three times
        demo.execute("SELECT * FROM pgmq.read('orders', 0, 10)")
    admin = make_user(django_user_model, "newcomer-reader", "Admin")
    orders, dlq = Queue.objects.get(queue_name="orders"), Queue.objects.get(queue_name="orders-dlq")
    services.edit_and_resend(
        user=admin,
        queue=orders,
        msg_id=first,
        source=LIVE,
        destination=dlq,
        message=RawJSON('{"order": 2}'),
        headers=None,
    )
    job = jobs.create(
        user=admin,
        queue=orders,
        source=LIVE,
        action=MOVE,
        parameters={"destination": "orders-dlq", "include_in_flight": True},
        message_filter=MessageFilter(read_ct_min=3),
        expected=2,
    )
    run_pending_jobs()  # what manage.py run_jobs does

    sign_in(page, dashboard_server, "newcomer-reader", PASSWORD)
    page.get_by_role("link", name="Audit log").click()
    rows = page.locator("tr[data-audit-entry]")
    moved, resent = rows.nth(0), rows.nth(1)
    expect(resent.locator("[data-column=action]")).to_have_text("Edit and resend")
    expect(resent.locator("[data-column=destination]")).to_have_text("orders-dlq")
    expect(moved.locator("[data-column=action]")).to_have_text("Move")
    expect(moved.locator("[data-column=destination]")).to_have_text("orders-dlq")
    expect(moved.locator("[data-column=messages]")).to_contain_text("read_ct at least 3")

    resent.locator("[data-column=messages]").get_by_role("link", name=f"#{first}").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{first}")
    expect(page.locator("main")).to_contain_text("archived")
    page.go_back()

    page.locator("tr[data-audit-entry]").nth(1).locator("td").first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Edit and resend on orders")
    expect(page.locator("[data-field=destination]")).to_have_text("orders-dlq")
    expect(page.locator("[data-field=new-copies] a")).to_have_attribute(
        "href", re.compile(r"^/queues/orders-dlq/messages/\d+/$")
    )
    expect(page.locator("pre.json")).to_have_count(1)  # the message sent, and nothing dumped as JSON
    expect(page.locator("[data-field=message] pre.json")).to_contain_text('"order": 2')

    page.goto(dashboard_server + "/audit/")
    page.locator("tr[data-audit-entry]").nth(0).locator("td").first.get_by_role("link").click()
    expect(page.locator("[data-field=filter]")).to_contain_text("read_ct at least 3")
    expect(page.locator("pre.json")).to_have_count(0)
    page.get_by_role("link", name=f"Job {job.pk}").click()
    expect(page.locator("[data-job-field=affected]")).to_have_text("2")
    finished = BulkJob.objects.get(pk=job.pk)
    expect(page.locator("[data-job-field=started]")).to_have_text(finished.started_at.strftime("%Y-%m-%d %H:%M:%S"))
    expect(page.locator("[data-job-field=finished]")).to_have_text(finished.finished_at.strftime("%Y-%m-%d %H:%M:%S"))


def record_history(queue_name: str, *, now, hours: float, peak_at: timedelta, gap: tuple[timedelta, timedelta]):
    """What the sampler would have stored every 10 s for `hours`: a backlog about 30, one sample of
    330 `peak_at` ago, and nothing stored during `gap` (the sampler was down)."""
    from queues.models import QueueSample

    samples = []
    seconds = int(hours * 3600)
    for n, ago in enumerate(range(seconds, -1, -10)):
        before = timedelta(seconds=ago)
        if gap[1] < before < gap[0]:
            continue
        backlog = 330 if abs(before - peak_at) < timedelta(seconds=5) else 30 + n % 5
        samples.append(
            QueueSample(
                queue_name=queue_name,
                sampled_at=now - before,
                backlog=backlog,
                backlog_exact=True,
                visible=backlog,
                in_flight=0,
                delayed=0,
                sent_total=5 * n,
                removed_total=5 * n,
            )
        )
    QueueSample.objects.bulk_create(samples)


def test_read_the_1h_and_24h_charts(page, dashboard_server, demo, django_user_model):
    now = timezone.now()
    record_history(
        "webhooks",
        now=now,
        hours=3,
        peak_at=timedelta(hours=2, minutes=30),
        gap=(timedelta(hours=2), timedelta(hours=1, minutes=20)),
    )
    make_user(django_user_model, "newcomer-charts", "Viewer")
    sign_in(page, dashboard_server, "newcomer-charts", PASSWORD)
    page.get_by_role("link", name="webhooks", exact=True).click()

    page.get_by_role("link", name="1 hour").click()
    backlog = page.locator("canvas[data-chart=backlog]")
    expect(backlog).to_be_visible()
    expect(backlog).to_have_attribute("aria-label", re.compile(r"highest 34\b"))
    expect(page.locator("[data-chart-note]")).to_be_hidden()

    page.get_by_role("link", name="24 hours").click()
    expect(backlog).to_have_attribute("aria-label", re.compile(r"highest 330\b"))
    expect(page.locator("canvas[data-chart=rates]")).to_be_visible()
    note = page.locator("[data-chart-note]")
    expect(note).to_be_visible()
    expect(note).to_contain_text("Not enough history for 24 hours yet (sampling since")
    expect(note.locator("time")).to_have_text((now - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S"))
    drawn = page.evaluate(
        """() => {
          const chart = Chart.getChart(document.querySelector("canvas[data-chart=backlog]"));
          const highest = chart.data.datasets.find((dataset) => dataset.label === "Backlog, highest");
          const values = highest.data;
          const first = values.findIndex((value) => value !== null);
          const last = values.findLastIndex((value) => value !== null);
          return {
            gapInside: values.slice(first, last).some((value) => value === null),
            spanGaps: chart.data.datasets.some((dataset) => dataset.spanGaps),
            tension: Math.max(...chart.data.datasets.map((dataset) => dataset.tension ?? 0)),
            labels: new Set(chart.data.labels.map((label) => label.replace(/\\d/g, "9"))).size,
          };
        }"""
    )
    assert drawn == {"gapInside": True, "spanGaps": False, "tension": 0, "labels": 1}

"""Issue 15's newcomer tasks, in Chromium, on the demo's queues: find the queue in trouble and read
its cause from the overview; see alerts. The demo's state is made as its producers and consumers
make it, through pgmq's functions; its history as the sampler would have kept it."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.test import override_settings
from playwright.sync_api import expect

from dashboard.demo import DEMO_QUEUES, set_up_demo_queues
from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample
from queues.rules import read_alert_rules
from tests.conftest import BASE_DIR, sign_in, uses_databases

pytestmark = [pytest.mark.browser, uses_databases]

NOTIFICATIONS_WAITING = 76


@pytest.fixture(scope="module")
def demo(pgmq_database_url):
    """The demo's queues: orders consumed as fast as it is sent, notifications that nobody reads,
    and webhooks whose tenant-7 endpoint is down (its first delivery failed ten times)."""
    set_up_demo_queues(pgmq_database_url)
    with psycopg.connect(pgmq_database_url, autocommit=True) as sql:
        sql.execute("SELECT pgmq.send_batch('orders', array_fill('{\"type\": \"order\"}'::jsonb, ARRAY[20]))")
        sql.execute("SELECT pgmq.archive('orders', array_agg(msg_id)) FROM pgmq.read('orders', 30, 20)")
        sql.execute(
            "SELECT pgmq.send_batch('notifications', array_fill('{\"type\": \"email\"}'::jsonb, ARRAY[%s]))",
            [NOTIFICATIONS_WAITING],
        )
        for tenant, count in (("tenant-7", 4), ("tenant-3", 2)):
            sql.execute(
                "SELECT pgmq.send_batch('webhooks', array_fill('{}'::jsonb, ARRAY[%s]), "
                "array_fill(%s::jsonb, ARRAY[%s]))",
                [count, json.dumps({"x-pgmq-group": tenant}), count],
            )
        head = sql.execute(
            "SELECT min(msg_id) FROM pgmq.q_webhooks WHERE headers->>'x-pgmq-group' = 'tenant-7'"
        ).fetchone()[0]
        for _ in range(10):
            sql.execute("SELECT pgmq.set_vt('webhooks', %s::bigint, 0)", [head])
            sql.execute("SELECT * FROM pgmq.read_grouped('webhooks', 30, 1)")
        sql.execute("SELECT pgmq.set_vt('webhooks', %s::bigint, 0)", [head])
        sql.execute("SELECT pg_stat_force_next_flush()")
    yield {"webhooks_head": head}
    with psycopg.connect(pgmq_database_url, autocommit=True) as sql:
        for queue in DEMO_QUEUES:
            sql.execute("SELECT pgmq.drop_queue(%s)", [queue])


@pytest.fixture
def demo_history(demo, pgmq_sql):
    """Ten minutes of the sampler's history (its tables are emptied after each test), then a round
    of the sampler with the demo's alert rules, which fires what the demo fires."""
    now = pgmq_sql.execute("SELECT now()").fetchone()[0]
    for name in DEMO_QUEUES:
        removed, sent = pgmq_sql.execute(
            "SELECT pg_stat_get_tuples_deleted(format('pgmq.%%I', 'q_' || %s)::regclass), "
            "coalesce(pg_sequence_last_value(format('pgmq.%%I', 'q_' || %s || '_msg_id_seq')::regclass), 0)",
            [name, name],
        ).fetchone()
        QueueSample.objects.bulk_create(
            QueueSample(
                queue_name=name,
                sampled_at=now - timedelta(seconds=ago),
                backlog=0,
                backlog_exact=True,
                visible=0,
                in_flight=0,
                delayed=0,
                sent_total=sent,
                # The consumers of orders and webhooks removed messages until a moment ago.
                removed_total=removed if name == "notifications" else max(removed - ago // 60, 0),
            )
            for ago in range(600, 0, -60)
        )
    rules = read_alert_rules(
        str(BASE_DIR / "dashboard" / "demo_alerts.toml"), named_by="DASHBOARD_ALERT_RULES_FILE", environ={}
    )
    with override_settings(ALERT_RULES=rules):
        take_sample(count_poison_everywhere=True)
    assert settings.POISON_READ_COUNT <= 10


def test_find_the_queue_in_trouble_and_read_its_cause_from_the_overview(
    page, demo, demo_history, dashboard_server, operator, operator_password
):
    sign_in(page, dashboard_server, operator.username, operator_password)

    page.get_by_role("link", name="2 critical queues").click()
    rows = page.locator("#overview-live tbody tr[data-queue]")
    expect(rows).to_have_count(2)
    notifications = page.locator("tr[data-queue=notifications]")
    expect(notifications.locator(".health")).to_have_text("critical")
    expect(notifications.locator("[data-verdict] a").first).to_have_text(
        re.compile(rf"nobody has read for over 10 min; {NOTIFICATIONS_WAITING} waiting")
    )
    webhooks = page.locator("tr[data-queue=webhooks]")
    expect(webhooks.locator("[data-verdict] a").first).to_have_text(
        re.compile(rf"FIFO group tenant-7 stuck behind message {demo['webhooks_head']} \(read 10×\)")
    )

    webhooks.locator("[data-verdict] a").first.click()
    expect(page).to_have_url(re.compile(r"/queues/webhooks/#queue-diagnostics$"))
    expect(page.locator("[data-queue-verdict]")).to_contain_text("FIFO group tenant-7 stuck behind message")
    expect(page.locator("#queue-diagnostics .findings")).to_contain_text("FIFO group tenant-7 is stuck")


def test_see_alerts(page, demo, demo_history, dashboard_server, operator, operator_password):
    sign_in(page, dashboard_server, operator.username, operator_password)

    page.get_by_role("navigation").get_by_role("link", name="Alerts").first.click()

    firing = page.locator("#alerts-open tr[data-state=firing]", has=page.get_by_role("link", name="notifications"))
    expect(firing).to_have_count(1)
    expect(firing).to_contain_text("nobody reads")
    firing.get_by_role("link", name="notifications").click()
    expect(page.locator("[data-queue-verdict]")).to_contain_text("alert “nobody reads”")

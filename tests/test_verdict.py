"""A queue's verdict (queues/health.py) from every signal, against states built with pgmq's own
functions; the figures read first (oldest waiting, one rate unit per column); the ⓘ explanations."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from playwright.sync_api import expect

from queues.management.commands.sample_metrics import take_sample
from queues.models import AlertEpisode, QueueSample
from queues.rules import DEFAULT_HEALTH_RULE, Thresholds
from queues.selectors import alerts
from queues.watched import watched_name
from tests.conftest import sign_in, uses_databases
from tests.pages import overview_rows, parse, seconds

pytestmark = uses_databases


def removed_total(pgmq_sql, name: str) -> int:
    pgmq_sql.execute("SELECT pg_stat_force_next_flush()")
    return pgmq_sql.execute(
        "SELECT pg_stat_get_tuples_deleted(format('pgmq.%%I', 'q_' || %s)::regclass)", [name]
    ).fetchone()[0]


def record_samples(pgmq_sql, name: str, seconds_back: list[int], *, in_flight_at: int | None = None, removed=None):
    """The sampler's history of `name`, a sample every `seconds_back`, as the sampler writes it:
    nothing removed since (pg_stat's delete count as now, unless `removed`), and messages in flight
    only in the sample `in_flight_at` seconds back."""
    now = pgmq_sql.execute("SELECT now()").fetchone()[0]
    removed = removed_total(pgmq_sql, name) if removed is None else removed
    sent = pgmq_sql.execute(f'SELECT last_value FROM pgmq."q_{name}_msg_id_seq"').fetchone()[0]
    QueueSample.objects.bulk_create(
        QueueSample(
            queue_name=name,
            sampled_at=now - timedelta(seconds=ago),
            backlog=0,
            backlog_exact=True,
            visible=0,
            in_flight=1 if ago == in_flight_at else 0,
            delayed=0,
            sent_total=sent,
            removed_total=removed,
        )
        for ago in seconds_back
    )


def verdict_cell(page, name: str):
    return page.select_one(f"tr[data-queue={name}] [data-verdict]")


def test_nobody_reading_is_the_verdict_on_the_row_the_header_and_the_api(signed_in_client, make_queue, pgmq_sql):
    make_queue("unread", messages=76)
    # A consumer had a message in flight nine minutes ago; nothing since, and nothing removed.
    record_samples(pgmq_sql, "unread", [540, 480, 360, 240, 120, 60, 10], in_flight_at=540)
    make_queue("consumed", messages=5)
    record_samples(pgmq_sql, "consumed", [540, 300, 30], removed=removed_total(pgmq_sql, "consumed") - 3)

    overview = parse(signed_in_client.get("/"))

    rows = overview_rows(overview)
    assert rows["unread"]["health"] == "critical"
    cause = verdict_cell(overview, "unread").select_one("a")
    assert re.fullmatch(r"nobody has read for 9 min( \d+ s)?; 76 waiting", cause.get_text()), cause.get_text()
    assert cause["href"] == "/queues/unread/#queue-diagnostics"
    assert rows["consumed"]["health"] == "ok"
    assert verdict_cell(overview, "consumed").get_text(strip=True) == "every threshold met"
    assert overview.select_one("[data-health-problems]").get_text(" ", strip=True).startswith("1 critical queue")

    header = parse(signed_in_client.get("/queues/unread/")).select_one("[data-queue-verdict]")
    assert header.select_one(".health").get_text() == "critical"
    assert re.search(r"nobody has read for 9 min( \d+ s)?; 76 waiting", header.get_text(" ", strip=True))

    answer = signed_in_client.get("/api/v1/queues/unread/").json()
    assert answer["health"] == "critical"
    assert re.fullmatch(r"critical: nobody has read for 9 min( \d+ s)?; 76 waiting", answer["health_verdict"])
    assert answer["health_causes"][0]["panel"] == "queue-diagnostics"


def test_a_dead_letter_queue_nobody_reads_is_not_in_trouble_for_it(signed_in_client, make_queue, pgmq_sql):
    """Nobody consumes a dead-letter queue: messages wait there for a person. Its thresholds still
    count (a rule can say how many is too many); "nobody has read" is not a cause there."""
    make_queue("billing")
    for name in ("billing-dlq", "parked"):
        make_queue(name, messages=8)
        record_samples(pgmq_sql, name, [540, 480, 360, 240, 120, 60, 10], in_flight_at=540)
    with override_settings(DEAD_LETTER_QUEUES={"parked": "billing"}):
        rows = overview_rows(parse(signed_in_client.get("/")))
    assert rows["billing-dlq"]["health"] == "ok" and rows["parked"]["health"] == "ok"
    assert "nobody has read" not in rows["billing-dlq"]["health_reason"]


def test_a_fifo_group_stuck_behind_its_head_is_the_verdict(signed_in_client, make_queue, pgmq_sql):
    make_queue("webhooks")
    for group, count in (("tenant-7", 4), ("tenant-8", 2)):
        pgmq_sql.execute(
            "SELECT pgmq.send_batch('webhooks', array_fill('{}'::jsonb, ARRAY[%s]), array_fill(%s::jsonb, ARRAY[%s]))",
            [count, json.dumps({"x-pgmq-group": group}), count],
        )
    for _ in range(10):  # tenant-7's head keeps failing: its consumer reads it and never finishes
        pgmq_sql.execute("SELECT pgmq.set_vt('webhooks', 1::bigint, 0)")
        pgmq_sql.execute("SELECT * FROM pgmq.read_grouped('webhooks', 30, 1)")
    pgmq_sql.execute("SELECT pgmq.set_vt('webhooks', 1::bigint, 0)")
    head, read_ct = pgmq_sql.execute(
        "SELECT msg_id, read_ct FROM pgmq.q_webhooks WHERE msg_id = "
        "(SELECT min(msg_id) FROM pgmq.q_webhooks WHERE headers->>'x-pgmq-group' = 'tenant-7')"
    ).fetchone()

    overview = parse(signed_in_client.get("/"))

    assert overview_rows(overview)["webhooks"]["health"] == "critical"
    cause = verdict_cell(overview, "webhooks").select_one("a")
    assert cause.get_text() == f"FIFO group tenant-7 stuck behind message {head} (read {read_ct}×); 3 waiting behind it"
    assert cause["href"] == "/queues/webhooks/#queue-diagnostics"
    header = parse(signed_in_client.get("/queues/webhooks/")).select_one("[data-queue-verdict]")
    assert f"FIFO group tenant-7 stuck behind message {head}" in header.get_text()


@pytest.mark.parametrize("names_in_sql_up_to", [alerts.NAMES_IN_SQL_UP_TO, 0], ids=["named", "all-read"])
def test_a_threshold_and_a_firing_alert_each_name_their_cause(
    signed_in_client, make_queue, monkeypatch, names_in_sql_up_to
):
    """Firing alerts are read for a page's queues by name, and for more queues (the sampler's
    round) all of the database's are read and kept by name."""
    monkeypatch.setattr(alerts, "NAMES_IN_SQL_UP_TO", names_in_sql_up_to)
    make_queue("busy", messages=3)
    make_queue("alerted", messages=1)
    AlertEpisode.objects.create(
        database=watched_name(),
        rule="nobody-reads",
        queue_name="alerted",
        measure="consumer_silence",
        threshold=300,
        state=AlertEpisode.FIRING,
        value=540,
        pending_since=timezone.now(),
        fired_at=timezone.now(),
    )
    strict = replace(DEFAULT_HEALTH_RULE, queues="busy", backlog=Thresholds(warning=1, critical=3))
    with override_settings(HEALTH_RULES=[strict, DEFAULT_HEALTH_RULE]):
        overview = parse(signed_in_client.get("/"))

    assert verdict_cell(overview, "busy").select_one("a").get_text() == "backlog 3 (critical at 3)"
    alerted = verdict_cell(overview, "alerted").select_one("a")
    assert alerted.get_text() == "alert “nobody-reads” (consumers silent for 9 min) firing"
    assert alerted["href"] == "/queues/alerted/#queue-alerts"
    assert overview_rows(overview)["alerted"]["health"] == "warning"


def test_above_the_probe_bound_the_count_of_critical_queues_agrees_with_the_rows(
    signed_in_client, make_queue, pgmq_sql
):
    for name in ("quiet_a", "quiet_b"):
        make_queue(name, messages=4)
        record_samples(pgmq_sql, name, [600, 400, 200], in_flight_at=600)
    make_queue("fine", messages=0)
    take_sample(count_poison_everywhere=True)  # the round the overview counts the other queues by

    with override_settings(OVERVIEW_PROBE_ALL_UP_TO=1):
        overview = parse(signed_in_client.get("/"))
        critical = parse(signed_in_client.get("/?health=critical"))

    assert overview.select_one("[data-health-problems]").get_text(" ", strip=True).startswith("2 critical queues")
    rows = overview_rows(critical)
    assert sorted(rows) == ["quiet_a", "quiet_b"]
    for name in rows:
        assert verdict_cell(critical, name).select_one("a").get_text().startswith("nobody has read for 10 min")


EVERY_10_S_FOR_14_MIN = list(range(840, 0, -10))
SILENCE_HISTORIES = {
    # name: (the sampler's history: seconds back, and where messages were in flight), the level
    "silent_all_along": ((EVERY_10_S_FOR_14_MIN, None), "critical"),
    "read_8_min_ago": ((EVERY_10_S_FOR_14_MIN, 480), "critical"),
    "read_2_min_ago": ((EVERY_10_S_FOR_14_MIN, 120), "warning"),
    "sampled_for_2_min": ((list(range(120, 0, -10)), None), "warning"),
    "sampled_sparsely": (([600, 400, 200], 600), "critical"),
}


def test_the_sampler_stores_the_level_of_silence_the_rows_show(signed_in_client, make_queue, pgmq_sql):
    """The sampler reads silence back only past the longest critical threshold (five minutes by
    default) where that settles the level; however the history runs, the level it keeps is the
    one the overview's rows give from the whole lookback."""
    for name, ((seconds_back, in_flight_at), _) in SILENCE_HISTORIES.items():
        make_queue(name, messages=3)
        record_samples(pgmq_sql, name, seconds_back, in_flight_at=in_flight_at)
    take_sample(count_poison_everywhere=True)

    rows = overview_rows(parse(signed_in_client.get("/")))
    for name, (_, level) in SILENCE_HISTORIES.items():
        stored = QueueSample.objects.filter(queue_name=name).latest("sampled_at").health
        assert (name, rows[name]["health"], stored) == (name, level, level)


def test_oldest_is_the_oldest_waiting_message_with_the_oldest_of_any_state_behind_it(
    signed_in_client, make_queue, pgmq_sql
):
    make_queue("orders", messages=3)
    # The first message was sent 18 min ago and is in flight; the others wait, sent a minute ago.
    pgmq_sql.execute("UPDATE pgmq.q_orders SET enqueued_at = now() - interval '18 min' WHERE msg_id = 1")
    pgmq_sql.execute("UPDATE pgmq.q_orders SET enqueued_at = now() - interval '1 min' WHERE msg_id > 1")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 600, 1)")
    waiting, any_state = pgmq_sql.execute(
        "SELECT extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE vt <= now())), "
        "extract(epoch FROM now() - min(enqueued_at)) FROM pgmq.q_orders"
    ).fetchone()

    overview = parse(signed_in_client.get("/"))
    cell = overview.select_one("tr[data-queue=orders] [data-column=oldest]")
    assert abs(seconds(cell.select_one("[data-oldest=waiting]").get_text()) - float(waiting)) <= 2
    assert cell.select_one("[data-oldest=any]").get_text() == "any state: 18 min"
    assert round(float(any_state) / 60) == 18

    queue_page = parse(signed_in_client.get("/queues/orders/"))
    assert abs(seconds(queue_page.select_one("[data-stat=oldest]").get_text()) - float(waiting)) <= 2
    assert queue_page.select_one("[data-stat=oldest-any]").get_text() == "any state: 18 min"


def test_each_column_of_rates_has_one_unit(signed_in_client, make_queue, pgmq_sql):
    for name, sent_since in (("fast", 500), ("slow", 5)):
        make_queue(name, messages=600)
        now = pgmq_sql.execute("SELECT now()").fetchone()[0]
        QueueSample.objects.create(
            queue_name=name,
            sampled_at=now - timedelta(seconds=50),
            backlog=0,
            backlog_exact=True,
            visible=0,
            in_flight=0,
            delayed=0,
            sent_total=600 - sent_since,
            removed_total=removed_total(pgmq_sql, name),
        )

    overview = parse(signed_in_client.get("/"))

    cells = [cell.get_text() for cell in overview.select("[data-column^=enqueue-rate]")]
    assert len(cells) == 4 and all(cell.endswith("/s") for cell in cells), cells  # 10/s and 0.1/s
    assert all(cell.get_text().endswith("/s") for cell in overview.select("[data-total^=enqueue-rate]"))
    slow = overview.select_one("tr[data-queue=slow] [data-column=enqueue-rate-1m]").get_text()
    assert 0.09 <= float(slow.removesuffix("/s")) <= 0.11


@pytest.mark.browser
def test_an_explanation_opens_on_a_click_and_on_keyboard_focus(
    page, dashboard_server, operator, operator_password, make_queue
):
    make_queue("explained", messages=1)
    sign_in(page, dashboard_server, operator.username, operator_password)
    button = page.get_by_role("button", name="What “Oldest waiting” means")
    explanation = page.locator("#explain-column-oldest")
    expect(explanation).to_be_hidden()

    button.click()
    expect(explanation).to_be_visible()
    expect(explanation).to_contain_text("oldest message a consumer could take now")
    expect(button).to_have_attribute("aria-expanded", "true")
    button.click()
    expect(explanation).to_be_hidden()
    expect(button).to_have_attribute("aria-expanded", "false")

    page.get_by_role("link", name="Delayed", exact=True).focus()
    delayed = page.locator("#explain-column-delayed")
    page.keyboard.press("Tab")  # to the column's ⓘ, by keyboard
    expect(delayed).to_be_visible()
    expect(page.get_by_role("button", name="What “Delayed” means")).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(delayed).to_be_hidden()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    expect(delayed).to_be_visible()
    page.keyboard.press("Tab")  # focus leaves: it closes
    expect(delayed).to_be_hidden()

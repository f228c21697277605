"""Alerting: rules evaluated by the sampler on what it just measured, notifications to a webhook
and by e-mail on firing and on resolved only, failures retried, and the history on the pages."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bs4 import BeautifulSoup
from django.core import mail
from django.test import override_settings
from django.urls import reverse

from dashboard import env
from queues.management.commands.sample_metrics import take_sample
from queues.models import AlertEpisode, AlertNotification, QueueSample
from queues.rules import AlertRule
from tests.conftest import AWKWARD_NAMES, client_with_role, uses_databases, wait_for

pytestmark = uses_databases
RULES_VARIABLE = "DASHBOARD_ALERT_RULES_FILE"


class WebhookReceiver:
    """A local HTTP receiver: records every JSON body posted; `mode` makes it answer 500 or hang."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.mode = "ok"
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.mode == "hang":
                    time.sleep(3)
                if receiver.mode == "ok":
                    receiver.bodies.append(body)
                self.send_response(200 if receiver.mode == "ok" else 500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # The secret part of the URL, which must never show on a page.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/s3cr3t-token"

    def statuses(self, queue: str) -> list[str]:
        return [body["status"] for body in self.bodies if body["queue"] == queue]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def alert_rules(tmp_path, monkeypatch):
    """Parse a rules file as settings.py does and put the rules in effect for the test."""
    overrides = []

    def configure(toml: str) -> tuple[AlertRule, ...]:
        path = tmp_path / "alerts.toml"
        path.write_text(toml)
        monkeypatch.setenv(RULES_VARIABLE, str(path))
        rules = env.alert_rules(RULES_VARIABLE)
        override = override_settings(ALERT_RULES=rules)
        override.enable()
        overrides.append(override)
        return rules

    yield configure
    for override in reversed(overrides):
        override.disable()


def oldest_age_s(pgmq_sql, queue: str) -> float:
    return pgmq_sql.execute("SELECT extract(epoch FROM now() - min(enqueued_at)) FROM pgmq.q_" + queue).fetchone()[0]


def test_it_fires_once_to_a_webhook_and_resolves_when_the_queue_drains(
    make_queue, pgmq_sql, receiver, alert_rules, monkeypatch
):
    monkeypatch.setenv("ALERT_TEST_WEBHOOK", receiver.url)
    alert_rules("""
        [[rules]]
        name = "orders stuck"
        queues = "orders_*"
        measure = "oldest_age"
        threshold = "1s"
        webhooks = ["$ALERT_TEST_WEBHOOK"]
    """)
    make_queue("orders_eu", messages=2)
    make_queue("other_queue", messages=2)
    take_sample(count_poison_everywhere=True)
    assert receiver.bodies == []  # younger than the threshold

    wait_for(lambda: oldest_age_s(pgmq_sql, "orders_eu") > 1.2, timeout=10, what="the oldest message to pass 1 s")
    take_sample(count_poison_everywhere=True)
    assert receiver.statuses("orders_eu") == ["firing"]
    firing = receiver.bodies[0]
    assert firing["rule"] == "orders stuck" and firing["database"] == "main" and firing["threshold"] == 1.0
    assert firing["value"] > 1 and firing["started_at"]
    assert "[FIRING] orders stuck" in firing["text"] and "orders_eu" in firing["text"]
    assert receiver.statuses("other_queue") == []  # the pattern does not match it

    for _ in range(3):
        take_sample(count_poison_everywhere=True)
    assert receiver.statuses("orders_eu") == ["firing"], "no repeat while it keeps firing"

    pgmq_sql.execute("SELECT pgmq.archive('orders_eu', ARRAY[1]::bigint[])")
    pgmq_sql.execute("SELECT pgmq.delete('orders_eu', ARRAY[2]::bigint[])")
    take_sample(count_poison_everywhere=True)
    assert receiver.statuses("orders_eu") == ["firing", "resolved"]
    resolved = receiver.bodies[-1]
    assert resolved["started_at"] == firing["started_at"] and resolved["resolved_at"]
    take_sample(count_poison_everywhere=True)
    assert receiver.statuses("orders_eu") == ["firing", "resolved"]
    episode = AlertEpisode.objects.get(queue_name="orders_eu")
    assert episode.state == AlertEpisode.RESOLVED and episode.database == "main"


def test_it_mails_through_djangos_mail_settings(make_queue, pgmq_sql, alert_rules):
    alert_rules("""
        [[rules]]
        name = "too many visible"
        queues = "*"
        measure = "visible"
        threshold = 3
        emails = ["oncall@example.com"]
    """)
    make_queue("mailed", messages=5)
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        take_sample(count_poison_everywhere=True)
        take_sample(count_poison_everywhere=True)
        assert [message.subject for message in mail.outbox] == [
            "[FIRING] too many visible: queue 'mailed' in main: visible messages 5 (threshold 3)"
        ]
        assert mail.outbox[0].to == ["oncall@example.com"]
        pgmq_sql.execute("SELECT pgmq.purge_queue('mailed')")
        take_sample(count_poison_everywhere=True)
        assert [message.subject.split("]")[0] for message in mail.outbox] == ["[FIRING", "[RESOLVED"]
        assert "Queue: mailed" in mail.outbox[1].body


def test_a_failing_receiver_does_not_stop_sampling_and_is_tried_again(make_queue, receiver, alert_rules):
    alert_rules(f"""
        [[rules]]
        name = "any visible"
        queues = "flaky"
        measure = "visible"
        threshold = 1
        webhooks = ["{receiver.url}"]
    """)
    make_queue("flaky", messages=1)
    receiver.mode = "fail"
    take_sample(count_poison_everywhere=True)
    receiver.mode = "hang"
    with override_settings(ALERT_NOTIFY_TIMEOUT_SECONDS=1):
        started = time.monotonic()
        take_sample(count_poison_everywhere=True)
        assert time.monotonic() - started < 2.5, "a hanging receiver holds a round for the timeout only"
    assert QueueSample.objects.filter(queue_name="flaky").count() == 2
    notification = AlertNotification.objects.get()
    assert notification.delivered_at is None and notification.attempts == 2
    assert "timed out" in notification.last_error and "s3cr3t" not in notification.last_error

    receiver.mode = "ok"
    take_sample(count_poison_everywhere=True)
    notification.refresh_from_db()
    assert notification.delivered_at is not None and notification.attempts == 3
    assert receiver.statuses("flaky") == ["firing"]
    take_sample(count_poison_everywhere=True)
    assert receiver.statuses("flaky") == ["firing"]


def test_a_for_duration_holds_the_alert_pending_first(make_queue, pgmq_sql, receiver, alert_rules):
    alert_rules(f"""
        [[rules]]
        name = "held"
        queues = "slow_*"
        measure = "visible"
        threshold = 1
        for = "1s"
        webhooks = ["{receiver.url}"]
    """)
    make_queue("slow_blip", messages=1)
    make_queue("slow_steady", messages=1)
    take_sample(count_poison_everywhere=True)
    assert set(AlertEpisode.objects.values_list("state", flat=True)) == {AlertEpisode.PENDING}
    assert receiver.bodies == []

    pgmq_sql.execute("SELECT pgmq.delete('slow_blip', 1::bigint)")
    pending_since = AlertEpisode.objects.get(queue_name="slow_steady").pending_since
    wait_for(
        lambda: pgmq_sql.execute("SELECT now() - %s > interval '1.1 s'", [pending_since]).fetchone()[0],
        timeout=10,
        what="the rule's `for` to pass",
    )
    take_sample(count_poison_everywhere=True)
    assert receiver.statuses("slow_steady") == ["firing"]
    assert receiver.statuses("slow_blip") == [], "cleared before its `for`: never fired"
    assert not AlertEpisode.objects.filter(queue_name="slow_blip").exists()


def test_the_alerts_page_and_the_queue_panel_show_the_history_escaped(
    make_queue, pgmq_sql, receiver, alert_rules, client, django_user_model
):
    alert_rules(f"""
        [[rules]]
        name = "anything waiting"
        queues = "*"
        measure = "visible"
        threshold = 1
        webhooks = ["{receiver.url}"]
    """)
    names = ['say "hi"', "a/b", "50%", "ünïcode-Äpfel"]
    assert set(names) <= set(AWKWARD_NAMES)
    for name in names:
        make_queue(name, messages=1)
    take_sample(count_poison_everywhere=True)
    pgmq_sql.execute("SELECT pgmq.delete(%s, 1::bigint)", ['say "hi"'])
    take_sample(count_poison_everywhere=True)
    viewer = client_with_role(client, django_user_model, "Viewer")

    response = viewer.get(reverse("alerts"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'say "hi"' not in html and "say &quot;hi&quot;" in html
    assert "s3cr3t" not in html and "http://127.0.0.1:" in html  # the webhook's host only
    page = BeautifulSoup(html, "html.parser")
    firing = {row.find("a").get_text(): row["data-state"] for row in page.select("#alerts-open tr[data-alert]")}
    assert firing == {"a/b": "firing", "50%": "firing", "ünïcode-Äpfel": "firing"}
    assert page.select_one("[data-firing-alerts]").get_text(" ", strip=True) == "3 firing"  # in every page's header
    history = {
        row.find("a").get_text(): row["data-state"]
        for row in page.select("#alerts-history-title ~ table tr[data-alert]")
    }
    assert history['say "hi"'] == "resolved"
    links = {a.get_text(): a["href"] for a in page.select("#alerts-open a")}
    assert viewer.get(links["a/b"]).status_code == 200

    panel = BeautifulSoup(viewer.get(reverse("queue-alerts", args=['say "hi"'])).content, "html.parser")
    assert "Nothing firing on this queue" in panel.get_text()
    assert [item["data-state"] for item in panel.select("li[data-alert]")] == ["resolved"]
    panel = BeautifulSoup(viewer.get(reverse("queue-alerts", args=["50%"])).content, "html.parser")
    assert "firing anything waiting" in " ".join(panel.get_text().split())
    assert "Recently resolved" not in panel.get_text()  # nothing resolved on this queue: no empty heading
    queue_page = viewer.get(reverse("queue", args=["50%"])).content.decode()
    assert reverse("queue-alerts", args=["50%"]) in queue_page


def test_it_alerts_on_backlog_growth_and_consumer_silence_from_the_samples(make_queue, pgmq_sql, alert_rules):
    rules = alert_rules("""
        [[rules]]
        name = "growing"
        queues = "grow"
        measure = "backlog_growth"
        window = "1s"
        threshold = 3

        [[rules]]
        name = "silent"
        queues = "grow"
        measure = "consumer_silence"
        threshold = "1s"
    """)
    assert [rule.window_s for rule in rules] == [1.0, 600.0]
    make_queue("grow", messages=1)
    take_sample(count_poison_everywhere=True)
    first = QueueSample.objects.get(queue_name="grow").sampled_at
    pgmq_sql.execute("SELECT pgmq.send_batch('grow', array_fill('{}'::jsonb, ARRAY[4]))")
    wait_for(
        lambda: pgmq_sql.execute("SELECT now() - %s > interval '1.1 s'", [first]).fetchone()[0],
        timeout=10,
        what="a window to pass",
    )
    take_sample(count_poison_everywhere=True)
    states = dict(AlertEpisode.objects.values_list("rule", "state"))
    assert states == {"growing": "firing", "silent": "firing"}
    assert AlertEpisode.objects.get(rule="growing").value == 4

    pgmq_sql.execute("SELECT * FROM pgmq.read('grow', 30, 1)")  # a consumer takes one
    take_sample(count_poison_everywhere=True)
    assert AlertEpisode.objects.get(rule="silent").state == AlertEpisode.RESOLVED


TWO_RULES_NAMED_A = """
[[rules]]
name = "a"
queues = "*"
measure = "visible"
threshold = 1

[[rules]]
name = "a"
queues = "*"
measure = "poison"
threshold = 1
"""


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "age"\nthreshold = 1',
            "rule 'a': measure must be one of oldest_age, visible, backlog_growth, poison, consumer_silence, "
            "drain_eta; got 'age'",
        ),
        ('[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "oldest_age"', "rule 'a' needs threshold = ..."),
        (
            '[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "oldest_age"\nthreshold = "soon"',
            "rule 'a' threshold must be a duration like 30s, 5m, 2h or 1d; got 'soon'",
        ),
        (
            '[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "visible"\nthreshold = 1\nwebhooks = ["$NO_SUCH_HOOK"]',
            "rule 'a': webhook $NO_SUCH_HOOK names an environment variable that is not set",
        ),
        (
            '[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "visible"\nthreshold = 1\nwebhooks = ["ftp://x/secret"]',
            "rule 'a': a webhook must be an http(s):// URL or \"$VARIABLE\"; got 'ftp://x/…'",
        ),
        (
            '[[rules]]\nname = "a"\nqueues = "*"\nmeasure = "visible"\nthreshold = 1\ncolour = "red"',
            "rule 'a' has unknown keys ['colour']",
        ),
        (TWO_RULES_NAMED_A, "two rules are named 'a'"),
        ("[[rules]\n", "cannot read"),
    ],
)
def test_a_bad_rules_file_stops_with_one_line_naming_the_rule(tmp_path, monkeypatch, toml, expected):
    path = tmp_path / "alerts.toml"
    path.write_text(toml)
    monkeypatch.setenv(RULES_VARIABLE, str(path))
    with pytest.raises(SystemExit) as stopped:
        env.alert_rules(RULES_VARIABLE)
    message = str(stopped.value)
    assert message.startswith(f"configuration error: {RULES_VARIABLE}") and expected in message
    assert "\n" not in message and "secret" not in message


@override_settings(BASE_URL="https://pgmq.example.com", WATCHED_DATABASES={"main": "pgmq", "staging": "pgmq-staging"})
def test_a_notifications_link_opens_the_queue_in_its_own_database():
    from queues.alerting import webhook_body

    links = {
        database: webhook_body(
            AlertEpisode(database=database, rule="r", queue_name="orders", measure="visible", threshold=1, value=2),
            "firing",
        )["url"]
        for database in ("main", "staging")
    }
    assert links == {
        "main": "https://pgmq.example.com/queues/orders/",
        "staging": "https://pgmq.example.com/db/staging/queues/orders/",
    }

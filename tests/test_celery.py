"""Celery tasks sent through kombu's pgmq transport, shown and handled as Celery tasks: a real
Celery worker (tests/celery_app.py) on the test database runs what the dashboard retries and resends."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from queues.lineage import ORIGIN_KEY
from tests import celery_app
from tests.celery_app import QUEUE
from tests.conftest import BASE_DIR, SCREENSHOTS, sign_in, uses_databases, wait_for
from tests.pages import parse

pytestmark = uses_databases
MESSAGES = f"/queues/{QUEUE}/messages/"


@pytest.fixture
def celery(pgmq_database_url: str, make_queue, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """The test app configured on the test database, its queue made (and dropped after); yields the
    file the tasks append their runs to."""
    runs = tmp_path / "runs.jsonl"
    runs.touch()
    monkeypatch.setenv("CELERY_TEST_RUNS", str(runs))
    make_queue(QUEUE)
    celery_app.configure(pgmq_database_url)
    yield runs


def send(task, args=(), kwargs=None, **options):
    """task.apply_async on a connection of its own, closed after: a pool of them would keep the test
    database open, which then cannot be dropped."""
    with celery_app.app.connection_for_write() as connection:
        return task.apply_async(args, kwargs, connection=connection, **options)


@contextlib.contextmanager
def celery_worker(database_url: str, runs: Path) -> Iterator[subprocess.Popen]:
    """`celery worker --pool=solo` on the test database, as a process of its own; always stopped."""
    log_path = runs.with_name(f"worker-{len(list(runs.parent.glob('worker-*')))}.log")
    with psycopg.connect(database_url, autocommit=True) as connection:
        queues_before = {row[0] for row in connection.execute("SELECT queue_name FROM pgmq.meta")}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker", "--pool=solo", "--loglevel=INFO"]
            + ["--without-heartbeat", "--without-mingle", "--without-gossip", "-Q", QUEUE],
            cwd=BASE_DIR,
            env={**os.environ, "CELERY_TEST_DATABASE_URL": database_url, "CELERY_TEST_RUNS": str(runs)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log_path = log_path
    try:
        wait_for(
            lambda: process.poll() is not None or " ready." in log_path.read_text(),
            timeout=60,
            what=lambda: f"the Celery worker to be ready:\n{log_path.read_text()}",
        )
        assert process.poll() is None, f"the Celery worker exited at start:\n{log_path.read_text()}"
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        with psycopg.connect(database_url, autocommit=True) as connection:
            made = {row[0] for row in connection.execute("SELECT queue_name FROM pgmq.meta")} - queues_before
            for name in made:
                connection.execute("SELECT pgmq.drop_queue(%s)", [name])
        assert not made, f"the worker made queues of its own: {made}"


def runs_of(runs: Path) -> list[dict]:
    return [json.loads(line) for line in runs.read_text().splitlines()]


def ran(runs: Path, **expected) -> bool:
    return any(all(run.get(key) == value for key, value in expected.items()) for run in runs_of(runs))


def msg_id_of(pgmq_sql, task_id: str, *, table: str = f"q_{QUEUE}") -> int:
    return pgmq_sql.execute(
        f"SELECT msg_id FROM pgmq.{table} WHERE message->'headers'->>'id' = %s ORDER BY msg_id DESC", [task_id]
    ).fetchone()[0]


def celery_facts(page) -> dict[str, str]:
    """What the "Celery task" section of a message page says, fact by fact."""
    section = page.select_one("#celery-task")
    assert section is not None, "the message page has no Celery task section"
    return {fact["data-celery"]: fact.get_text(" ", strip=True) for fact in section.select("[data-celery]")}


def listed(client, query: str) -> list[dict[str, str]]:
    page = parse(client.get(MESSAGES + "?" + query))
    return [
        {
            "msg_id": row["data-msg-id"],
            "task": (row.select_one("[data-celery-task]") or page.new_tag("x")).get_text(strip=True),
        }
        for row in page.select("#messages-live tbody tr[data-msg-id]")
    ]


def test_a_celery_message_shows_its_task_and_a_list_filters_by_task_name(signed_in_client, celery, pgmq_sql):
    added = send(celery_app.add, (2,), {"y": 3})
    divided = send(celery_app.divide, (1, 0), countdown=600)
    pickled = send(celery_app.add, (4, 5), serializer="pickle")

    page = parse(signed_in_client.get(f"{MESSAGES}{msg_id_of(pgmq_sql, added.id)}/"))
    facts = celery_facts(page)
    assert facts["task"] == "tests.celery_app.add"
    assert facts["id"] == added.id
    assert json.loads(facts["args"]) == [2]
    assert json.loads(facts["kwargs"]) == {"y": 3}
    assert facts["retries"] == "0"
    assert facts["eta"] == "none: runs when a worker takes it"
    root = page.select_one("#celery-task [data-celery=root] a")
    assert root.get_text(strip=True) == added.id
    assert f"task_id={added.id}" in root["href"]

    sent_eta = pgmq_sql.execute(
        "SELECT message->'headers'->>'eta' FROM pgmq.q_celery_tasks WHERE message->'headers'->>'id' = %s",
        [divided.id],
    ).fetchone()[0]
    eta = celery_facts(parse(signed_in_client.get(f"{MESSAGES}{msg_id_of(pgmq_sql, divided.id)}/")))["eta"]
    assert eta.startswith(sent_eta[:19].replace("T", " ")), (eta, sent_eta)

    facts = celery_facts(parse(signed_in_client.get(f"{MESSAGES}{msg_id_of(pgmq_sql, pickled.id)}/")))
    assert facts["task"] == "tests.celery_app.add"
    assert "args" not in facts and "kwargs" not in facts
    assert facts["not-decoded"].startswith("pickle: not decoded")
    assert "(4, 5)" in facts["argsrepr"]

    assert listed(signed_in_client, "task=tests.celery_app.divide") == [
        {"msg_id": str(msg_id_of(pgmq_sql, divided.id)), "task": "tests.celery_app.divide"}
    ]
    assert [row["msg_id"] for row in listed(signed_in_client, f"task_id={added.id}")] == [
        str(msg_id_of(pgmq_sql, added.id))
    ]
    assert {row["task"] for row in listed(signed_in_client, "task=tests.celery_app.*")} == {
        "tests.celery_app.add",
        "tests.celery_app.divide",
    }


def test_a_task_redacted_for_the_user_stays_redacted(signed_in_client, celery, pgmq_sql, settings):
    # kombu writes the task's headers to pgmq's headers too: argsrepr is in both.
    settings.REDACT_PATHS = [("message", ("body",)), ("message", ("headers", "argsrepr")), ("headers", ("argsrepr",))]
    sent = send(celery_app.add, ("card 4111111111111111",), {"y": "x"})
    response = signed_in_client.get(f"{MESSAGES}{msg_id_of(pgmq_sql, sent.id)}/")
    assert "4111111111111111" not in response.content.decode()
    facts = celery_facts(parse(response))
    assert facts["task"] == "tests.celery_app.add"
    assert facts["not-decoded"] == "redacted for you (DASHBOARD_REDACT)"
    assert "args" not in facts and facts["argsrepr"] == "[redacted]"


def envelope(headers: object, body: object, **rest) -> str:
    return json.dumps({"body": body, "headers": headers, "content-type": "application/json", **rest})


@pytest.mark.parametrize(
    "message",
    [
        envelope({"task": "t", "id": "1"}, "not base64 at all!", properties={"body_encoding": "base64"}),
        envelope({"task": "t", "id": "1"}, base64.b64encode(b"[1, 2").decode(), properties={"body_encoding": "base64"}),
        envelope(
            {"task": "t", "id": "1"}, base64.b64encode(b'{"a": 1}').decode(), properties={"body_encoding": "base64"}
        ),
        envelope(
            {"task": "t", "id": "1"}, base64.b64encode(b"\xff\xfe").decode(), properties={"body_encoding": "base64"}
        ),
        envelope(
            {"task": "t", "id": "1"}, base64.b64encode(b"[" * 100_000).decode(), properties={"body_encoding": "base64"}
        ),
        envelope({"task": "t", "id": "1", "retries": "many", "eta": "soon"}, "W10=", properties=[]),
        envelope({"task": ["t"], "id": {"x": 1}}, 42),
        envelope("headers", "body"),
        json.dumps([1, 2, 3]),
        json.dumps("just text"),
    ],
)
def test_a_malformed_envelope_never_breaks_the_page(operator_client, make_queue, pgmq_sql, message):
    make_queue("odd")
    msg_id = pgmq_sql.execute("SELECT pgmq.send('odd', %s::jsonb)", [message]).fetchone()[0]
    assert operator_client.get(f"/queues/odd/messages/{msg_id}/").status_code == 200
    assert operator_client.get("/queues/odd/messages/?task=t").status_code == 200
    assert operator_client.get(f"/queues/odd/messages/{msg_id}/edit/").status_code == 200
    edited = operator_client.post(
        f"/queues/odd/messages/{msg_id}/edit/", {"source": "live", "celery": "1", "args": "[]", "kwargs": "{}"}
    )
    assert edited.status_code == 400
    assert "cannot edit this message as a Celery task" in parse(edited).get_text()
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_odd").fetchone()[0] == 1  # nothing sent, nothing archived


def test_a_real_worker_runs_what_the_dashboard_retries_and_resends(
    operator_client, celery, pgmq_database_url, pgmq_sql
):
    runs = celery
    # Sent before any worker runs: a task that will fail, as it is, and one that retries.
    failing = send(celery_app.divide, (6, 0))
    flaky = send(celery_app.flaky, ("slow",), {"countdown": 3600})

    # The failing task, resent from the dashboard with its arguments corrected.
    failing_msg = msg_id_of(pgmq_sql, failing.id)
    edit = parse(operator_client.get(f"{MESSAGES}{failing_msg}/edit/?source=live"))
    assert json.loads(edit.select_one("textarea[name=args]").get_text()) == [6, 0]
    assert json.loads(edit.select_one("textarea[name=kwargs]").get_text()) == {}
    response = operator_client.post(
        f"{MESSAGES}{failing_msg}/edit/",
        {
            "source": "live",
            "celery": "1",
            "args": "[6, 3]",
            "kwargs": "{}",
            "headers": edit.select_one("textarea[name=headers]").get_text(),  # as the page gave them
            "destination": QUEUE,
        },
    )
    assert response.status_code == 302, parse(response).get_text(" ", strip=True)[:2000]
    resent_msg = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
    facts = celery_facts(parse(operator_client.get(response["Location"])))
    assert (facts["task"], facts["id"], json.loads(facts["args"])) == ("tests.celery_app.divide", failing.id, [6, 3])
    assert facts["argsrepr"] == "(6, 3)"
    original = celery_facts(parse(operator_client.get(f"{MESSAGES}{failing_msg}/?source=archive")))
    assert json.loads(original["args"]) == [6, 0]
    # Nothing else changed but what says the arguments, and the delivery tag (each publish has its own);
    # pgmq's headers also say where the copy came from (the dashboard's origin key).
    rest = "{0} #- '{{body}}' #- '{{headers,argsrepr}}' #- '{{headers,kwargsrepr}}' #- '{{properties,delivery_tag}}'"
    same_envelope, same_headers, headers_say_new_args, new_tag, copied_from = pgmq_sql.execute(
        f"SELECT {rest.format('q.message')} = {rest.format('a.message')},"
        " q.headers - 'argsrepr' - 'kwargsrepr' - %s = a.headers - 'argsrepr' - 'kwargsrepr',"
        " q.headers - %s = q.message->'headers',"
        " q.message->'properties'->>'delivery_tag' <> a.message->'properties'->>'delivery_tag',"
        " (q.headers->%s->-1->>'msg_id')::bigint"
        " FROM pgmq.q_celery_tasks q, pgmq.a_celery_tasks a WHERE q.msg_id = %s AND a.msg_id = %s",
        [ORIGIN_KEY, ORIGIN_KEY, ORIGIN_KEY, resent_msg, failing_msg],
    ).fetchone()
    assert same_envelope and same_headers, "the resent copy differs from the original beyond its arguments"
    assert headers_say_new_args and new_tag
    assert copied_from == failing_msg
    # One more, left as it is, to fail.
    send(celery_app.divide, (1, 0))

    with celery_worker(pgmq_database_url, runs) as worker:
        wait_for(lambda: ran(runs, task="divide", args=[6, 3], result=2.0), timeout=60, what="the resent copy to run")
        wait_for(lambda: ran(runs, task="divide", failed="ZeroDivisionError"), timeout=60, what="the failing task")
        assert not ran(runs, task="divide", args=[6, 0]), "the original of the resent task ran too"
        wait_for(lambda: ran(runs, task="flaky", retries=0), timeout=60, what="the flaky task's first run")
        assert (
            pgmq_sql.execute("SELECT count(*) FROM pgmq.q_celery_tasks WHERE msg_id = %s", [resent_msg]).fetchone()[0]
            == 0
        ), "the worker did not acknowledge the resent copy"

        # The retry Celery sent itself: its retries, its eta, and links to the task it retries.
        retry_msg = wait_for(
            lambda: pgmq_sql.execute(
                "SELECT msg_id FROM pgmq.q_celery_tasks WHERE message->'headers'->>'id' = %s"
                " AND message->'headers'->>'retries' = '1'",
                [flaky.id],
            ).fetchone(),
            timeout=30,
            what="Celery's retry of the flaky task",
        )[0]
        page = parse(operator_client.get(f"{MESSAGES}{retry_msg}/"))
        facts = celery_facts(page)
        assert facts["retries"] == "1"
        assert facts["eta"] != "none: runs when a worker takes it"
        parent = page.select_one("#celery-task [data-celery=parent] a")
        assert parent.get_text(strip=True) == flaky.id
        assert [row["msg_id"] for row in listed(operator_client, parent["href"].split("?", 1)[1])] == [str(retry_msg)]

        # The worker dies while running a task acknowledged only when done: its message stays in
        # flight, for the visibility timeout's 30 minutes.
        held = send(celery_app.hold, ("crash",))
        wait_for(lambda: ran(runs, task="hold", started=True), timeout=60, what="the held task to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    held_msg = msg_id_of(pgmq_sql, held.id)
    page = parse(operator_client.get(f"{MESSAGES}{held_msg}/"))
    assert page.select_one("h1 .state").get_text() == "in flight"
    assert celery_facts(page)["task"] == "tests.celery_app.hold"

    runs.with_name("release").touch()
    with celery_worker(pgmq_database_url, runs):
        response = operator_client.post(
            f"/queues/{QUEUE}/act/",
            {
                "action": "retry",
                "source": "live",
                "scope": "selected",
                "msg_id": [str(held_msg)],
                "include_in_flight": "1",
                "confirmed": "1",
            },
            headers={"HX-Request": "true"},
        )
        assert response.status_code == 200, parse(response).get_text(" ", strip=True)
        wait_for(
            lambda: ran(runs, task="hold", label="crash", finished=True),
            timeout=60,
            what="the new worker to run the task the dashboard retried",
        )
        wait_for(
            lambda: not pgmq_sql.execute("SELECT 1 FROM pgmq.q_celery_tasks WHERE msg_id = %s", [held_msg]).fetchone(),
            timeout=30,
            what="the worker to acknowledge the retried task",
        )


@pytest.mark.browser
def test_a_celery_message_page_in_the_browser(page, dashboard_server, django_user_model, celery, pgmq_sql):
    user = django_user_model.objects.create_user("celery-operator", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Operator"))
    sent = send(celery_app.flaky, ("looked at",), {"countdown": 30}, countdown=120)
    sign_in(page, dashboard_server, user.username, "a-long-test-password-42")
    page.goto(f"{dashboard_server}{MESSAGES}{msg_id_of(pgmq_sql, sent.id)}/")
    section = page.locator("#celery-task")
    expect(section.locator("[data-celery=task]")).to_have_text("tests.celery_app.flaky")
    expect(section.locator("[data-celery=kwargs]")).to_have_text('{"countdown": 30}')
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "celery-message.png", full_page=True)

    page.get_by_role("link", name="Edit and resend").click()
    expect(page.get_by_label("args (a JSON array)")).to_have_value('["looked at"]')
    expect(page.get_by_label("kwargs (a JSON object)")).to_have_value('{"countdown": 30}')
    page.screenshot(path=SCREENSHOTS / "celery-edit.png", full_page=True)

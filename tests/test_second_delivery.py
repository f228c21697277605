"""A second delivery of the same work only when asked: an edited copy of a message a consumer is
working on, and another copy of an archived message requeued before (even four at once)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import Group

from queues.tokens import issue_token
from tests.conftest import uses_databases
from tests.pages import parse

pytestmark = uses_databases


@pytest.fixture
def operator_token(django_user_model) -> dict[str, str]:
    user = django_user_model.objects.create_user("api-op", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Operator"))
    return {"Authorization": f"Token {issue_token(user)[1]}"}


def count(pgmq_sql, table: str) -> int:
    return pgmq_sql.execute(f'SELECT count(*) FROM pgmq."{table}"').fetchone()[0]


def test_the_api_refuses_to_resend_a_message_in_flight_unless_asked(client, operator_token, make_queue, pgmq_sql):
    make_queue("busy", messages=1)
    pgmq_sql.execute("SELECT * FROM pgmq.read('busy', 600, 1)")  # a consumer has it
    resend = {"message": {"fixed": True}}
    answer = client.post(
        "/api/v1/queues/busy/messages/1/resend/", resend, content_type="application/json", headers=operator_token
    )
    assert answer.status_code == 409 and "in flight" in answer.json()["detail"]
    assert (count(pgmq_sql, "q_busy"), count(pgmq_sql, "a_busy")) == (1, 0)
    answer = client.post(
        "/api/v1/queues/busy/messages/1/resend/",
        {**resend, "include_in_flight": True},
        content_type="application/json",
        headers=operator_token,
    )
    assert answer.status_code == 201
    assert (count(pgmq_sql, "q_busy"), count(pgmq_sql, "a_busy")) == (1, 1)


def test_the_edit_page_sends_a_copy_of_a_message_in_flight_only_with_the_box_ticked(
    operator_client, make_queue, pgmq_sql
):
    make_queue("busy-page", messages=1)
    pgmq_sql.execute("SELECT * FROM pgmq.read('busy-page', 600, 1)")
    page = parse(operator_client.get("/queues/busy-page/messages/1/edit/"))
    assert page.select_one("[data-in-flight] input[name=include_in_flight]")
    form = {
        "message": '{"fixed": true}',
        "source": "live",
        "destination": "busy-page",
        "request_token": page.select_one("input[name=request_token]")["value"],
    }
    refused = operator_client.post("/queues/busy-page/messages/1/edit/", form)
    assert refused.status_code == 409 and "in flight" in parse(refused).select_one("[data-in-flight]").get_text()
    assert count(pgmq_sql, "a_busy-page") == 0
    sent = operator_client.post("/queues/busy-page/messages/1/edit/", {**form, "include_in_flight": "1"})
    assert sent.status_code == 302 and count(pgmq_sql, "a_busy-page") == 1


def requeue(client, headers: dict, queue: str, msg_id: int, **parameters) -> dict:
    answer = client.post(
        f"/api/v1/queues/{queue}/actions/",
        {
            "action": "requeue",
            "source": "archive",
            "msg_ids": [msg_id],
            "parameters": {"destination": queue, **parameters},
        },
        content_type="application/json",
        headers=headers,
    )
    assert answer.status_code == 200, answer.content
    return answer.json()["result"]


def test_a_message_requeued_before_is_said_so_and_copied_again_only_when_asked(
    client, operator_token, make_queue, pgmq_sql, operator_client
):
    make_queue("once", messages=1)
    pgmq_sql.execute("SELECT pgmq.archive('once', 1::bigint)")
    first = requeue(client, operator_token, "once", 1)
    copy = first["new_ids"]["1"]
    second = requeue(client, operator_token, "once", 1)
    assert second["new_ids"] == {} and second["skipped"] == [1]
    assert second["requeued_before"]["1"]["msg_id"] == copy and second["requeued_before"]["1"]["queue"] == "once"
    assert count(pgmq_sql, "q_once") == 1

    dialog = parse(
        operator_client.post(
            "/queues/once/act/",
            {"action": "requeue", "source": "archive", "scope": "selected", "msg_id": "1"},
            headers={"HX-Request": "true"},
        )
    )
    warning = dialog.select_one("[data-requeued-before]").get_text(" ", strip=True)
    assert f"1 as once #{copy}" in warning and dialog.select_one("input[name=again]")

    third = requeue(client, operator_token, "once", 1, again=True)
    assert list(third["new_ids"]) == ["1"] and count(pgmq_sql, "q_once") == 2


def test_four_requeues_of_one_message_at_once_make_one_copy(dashboard_server, operator_token, make_queue, pgmq_sql):
    make_queue("raced", messages=1)
    pgmq_sql.execute("SELECT pgmq.archive('raced', 1::bigint)")

    def one_requeue(_: int) -> dict:
        request = urllib.request.Request(
            f"{dashboard_server}/api/v1/queues/raced/actions/",
            method="POST",
            data=json.dumps(
                {"action": "requeue", "source": "archive", "msg_ids": [1], "parameters": {"destination": "raced"}}
            ).encode(),
            headers={**operator_token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())["result"]
        except urllib.error.HTTPError as error:
            raise AssertionError(error.read()) from error

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one_requeue, range(4)))
    assert count(pgmq_sql, "q_raced") == 1
    assert sorted(len(result["new_ids"]) for result in results) == [0, 0, 0, 1]

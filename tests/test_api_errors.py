"""Every answer under /api/ is JSON, the errors too: a program reading it never gets a page of HTML.
And a queue name with a slash works in the API's path as the README writes it (a%2Fb)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from django.contrib.auth.models import Group

from queues.tokens import issue_token
from tests.conftest import uses_databases

pytestmark = uses_databases


def json_error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["detail"], body
    return body


@pytest.fixture
def operator_token(django_user_model) -> dict[str, str]:
    user = django_user_model.objects.create_user("api-op", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Operator"))
    return {"Authorization": f"Token {issue_token(user)[1]}"}


def test_an_unknown_path_is_a_json_404(client, operator_token):
    for path in ("/api/v1/nowhere/", "/api/v1/queues/x/messages/1/nowhere/", "/api/v2/", "/api/"):
        json_error(client.get(path, headers=operator_token), 404)


def test_a_database_without_a_role_is_a_json_403(client, django_user_model):
    outsider = django_user_model.objects.create_user("elsewhere", password="a-long-test-password-42")
    outsider.groups.add(Group.objects.create(name="staging: Operator"))  # a role in another database only
    headers = {"Authorization": f"Token {issue_token(outsider)[1]}"}
    body = json_error(client.get("/api/v1/queues/", headers=headers), 403)
    assert "role" in body["detail"]
    client.force_login(outsider)  # the browser's session: the check before the API's own
    assert "role" in json_error(client.get("/api/v1/queues/"), 403)["detail"]


def test_a_body_over_the_size_limit_is_a_json_400_and_nothing_is_sent(
    client, operator_token, make_queue, pgmq_sql, settings
):
    make_queue("limited")
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"message": {"blob": "x" * 20_000}})
    answer = json_error(
        client.post("/api/v1/queues/limited/send/", body, content_type="application/json", headers=operator_token), 400
    )
    assert "too large" in answer["detail"]
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_limited").fetchone()[0] == 0


def test_a_move_to_a_dropped_queue_is_a_json_404_naming_it(client, operator_token, make_queue, pgmq_sql):
    make_queue("source-q", messages=2)
    make_queue("gone-q")
    pgmq_sql.execute("SELECT pgmq.drop_queue('gone-q')")
    body = json_error(
        client.post(
            "/api/v1/queues/source-q/actions/",
            {"action": "move", "msg_ids": [1], "parameters": {"destination": "gone-q"}},
            content_type="application/json",
            headers=operator_token,
        ),
        404,
    )
    assert "gone-q" in body["detail"]
    assert pgmq_sql.execute('SELECT count(*) FROM pgmq."q_source-q"').fetchone()[0] == 2


def test_a_server_error_under_the_api_is_json(client, operator_token, monkeypatch):
    from queues.api import views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views.overview, "overview", broken)
    client.raise_request_exception = False
    json_error(client.get("/api/v1/queues/", headers=operator_token), 500)


def test_a_queue_name_with_a_slash_works_in_the_api_path_as_the_readme_writes_it(
    dashboard_server, make_queue, pgmq_sql, operator_token
):
    make_queue("a/b", messages=2)
    make_queue("50%", messages=1)
    for encoded, name, count in (("a%2Fb", "a/b", 2), ("a%2fb", "a/b", 2), ("50%25", "50%", 1)):
        request = urllib.request.Request(f"{dashboard_server}/api/v1/queues/{encoded}/", headers=operator_token)
        with urllib.request.urlopen(request, timeout=10) as response:
            found = json.loads(response.read())
        assert (found["name"], found["backlog"]["value"]) == (name, count), encoded
    # The pages' own links (escaped once more) keep working.
    request = urllib.request.Request(f"{dashboard_server}/api/v1/queues/a%252Fb/messages/", headers=operator_token)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert len(json.loads(response.read())["results"]) == 2

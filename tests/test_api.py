"""The JSON API (/api/v1/): tokens and permissions as on the pages, actions in the audit log, the
same figures as the overview, keyset paging, exact numbers, redaction, and schemathesis fuzzing
the live OpenAPI document in-process."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
import schemathesis
from django.contrib.auth.models import Group
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from queues.management.commands.run_jobs import run_pending_jobs
from queues.models import AuditEntry, BulkJob
from queues.selectors import overview
from queues.tokens import issue_token
from tests.conftest import action_records, drop_queues, uses_databases

pytestmark = uses_databases

EXACT = '{"price": 1.10, "big": 12345678901234567890.123456789, "tiny": 0.12345678901234567890, "n": 1e400}'


def token_for(django_user_model, role: str) -> str:
    user = django_user_model.objects.create_user(f"api-{role.lower()}", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name=role))
    return issue_token(user)[1]


@pytest.fixture
def as_role(client, django_user_model):
    """A function giving request headers with a fresh token for a user in the role."""
    return lambda role: {"Authorization": f"Token {token_for(django_user_model, role)}"}


def live_ids(pgmq_sql, queue: str) -> list[int]:
    return [row[0] for row in pgmq_sql.execute(f'SELECT msg_id FROM pgmq."q_{queue}" ORDER BY msg_id').fetchall()]


def test_it_requires_a_token(client, make_queue, pgmq_sql):
    make_queue("guarded", messages=1)
    for url in [
        "/api/v1/queues/",
        "/api/v1/queues/guarded/",
        "/api/v1/queues/guarded/history/",
        "/api/v1/queues/guarded/messages/",
        "/api/v1/queues/guarded/messages/1/",
    ]:
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json()["detail"]
    response = client.post(
        "/api/v1/queues/guarded/actions/", {"action": "delete", "msg_ids": [1]}, content_type="application/json"
    )
    assert response.status_code == 401
    assert client.get("/api/v1/queues/", headers={"Authorization": "Token not-a-token"}).status_code == 401
    assert (
        client.post("/api/v1/queues/guarded/send/", {"message": {}}, content_type="application/json").status_code == 401
    )
    assert live_ids(pgmq_sql, "guarded") == [1] and action_records().count() == 0


def test_the_schema_is_served_without_signing_in(client):
    response = client.get("/api/v1/schema/", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert response.status_code == 200
    document = json.loads(response.content)
    parameters = {p["name"] for p in document["paths"]["/api/v1/queues/{queue_name}/messages/"]["get"]["parameters"]}
    assert {
        "source",
        "state",
        "read_ct_min",
        "message",
        "headers",
        "q",
        "sort",
        "after",
        "before",
        "from",
        "last",
    } <= parameters


def test_a_viewer_reads_but_may_not_act_or_send(client, as_role, make_queue, pgmq_sql):
    make_queue("watched", messages=3)
    viewer = as_role("Viewer")
    assert client.get("/api/v1/queues/watched/messages/", headers=viewer).status_code == 200
    response = client.post(
        "/api/v1/queues/watched/actions/",
        {"action": "delete", "msg_ids": [1, 2]},
        content_type="application/json",
        headers=viewer,
    )
    assert response.status_code == 403 and "Operator" in response.json()["detail"]
    response = client.post(
        "/api/v1/queues/watched/send/", {"message": {"a": 1}}, content_type="application/json", headers=viewer
    )
    assert response.status_code == 403
    assert live_ids(pgmq_sql, "watched") == [1, 2, 3]
    assert sorted(action_records().values_list("action", "outcome")) == [("delete", "refused"), ("send", "refused")]


def test_an_operators_action_is_done_and_recorded_with_its_name(client, as_role, make_queue, pgmq_sql):
    make_queue("acted", messages=4)
    response = client.post(
        "/api/v1/queues/acted/actions/",
        {"action": "archive", "msg_ids": [1, 3]},
        content_type="application/json",
        headers=as_role("Operator"),
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["result"] == {
        "affected": [1, 3],
        "already_gone": [],
        "skipped": [],
        "new_ids": {},
        "requeued_before": {},
    }
    assert live_ids(pgmq_sql, "acted") == [2, 4]
    entry = AuditEntry.objects.get(pk=body["audit_id"])
    assert (entry.username, entry.action, entry.queue_name, entry.affected, entry.outcome) == (
        "api-operator",
        "archive",
        "acted",
        2,
        "done",
    )
    assert entry.target == {"msg_ids": [1, 3]}


def test_actions_are_validated_as_on_the_pages(client, as_role, make_queue, pgmq_sql):
    make_queue("checked", messages=2)
    operator = as_role("Operator")

    def act(body: dict):
        return client.post("/api/v1/queues/checked/actions/", body, content_type="application/json", headers=operator)

    response = act({"action": "requeue", "source": "live", "msg_ids": [1]})
    assert response.status_code == 400 and "not an action on the live" in response.json()["detail"]
    response = act({"action": "move", "msg_ids": [1], "parameters": {"destination": "checked"}})
    assert response.status_code == 400 and "destination" in response.json()["errors"]
    response = act({"action": "move", "msg_ids": [1], "parameters": {"destination": "nowhere"}})
    assert response.status_code == 404 and "nowhere" in response.json()["detail"]  # an unknown queue, as in the path
    response = act({"action": "delete", "msg_ids": ["x"]})
    assert response.status_code == 400 and "msg_ids.0" in response.json()["errors"]
    assert act({"action": "delete", "msg_ids": [1]}).status_code == 200
    token = "2b0e7b8e-5a5c-4a7e-9c55-3f1f8a4f0a01"
    assert act({"action": "delete", "msg_ids": [2], "request_token": token}).status_code == 200
    again = act({"action": "delete", "msg_ids": [2], "request_token": token})
    assert again.status_code == 409
    assert live_ids(pgmq_sql, "checked") == []
    assert (
        client.post(
            "/api/v1/queues/no-such-queue/actions/",
            {"action": "delete", "msg_ids": [1]},
            content_type="application/json",
            headers=operator,
        ).status_code
        == 404
    )


def test_the_figures_are_the_overviews_and_match_plain_sql(client, as_role, make_queue, pgmq_sql):
    make_queue("figures-a", messages=7)
    make_queue("figures-b", messages=2)
    pgmq_sql.execute("SELECT pgmq.archive('figures-a', ARRAY[1, 2]::bigint[])")
    pgmq_sql.execute("SELECT * FROM pgmq.read('figures-a', 600, 2)")  # 3 and 4 in flight
    viewer = as_role("Viewer")
    listed = client.get("/api/v1/queues/", {"q": "figures"}, headers=viewer).json()
    seen = overview.overview(search="figures")
    assert (
        [row["name"] for row in listed["results"]]
        == [row.stats.name for row in seen.page]
        == ["figures-a", "figures-b"]
    )
    for row, expected in zip(listed["results"], seen.page, strict=True):
        assert row["backlog"] == {"value": expected.stats.backlog.value, "exact": expected.stats.backlog.exact}
        assert row["in_flight"] == expected.stats.in_flight and row["sent_total"] == expected.stats.sent_total
    a = client.get("/api/v1/queues/figures-a/", headers=viewer).json()
    sql = pgmq_sql.execute("""
        SELECT (SELECT count(*) FROM pgmq."q_figures-a"),
               (SELECT count(*) FROM pgmq."q_figures-a" WHERE vt > now() AND read_ct > 0),
               (SELECT count(*) FROM pgmq."a_figures-a")""").fetchone()
    assert (a["backlog"]["value"], a["in_flight"], a["archived"]["value"], a["sent_total"]) == (*sql, 7)
    assert a["visible"]["value"] == sql[0] - sql[1]
    assert listed["totals"]["backlog"]["value"] == 5 + 2
    assert client.get("/api/v1/queues/nope/", headers=viewer).status_code == 404


def test_keyset_pages_cross_the_live_table_and_the_archive(client, as_role, make_queue, pgmq_sql):
    make_queue("paged", messages=120)
    pgmq_sql.execute("SELECT pgmq.archive('paged', array_agg(i)) FROM generate_series(40, 79) i")
    viewer = as_role("Viewer")
    url, seen = "/api/v1/queues/paged/messages/?source=both&sort=msg_id", []
    pages = []
    while url:
        page = client.get(url, headers=viewer).json()
        pages.append(page)
        seen += [(row["msg_id"], row["source"]) for row in page["results"]]
        url = page["next"]
    assert [msg_id for msg_id, _ in seen] == list(range(1, 121))
    assert {source for msg_id, source in seen if 40 <= msg_id <= 79} == {"archive"}
    assert [len(page["results"]) for page in pages] == [50, 50, 20]
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    back = client.get(pages[2]["previous"], headers=viewer).json()
    assert [row["msg_id"] for row in back["results"]] == list(range(51, 101))
    by_cursor = client.get(
        "/api/v1/queues/paged/messages/",
        {"source": "both", "sort": "msg_id", "after": pages[0]["next_cursor"]},
        headers=viewer,
    )
    assert [row["msg_id"] for row in by_cursor.json()["results"]] == list(range(51, 101))
    # A filter from the browser's query parameters, and a bad one answered 400 saying why.
    filtered = client.get("/api/v1/queues/paged/messages/", {"message": '{"n": 7}'}, headers=viewer).json()
    assert [row["msg_id"] for row in filtered["results"]] == [7]
    bad = client.get("/api/v1/queues/paged/messages/", {"read_ct_min": "-1", "after": "x"}, headers=viewer)
    assert bad.status_code == 400 and {"read_ct_min", "after"} <= set(bad.json()["errors"])


def test_numbers_are_exactly_as_stored_both_ways(client, as_role, make_queue, pgmq_sql):
    make_queue("exact")
    pgmq_sql.execute("SELECT pgmq.send('exact', %s::jsonb)", [EXACT.replace(', "n": 1e400', "")])
    operator = as_role("Operator")
    sent = client.post(
        "/api/v1/queues/exact/send/",
        f'{{"message": {EXACT.replace("1e400", "1.50")}, "headers": {{"h": 2.000}}, "delay_s": 0}}',
        content_type="application/json",
        headers=operator,
    )
    assert sent.status_code == 201, sent.content
    stored = pgmq_sql.execute(
        "SELECT message::text, headers::text FROM pgmq.q_exact WHERE msg_id = %s", [sent.json()["msg_id"]]
    ).fetchone()
    assert '"price": 1.10' in stored[0] and "12345678901234567890.123456789" in stored[0] and '"n": 1.50' in stored[0]
    assert stored[1] == '{"h": 2.000}'
    listed = client.get("/api/v1/queues/exact/messages/", {"sort": "msg_id"}, headers=operator)
    detail = client.get("/api/v1/queues/exact/messages/1/", headers=operator)
    for response in (listed, detail):
        text = response.content.decode()
        assert '"price": 1.10' in text and "12345678901234567890.123456789" in text
        assert "0.12345678901234567890" in text
    parsed = json.loads(listed.content, parse_float=Decimal)["results"][0]["message"]
    assert parsed["big"] == Decimal("12345678901234567890.123456789")
    assert json.loads(detail.content)["message"]["price"] == 1.1
    entry = AuditEntry.objects.get(action="send")
    assert entry.username == "api-operator"


def test_values_are_redacted_for_those_without_the_permission(client, as_role, settings, make_queue, pgmq_sql):
    settings.REDACT_PATHS = [("message", ("customer", "email")), ("headers", ("authorization",))]
    make_queue("private-api")
    pgmq_sql.execute(
        "SELECT pgmq.send('private-api', %s::jsonb, %s::jsonb)",
        ['{"customer": {"email": "bob@example.com"}, "total": 1.10}', '{"authorization": "Bearer x"}'],
    )
    viewer = as_role("Viewer")
    for url in ["/api/v1/queues/private-api/messages/", "/api/v1/queues/private-api/messages/1/"]:
        text = client.get(url, headers=viewer).content.decode()
        assert "bob@example.com" not in text and "Bearer x" not in text
        assert text.count("[redacted]") == 2 and '"total": 1.10' in text
    found = client.get("/api/v1/queues/private-api/messages/", {"q": "bob@example.com"}, headers=viewer).json()
    assert found["results"] == [] and found["redacted"] is True
    admin = client.get("/api/v1/queues/private-api/messages/1/", headers=as_role("Admin")).json()
    assert admin["message"]["customer"]["email"] == "[redacted]"  # Admin lacks view_unredacted too


def test_session_sign_in_works_and_needs_csrf_to_act(make_queue, django_user_model):
    from django.test import Client

    make_queue("browser", messages=1)
    user = django_user_model.objects.create_user("browser-user", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Operator"))
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/v1/queues/browser/").status_code == 200
    refused = browser.post(
        "/api/v1/queues/browser/actions/", {"action": "delete", "msg_ids": [1]}, content_type="application/json"
    )
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]


def archived_ids(pgmq_sql, queue: str) -> list[int]:
    return [row[0] for row in pgmq_sql.execute(f'SELECT msg_id FROM pgmq."a_{queue}" ORDER BY msg_id').fetchall()]


def queue_exists(pgmq_sql, name: str) -> bool:
    return pgmq_sql.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [name]).fetchone() is not None


@pytest.fixture
def typed_queue(make_queue, pgmq_sql) -> str:
    """30 messages: every third an order_created, the rest order_paid."""
    make_queue("typed-api")
    pgmq_sql.execute(
        "SELECT pgmq.send_batch('typed-api', array_agg(jsonb_build_object('n', i, 'type', "
        "CASE WHEN i % 3 = 0 THEN 'order_created' ELSE 'order_paid' END))) FROM generate_series(1, 30) i"
    )
    return "typed-api"


def test_a_bulk_action_by_filter_runs_as_a_job_and_is_recorded(client, as_role, typed_queue, pgmq_sql):
    operator = as_role("Operator")
    asked = {"action": "archive", "filter": {"message": {"type": "order_created"}}}
    plan = client.post("/api/v1/queues/typed-api/jobs/plan/", asked, content_type="application/json", headers=operator)
    assert plan.status_code == 200, plan.content
    assert plan.json()["count"] == 10
    assert plan.json()["filter_in_words"] == 'message contains {"type": "order_created"}'
    assert len(live_ids(pgmq_sql, "typed-api")) == 30 and not BulkJob.objects.exists()  # a plan changes nothing

    token = "5d1e2c3b-4a59-4c6d-8e7f-90a1b2c3d4e5"
    started = client.post(
        "/api/v1/queues/typed-api/jobs/",
        {**asked, "request_token": token},
        content_type="application/json",
        headers=operator,
    )
    assert started.status_code == 201, started.content
    job = started.json()
    assert (job["status"], job["expected"], job["username"]) == ("pending", 10, "api-operator")
    again = client.post(
        "/api/v1/queues/typed-api/jobs/",
        {**asked, "request_token": token},
        content_type="application/json",
        headers=operator,
    )
    assert again.status_code == 409 and again.json()["job_id"] == job["id"]

    with override_settings(BULK_BATCH_SIZE=4):
        assert run_pending_jobs() == 1  # what `manage.py run_jobs` does: one job, not two
    finished = client.get(f"/api/v1/jobs/{job['id']}/", headers=as_role("Viewer")).json()
    assert (finished["status"], finished["affected"], finished["batches"]) == ("done", 10, 3)
    assert archived_ids(pgmq_sql, "typed-api") == list(range(3, 31, 3))
    entry = AuditEntry.objects.get(pk=finished["audit_id"])
    assert (entry.username, entry.action, entry.queue_name, entry.affected, entry.outcome) == (
        "api-operator",
        "archive",
        "typed-api",
        10,
        "done",
    )
    assert entry.target["filter_in_words"] == 'message contains {"type": "order_created"}'


def test_a_bulk_job_can_be_cancelled_before_it_runs(client, as_role, typed_queue, pgmq_sql):
    operator = as_role("Operator")
    job = client.post(
        "/api/v1/queues/typed-api/jobs/",
        {"action": "delete", "filter": {}},
        content_type="application/json",
        headers=operator,
    ).json()
    assert job["expected"] == 30
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel/", headers=operator)
    assert cancelled.status_code == 200, cancelled.content
    assert (cancelled.json()["status"], cancelled.json()["cancelled_by"]) == ("cancelled", "api-operator")
    assert run_pending_jobs() == 0
    assert len(live_ids(pgmq_sql, "typed-api")) == 30
    assert AuditEntry.objects.get(pk=cancelled.json()["audit_id"]).outcome == "cancelled"
    assert client.get("/api/v1/jobs/999999/", headers=operator).status_code == 404


def test_a_bulk_action_says_what_is_wrong_with_it(client, as_role, typed_queue):
    operator = as_role("Operator")

    def start(body: dict):
        return client.post("/api/v1/queues/typed-api/jobs/", body, content_type="application/json", headers=operator)

    # A misspelt or missing filter would otherwise act on every message.
    response = start({"action": "delete", "filter": {"stat": "visible"}})
    assert response.status_code == 400 and "stat" in response.json()["detail"]
    response = start({"action": "delete"})
    assert response.status_code == 400 and "filter" in response.json()["errors"]
    response = start({"action": "delete", "filter": {"state": "gone", "read_ct_min": 1.5}})
    assert response.status_code == 400 and "state" in response.json()["detail"]
    assert "read_ct_min" in response.json()["detail"]
    # JSON's false, true and lists where a filter takes one value: refused, never read as "no condition".
    for wrong in (
        {"state": False},
        {"read_ct_min": False},
        {"enqueued_after": False},
        {"read_ct_min": True},
        {"state": ["visible"]},
        {"read_ct_min": [1, 5]},
    ):
        response = start({"action": "delete", "filter": wrong})
        assert response.status_code == 400 and next(iter(wrong)) in response.json()["detail"], (wrong, response.json())
    response = start({"action": "move", "filter": {}})
    assert response.status_code == 400 and "destination" in response.json()["errors"]
    response = start({"action": "move", "filter": {}, "parameters": {"destination": "nowhere"}})
    assert response.status_code == 400 and "nowhere" in response.json()["detail"]
    response = start({"action": "delay", "filter": {}, "parameters": {"until": "2001-01-01T00:00:00Z"}})
    assert response.status_code == 400 and "until" in response.json()["errors"]
    response = client.post("/api/v1/queues/typed-api/jobs/", "[1]", content_type="application/json", headers=operator)
    assert response.status_code == 400
    assert not BulkJob.objects.exists() and action_records().count() == 0


def test_a_viewer_may_not_start_cancel_purge_drop_create_or_resend(client, as_role, typed_queue, pgmq_sql):
    viewer, operator = as_role("Viewer"), as_role("Operator")
    job = client.post(
        "/api/v1/queues/typed-api/jobs/",
        {"action": "delete", "filter": {}},
        content_type="application/json",
        headers=operator,
    ).json()
    for headers, url, body in [
        (viewer, "/api/v1/queues/typed-api/jobs/plan/", {"action": "delete", "filter": {}}),
        (viewer, "/api/v1/queues/typed-api/jobs/", {"action": "delete", "filter": {}}),
        (viewer, f"/api/v1/jobs/{job['id']}/cancel/", {}),
        (viewer, "/api/v1/queues/typed-api/messages/1/resend/", {"message": {"n": 1}}),
        (viewer, "/api/v1/queues/typed-api/purge/", {"confirm_name": "typed-api"}),
        (operator, "/api/v1/queues/typed-api/purge/", {"confirm_name": "typed-api"}),
        (operator, "/api/v1/queues/typed-api/drop/", {"confirm_name": "typed-api"}),
        (operator, "/api/v1/queues/", {"name": "not-made"}),
    ]:
        response = client.post(url, body, content_type="application/json", headers=headers)
        assert response.status_code == 403, (url, response.content)
        assert response.json()["detail"]
    assert len(live_ids(pgmq_sql, "typed-api")) == 30 and archived_ids(pgmq_sql, "typed-api") == []
    assert queue_exists(pgmq_sql, "typed-api") and not queue_exists(pgmq_sql, "not-made")
    assert BulkJob.objects.get().status == "pending"
    assert set(action_records().values_list("outcome", flat=True)) == {"refused"}  # nothing done, each asked


def test_purge_needs_the_queues_name_typed(client, as_role, make_queue, pgmq_sql):
    make_queue("purged-api", messages=5)
    admin = as_role("Admin")

    def purge(body: dict):
        return client.post("/api/v1/queues/purged-api/purge/", body, content_type="application/json", headers=admin)

    for body in [{}, {"confirm_name": "purged"}, {"confirm_name": "Purged-API"}, {"confirm_name": "purged-api "}]:
        response = purge(body)
        assert response.status_code == 400, body
        assert "confirm_name" in response.json()["errors"]
    assert live_ids(pgmq_sql, "purged-api") == [1, 2, 3, 4, 5] and action_records().count() == 0
    token = "0c9a3b1e-7d64-4f1e-9b2a-6e5d4c3b2a10"
    response = purge({"confirm_name": "purged-api", "request_token": token})
    assert response.status_code == 200, response.content
    assert response.json()["purged"] == 5 and live_ids(pgmq_sql, "purged-api") == []
    entry = AuditEntry.objects.get(pk=response.json()["audit_id"])
    assert (entry.username, entry.action, entry.affected, entry.deleted_count) == ("api-admin", "purge", 5, 5)
    assert [payload["msg_id"] for payload in entry.deleted_payloads] == [1, 2, 3, 4, 5]
    assert purge({"confirm_name": "purged-api", "request_token": token}).status_code == 409


def test_an_admin_creates_and_drops_a_queue(client, as_role, make_queue, pgmq_sql):
    admin = as_role("Admin")
    try:
        created = client.post(
            "/api/v1/queues/", {"name": "made-by-api"}, content_type="application/json", headers=admin
        )
        assert created.status_code == 201, created.content
        assert queue_exists(pgmq_sql, "made-by-api")
        assert AuditEntry.objects.get(pk=created.json()["audit_id"]).action == "create_queue"
        clash = client.post("/api/v1/queues/", {"name": "Made-By-API"}, content_type="application/json", headers=admin)
        assert clash.status_code == 400 and "made-by-api" in clash.json()["detail"]
        refused = client.post("/api/v1/queues/", {"name": "bad;name"}, content_type="application/json", headers=admin)
        assert refused.status_code == 400 and "name" in refused.json()["errors"]

        pgmq_sql.execute("SELECT pgmq.send_batch('made-by-api', ARRAY['{}', '{}', '{}']::jsonb[])")
        pgmq_sql.execute("SELECT pgmq.archive('made-by-api', 1)")
        wrong = client.post(
            "/api/v1/queues/made-by-api/drop/", {"confirm_name": "made"}, content_type="application/json", headers=admin
        )
        assert wrong.status_code == 400 and queue_exists(pgmq_sql, "made-by-api")
        dropped = client.post(
            "/api/v1/queues/made-by-api/drop/",
            {"confirm_name": "made-by-api"},
            content_type="application/json",
            headers=admin,
        )
        assert dropped.status_code == 200, dropped.content
        assert (dropped.json()["live_messages"], dropped.json()["archived_messages"]) == (2, 1)
        assert not queue_exists(pgmq_sql, "made-by-api")
        entry = AuditEntry.objects.get(pk=dropped.json()["audit_id"])
        assert (entry.username, entry.action, entry.queue_name, entry.deleted_count) == (
            "api-admin",
            "drop_queue",
            "made-by-api",
            3,
        )
        assert client.get("/api/v1/queues/made-by-api/", headers=admin).status_code == 404
    finally:
        if queue_exists(pgmq_sql, "made-by-api"):
            pgmq_sql.execute("SELECT pgmq.drop_queue('made-by-api')")


def test_edit_and_resend_sends_the_copy_and_archives_the_original(client, as_role, make_queue, pgmq_sql):
    make_queue("edited", messages=3)
    make_queue("edited-dlq")
    operator = as_role("Operator")
    response = client.post(
        "/api/v1/queues/edited/messages/2/resend/",
        '{"message": {"n": 2, "price": 1.10}, "headers": {"fixed": true}}',
        content_type="application/json",
        headers=operator,
    )
    assert response.status_code == 201, response.content
    copy = response.json()
    assert (copy["msg_id"], copy["destination"], copy["original_archived"]) == (4, "edited", True)
    assert live_ids(pgmq_sql, "edited") == [1, 3, 4] and archived_ids(pgmq_sql, "edited") == [2]
    stored = pgmq_sql.execute(
        "SELECT message::text, (headers - 'x-pgmq-dashboard-origin')::text FROM pgmq.q_edited WHERE msg_id = 4"
    ).fetchone()
    assert stored == ('{"n": 2, "price": 1.10}', '{"fixed": true}')  # and where it came from
    entry = AuditEntry.objects.get(pk=copy["audit_id"])
    assert (entry.username, entry.action, entry.details["new_msg_ids"]) == ("api-operator", "edit_and_resend", {"2": 4})

    to_dlq = client.post(
        "/api/v1/queues/edited/messages/3/resend/",
        {"message": {"n": 3}, "destination": "edited-dlq"},
        content_type="application/json",
        headers=operator,
    )
    assert to_dlq.status_code == 201 and to_dlq.json()["destination"] == "edited-dlq"
    assert live_ids(pgmq_sql, "edited-dlq") == [1] and archived_ids(pgmq_sql, "edited") == [2, 3]

    for body, field in [
        ({"message": {"n": 1}, "destination": "nowhere"}, "destination"),
        ({"message": {"n": 1}, "headers": [1]}, "headers"),
        ({"headers": {}}, "message"),
    ]:
        bad = client.post(
            "/api/v1/queues/edited/messages/1/resend/", body, content_type="application/json", headers=operator
        )
        assert bad.status_code == 400 and field in bad.json()["errors"], body
    gone = client.post(
        "/api/v1/queues/edited/messages/2/resend/", {"message": {}}, content_type="application/json", headers=operator
    )
    assert gone.status_code == 404  # archived already: not in the live table
    assert live_ids(pgmq_sql, "edited") == [1, 4] and action_records().count() == 2


def test_edit_and_resend_is_refused_to_whom_values_are_redacted(client, as_role, settings, make_queue, pgmq_sql):
    settings.REDACT_PATHS = [("message", ("n",))]
    make_queue("edited-private", messages=1)
    response = client.post(
        "/api/v1/queues/edited-private/messages/1/resend/",
        {"message": {"n": 1}},
        content_type="application/json",
        headers=as_role("Operator"),
    )
    assert response.status_code == 403 and "redact" in response.json()["detail"]
    assert live_ids(pgmq_sql, "edited-private") == [1] and action_records().count() == 0


def test_requeue_from_the_archive(client, as_role, make_queue, pgmq_sql):
    make_queue("requeued", messages=3)
    pgmq_sql.execute("SELECT pgmq.archive('requeued', ARRAY[1, 2]::bigint[])")
    response = client.post(
        "/api/v1/queues/requeued/actions/",
        {
            "action": "requeue",
            "source": "archive",
            "msg_ids": [1, 2],
            "parameters": {"destination": "requeued", "remove_archived": True},
        },
        content_type="application/json",
        headers=as_role("Operator"),
    )
    assert response.status_code == 200, response.content
    assert response.json()["result"]["new_ids"] == {"1": 4, "2": 5}
    assert live_ids(pgmq_sql, "requeued") == [3, 4, 5] and archived_ids(pgmq_sql, "requeued") == []
    assert AuditEntry.objects.get(pk=response.json()["audit_id"]).action == "requeue"


# Schemathesis: every operation of the live OpenAPI document, with generated input, as an admin
# (who may do everything) with a token, on queues holding real messages.
FUZZ_QUEUES = ["fuzzed", "fuzzed-dlq"]
# Purges and drops are aimed at this queue alone, made again whenever one went: generated input
# never empties or drops the queues every other operation is aimed at.
DOOMED = "fuzzed-doomed"
DESTRUCTIVE_OPERATIONS = {"queues_purge", "queues_drop"}
FUZZ_EXAMPLES = 100  # per operation: about two minutes in all, shared by the workers


@pytest.fixture
def fuzz_queues(make_queue, pgmq_sql) -> Iterator[list[str]]:
    for name in FUZZ_QUEUES:
        make_queue(name, messages=30)
    pgmq_sql.execute("SELECT pgmq.archive('fuzzed', array_agg(i)) FROM generate_series(1, 10) i")
    pgmq_sql.execute("SELECT * FROM pgmq.read('fuzzed', 600, 3)")
    before = {row[0] for row in pgmq_sql.execute("SELECT queue_name FROM pgmq.meta")}
    yield FUZZ_QUEUES
    # Queues the generated creates made, and the doomed one, go with the test.
    drop_queues(pgmq_sql, {row[0] for row in pgmq_sql.execute("SELECT queue_name FROM pgmq.meta")} - before)


def aimed(case, pgmq_sql) -> None:
    """Most generated queue names and ids would only ever meet a 404: aim most at real ones."""
    name = case.path_parameters.get("queue_name")
    if case.operation.definition.raw.get("operationId") in DESTRUCTIVE_OPERATIONS:
        if not pgmq_sql.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [DOOMED]).fetchone():
            pgmq_sql.execute("SELECT pgmq.create(%s)", [DOOMED])
            pgmq_sql.execute("SELECT pgmq.send_batch(%s, ARRAY['{}', '{}']::jsonb[])", [DOOMED])
        if len(str(name)) % 4 != 3 or name in FUZZ_QUEUES:
            case.path_parameters["queue_name"] = DOOMED
            if isinstance(case.body, dict) and len(str(case.body.get("confirm_name"))) % 2:
                case.body["confirm_name"] = DOOMED  # half of them confirmed: the purge or drop is done
        return
    if name is not None and len(str(name)) % 4 != 3:
        case.path_parameters["queue_name"] = FUZZ_QUEUES[len(str(name)) % 2]
    if isinstance(case.path_parameters.get("msg_id"), int):
        case.path_parameters["msg_id"] = abs(case.path_parameters["msg_id"]) % 40
    if isinstance(case.path_parameters.get("job_id"), int):
        jobs = list(BulkJob.objects.order_by("pk").values_list("pk", flat=True))
        if jobs and case.path_parameters["job_id"] % 4 != 3:
            case.path_parameters["job_id"] = jobs[abs(case.path_parameters["job_id"]) % len(jobs)]


# The document's operations, fuzzed a group per test so that the suite's workers share them. A
# group's operations run in order: jobs are started (jobs_create) before the job operations aim at them.
FUZZ_GROUPS = {
    "queues_list": ["queues_list"],
    "queues_create": ["queues_create"],
    "queues_retrieve": ["queues_retrieve"],
    "queues_history": ["queues_history"],
    "messages_list": ["messages_list"],
    "messages_retrieve": ["messages_retrieve"],
    "messages_act": ["messages_act"],
    "messages_send": ["messages_send"],
    "messages_resend": ["messages_resend"],
    "queues_purge": ["queues_purge"],
    "queues_drop": ["queues_drop"],
    "jobs_plan": ["jobs_plan"],
    "jobs": ["jobs_create", "jobs_retrieve", "jobs_cancel"],
}
# Not only refusals: the generated requests also got each kind of change done.
CHANGES_DONE = {
    "queues_create": "create_queue",
    "messages_send": "send",
    "messages_resend": "edit_and_resend",
    "queues_purge": "purge",
    "queues_drop": "drop_queue",
}


@functools.cache  # the document loaded and compiled once for the module: 0.66 s of CPU each time
def live_operations():
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", WSGIHandler())
    return {result.ok().definition.raw["operationId"]: result.ok() for result in schema.get_all_operations()}


def test_every_operation_of_the_openapi_document_is_fuzzed():
    assert sorted(live_operations()) == sorted(name for group in FUZZ_GROUPS.values() for name in group)


@pytest.mark.parametrize("group", FUZZ_GROUPS)
def test_the_openapi_document_holds_under_generated_requests(group, fuzz_queues, django_user_model, pgmq_sql):
    """Schemathesis generates requests for each operation from the live document and checks each
    answer: never a server error, status codes, content types and bodies as documented."""
    headers = {"Authorization": f"Token {token_for(django_user_model, 'Admin')}"}
    operations = live_operations()
    failures: dict[str, str] = {}
    for operation in (operations[name] for name in FUZZ_GROUPS[group]):

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            aimed(case, pgmq_sql)
            # Rules no schema can state (a delay needs `until`, a destination must exist) answer 400:
            # every other check stays on, not_a_server_error first.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            run()
        except (Exception, BaseExceptionGroup) as error:  # every operation's findings, then one failure
            failures[operation.label] = str(error)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    if group in CHANGES_DONE:
        assert AuditEntry.objects.filter(outcome__in=["done", "partial"], action=CHANGES_DONE[group]).exists()
    if group == "jobs":
        assert BulkJob.objects.exists()
    assert {row[0] for row in pgmq_sql.execute("SELECT queue_name FROM pgmq.meta")} >= set(FUZZ_QUEUES)

"""Sensitive JSON paths (DASHBOARD_REDACT): hidden by the server in every place a payload shows,
and in what filters match, for everyone without the permission to see them."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client

from tests.conftest import uses_databases
from tests.pages import body, parse

pytestmark = uses_databases

SECRETS = ["bob@example.com", "4111111111111111", "Bearer s3cret", "12345678901234567890.5", "hidden-too"]
PATHS = [
    ("message", ("customer", "email")),
    ("message", ("card", "*")),
    ("headers", ("authorization",)),
    ("message", ("items", "*", "price")),
    ("message", ("it's 100%",)),
]
MESSAGE = (
    '{"id": 7, "customer": {"email": "bob@example.com", "id": 42}, "card": {"number": "4111111111111111"}, '
    '"items": [{"sku": "A-1", "price": 12345678901234567890.5}, {"sku": "B-2"}], "it\'s 100%": "hidden-too", '
    '"note": "keep me", "total": 0.12345678901234567890}'
)
HEADERS = '{"authorization": "Bearer s3cret", "trace_id": "t-1"}'


@pytest.fixture
def redacting(settings, make_queue, pgmq_sql):
    settings.REDACT_PATHS = PATHS
    make_queue("private")
    pgmq_sql.execute("SELECT pgmq.send('private', %s::jsonb, %s::jsonb)", [MESSAGE, HEADERS])
    pgmq_sql.execute("SELECT pgmq.send('private', '{\"plain\": true}'::jsonb)")
    return "private"


@pytest.fixture
def unredacted_client(django_user_model):
    user = django_user_model.objects.create_user("trusted", password="a-long-test-password-43")
    user.groups.add(Group.objects.get(name="Viewer"))
    user.user_permissions.add(Permission.objects.get(codename="view_unredacted"))
    client = Client()
    client.force_login(user)
    return client


def shown(response) -> str:
    assert response.status_code == 200, body(response)[:300]
    return body(response).decode()


def assert_redacted(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "[redacted]" in text


def test_lists_details_downloads_and_the_poison_panel_hide_the_values(redacting, operator_client, pgmq_sql):
    pgmq_sql.execute("UPDATE pgmq.q_private SET read_ct = 9 WHERE msg_id = 1")  # a poison message
    for path in (
        "/queues/private/messages/",
        "/queues/private/messages/1/",
        "/queues/private/messages/1/raw/",
        "/queues/private/poison/",
        "/queues/private/messages/?source=both",
    ):
        page = shown(operator_client.get(path))
        assert_redacted(page)
        assert "keep me" in page and "A-1" in page, path
    assert "t-1" in shown(operator_client.get("/queues/private/messages/1/"))
    downloaded = shown(operator_client.get("/queues/private/messages/1/raw/"))
    whole = json.loads(downloaded)
    assert whole["customer"] == {"email": "[redacted]", "id": 42}
    assert whole["items"] == [{"sku": "A-1", "price": "[redacted]"}, {"sku": "B-2"}]
    assert '"total": 0.12345678901234567890' in downloaded
    assert json.loads(shown(operator_client.get("/queues/private/messages/1/raw/?part=headers"))) == {
        "authorization": "[redacted]",
        "trace_id": "t-1",
    }


def test_filters_and_searches_cannot_find_a_message_by_a_hidden_value(redacting, operator_client):
    def found(query: str) -> list[str]:
        page = parse(operator_client.get("/queues/private/messages/?" + query))
        return [row["data-msg-id"] for row in page.select("tr[data-msg-id]")]

    assert found("q=bob%40example") == []
    assert found("q=message.customer.email:bob*") == []
    assert found("q=headers:s3cret") == []
    assert found("message=" + json.dumps({"customer": {"email": "bob@example.com"}})) == []
    assert found("q=keep+me") == ["1"]  # what is not hidden is still found
    assert found("q=message.customer.id:42") == ["1"]


def test_a_job_by_filter_matches_what_the_user_sees(redacting, operator_client):
    plan = parse(
        operator_client.post(
            "/queues/private/act/",
            {"action": "archive", "source": "live", "scope": "matching", "filter_query": "q=bob"},
            headers={"HX-Request": "true"},
        )
    )
    assert plan.select_one("[data-plan-count]").get_text() == "0"


def test_someone_with_the_permission_sees_and_finds_everything(redacting, unredacted_client):
    whole = shown(unredacted_client.get("/queues/private/messages/1/raw/")) + shown(
        unredacted_client.get("/queues/private/messages/1/raw/?part=headers")
    )
    for secret in SECRETS:
        assert secret in whole
    listing = parse(unredacted_client.get("/queues/private/messages/?q=bob%40example"))
    assert [row["data-msg-id"] for row in listing.select("tr[data-msg-id]")] == ["1"]


def test_the_audit_log_keeps_deleted_payloads_whole_and_shows_them_redacted(
    redacting, operator_client, unredacted_client
):
    operator_client.post(
        "/queues/private/act/",
        {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1", "confirmed": "1"},
        headers={"HX-Request": "true"},
    )
    from queues.models import AuditEntry

    entry = AuditEntry.objects.get(action="delete")
    assert_redacted(shown(operator_client.get(f"/audit/{entry.pk}/")))
    assert "bob@example.com" in shown(unredacted_client.get(f"/audit/{entry.pk}/"))


def test_a_sent_message_is_redacted_in_its_audit_entry_and_the_csv(redacting, operator_client, unredacted_client):
    sent = operator_client.get("/queues/private/send/")  # the form's request token
    token = parse(sent).select_one("input[name=request_token]")["value"]
    operator_client.post(
        "/queues/private/send/", {"message": MESSAGE, "headers": HEADERS, "delay_s": "0", "request_token": token}
    )
    from queues.models import AuditEntry

    entry = AuditEntry.objects.get(action="send")
    assert_redacted(shown(operator_client.get(f"/audit/{entry.pk}/")))
    csv_text = b"".join(operator_client.get("/audit/export.csv").streaming_content).decode()
    assert_redacted(csv_text)
    assert "Bearer s3cret" in b"".join(unredacted_client.get("/audit/export.csv").streaming_content).decode()


def test_editing_a_redacted_message_is_refused_saying_why(redacting, operator_client):
    detail = parse(operator_client.get("/queues/private/messages/1/"))
    assert not detail.find("a", string="Edit and resend…") and detail.select_one("[data-redacted-note]")
    response = operator_client.get("/queues/private/messages/1/edit/")
    assert response.status_code == 403 and "redacted" in response.content.decode()


def test_nothing_is_hidden_when_no_path_is_configured(make_queue, pgmq_sql, operator_client):
    make_queue("open")
    pgmq_sql.execute("SELECT pgmq.send('open', %s::jsonb, %s::jsonb)", [MESSAGE, HEADERS])
    whole = shown(operator_client.get("/queues/open/messages/1/raw/")) + shown(
        operator_client.get("/queues/open/messages/1/raw/?part=headers")
    )
    assert all(secret in whole for secret in SECRETS) and "[redacted]" not in whole


SECRET_FILTER = {"customer": {"email": "x@secret.example"}}


def test_a_filter_typed_by_someone_who_sees_everything_is_redacted_for_those_who_do_not(
    redacting, operator_client, unredacted_client, django_user_model
):
    from urllib.parse import urlencode

    from queues.management.commands.run_jobs import run_pending_jobs
    from queues.models import AuditEntry, BulkJob
    from queues.tokens import issue_token

    unredacted_operator = django_user_model.objects.get(username="trusted")
    unredacted_operator.groups.add(Group.objects.get(name="Operator"))
    query = urlencode({"message": json.dumps(SECRET_FILTER), "q": "headers.trace_id:x-secret-trace"})
    started = unredacted_client.post(
        "/queues/private/act/",
        {"action": "archive", "source": "live", "scope": "matching", "filter_query": query, "confirmed": "1"},
    )
    assert started.status_code == 200
    job = BulkJob.objects.get()
    assert "x@secret.example" in job.filter_words  # kept as typed, for those who may see it
    assert "x@secret.example" in shown(unredacted_client.get(f"/jobs/{job.pk}/"))
    run_pending_jobs()
    entry = AuditEntry.objects.get(pk=BulkJob.objects.get().audit_entry_id)

    viewer_token = issue_token(django_user_model.objects.get(username="operator-user"))[1]
    seen = {
        "job page": shown(operator_client.get(f"/jobs/{job.pk}/")),
        "queue page": shown(operator_client.get("/queues/private/")),
        "audit entry": shown(operator_client.get(f"/audit/{entry.pk}/")),
        "audit CSV": b"".join(operator_client.get("/audit/export.csv").streaming_content).decode(),
        "API job": Client()
        .get(f"/api/v1/jobs/{job.pk}/", headers={"Authorization": f"Token {viewer_token}"})
        .content.decode(),
    }
    for where, text in seen.items():
        assert "x@secret.example" not in text and "x-secret-trace" not in text, where
        assert "[redacted]" in text, where
    assert "x@secret.example" in shown(unredacted_client.get(f"/audit/{entry.pk}/"))


def test_a_header_path_hides_the_header_however_it_is_capitalised(settings, make_queue, pgmq_sql, operator_client):
    settings.REDACT_PATHS = [("headers", ("authorization",))]
    make_queue("cased")
    pgmq_sql.execute(
        "SELECT pgmq.send('cased', '{\"n\": 1}'::jsonb, %s::jsonb)",
        ['{"Authorization": "Bearer upper-s3cret", "AUTHORIZATION": "Bearer shout-s3cret", "x": 1}'],
    )
    for path in ("/queues/cased/messages/", "/queues/cased/messages/1/"):
        page = shown(operator_client.get(path))
        assert "upper-s3cret" not in page and "shout-s3cret" not in page, path
    found = parse(operator_client.get("/queues/cased/messages/?q=headers:upper-s3cret"))
    assert not found.select("tr[data-msg-id]")


def test_a_path_applies_to_each_element_of_an_array_message(settings, make_queue, pgmq_sql, operator_client):
    settings.REDACT_PATHS = [("message", ("customer", "email"))]
    make_queue("batched")
    pgmq_sql.execute(
        "SELECT pgmq.send('batched', %s::jsonb)",
        ['[{"customer": {"email": "first@example.com", "id": 1}}, {"customer": {"email": "second@ex.com"}}]'],
    )
    page = shown(operator_client.get("/queues/batched/messages/1/"))
    assert "first@example.com" not in page and "second@ex.com" not in page and "[redacted]" in page


def test_a_key_with_a_dot_in_it_is_named_with_a_backslash(monkeypatch):
    from dashboard import env

    monkeypatch.setenv("DASHBOARD_REDACT", r"meta\.email, headers.x-api-key, message.a\\b.c")
    assert env.json_paths("DASHBOARD_REDACT") == [
        ("message", ("meta.email",)),
        ("headers", ("x-api-key",)),
        ("message", ("a\\b", "c")),
    ]

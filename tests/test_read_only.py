"""DASHBOARD_READ_ONLY: every write hidden and refused, for every user, admins and superusers too.

The refusals are checked by walking the app's URL conf (pages and API) and the action vocabulary,
so a write path added later is refused without anyone listing it here.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from queues import jobs
from queues.filters import MessageFilter
from queues.management.commands.run_jobs import run_pending_jobs
from queues.models import BulkJob
from queues.pgmq import Queue
from queues.vocabulary import ACTIONS
from tests.conftest import action_records, uses_databases
from tests.pages import parse

pytestmark = uses_databases

UNSAFE_METHODS = ("post", "put", "patch", "delete")


@pytest.fixture
def read_only(settings):
    settings.READ_ONLY = True


@pytest.fixture
def held(make_queue):
    return make_queue("held", messages=3)


@pytest.fixture
def superuser_client(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("root", password="a-long-test-password-42")
    user.groups.add(Group.objects.get(name="Admin"))
    client = Client()
    client.force_login(user)
    return client


def backlog(pgmq_sql) -> int:
    return pgmq_sql.execute("SELECT count(*) FROM pgmq.q_held").fetchone()[0]


def app_routes() -> list[tuple[str, URLPattern]]:
    """Every route of the app (the URL confs of `queues`, pages and API): (its URL name, the pattern)."""
    found = []

    def walk(patterns, in_app: bool) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, in_app or getattr(entry.urlconf_module, "__name__", "").startswith("queues"))
            elif in_app and entry.name:
                found.append((entry.name, entry))

    walk(get_resolver().url_patterns, False)
    return found


def address(name: str, pattern: URLPattern, msg_id: int, job_id: int) -> str:
    values = {"queue_name": "held", "msg_id": msg_id, "job_id": job_id, "entry_id": 1}
    return reverse(name, kwargs={key: values[key] for key in pattern.pattern.converters})


@pytest.fixture
def pending_job(held, django_user_model) -> BulkJob:
    """A job asked for before the switch was turned on (tests ask for it before `read_only`)."""
    asker = django_user_model.objects.create_user("asker", password="a-long-test-password-42")
    return jobs.create(
        user=asker,
        queue=Queue.objects.get(queue_name="held"),
        source="live",
        action="delete",
        parameters={},
        message_filter=MessageFilter(),
        expected=3,
    )


def test_every_write_path_is_refused_even_to_a_superuser(pending_job, read_only, held, superuser_client, pgmq_sql):
    msg_id = pgmq_sql.execute("SELECT min(msg_id) FROM pgmq.q_held").fetchone()[0]
    routes = app_routes()
    assert {"send-message", "purge-queue", "api-send", "api-jobs", "cancel-job"} <= {name for name, _ in routes}
    for name, pattern in routes:
        url = address(name, pattern, msg_id, pending_job.pk)
        for method in UNSAFE_METHODS:
            body = {"action": "delete", "msg_ids": [msg_id], "confirm_name": "held", "name": "held-too"}
            answer = getattr(superuser_client, method)(url, json.dumps(body), content_type="application/json")
            assert answer.status_code == 403, (method, url, answer.status_code)
            if name.startswith("api-"):
                assert "read-only" in answer.json()["detail"], url
    assert backlog(pgmq_sql) == 3
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta WHERE queue_name LIKE 'held%'").fetchone()[0] == 1
    assert action_records().count() == 0
    pending_job.refresh_from_db()
    assert pending_job.status == BulkJob.PENDING and not pending_job.cancel_requested


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_of_the_vocabulary_is_refused(read_only, held, superuser_client, pgmq_sql, action):
    msg_id = pgmq_sql.execute("SELECT min(msg_id) FROM pgmq.q_held").fetchone()[0]
    page = superuser_client.post(
        "/queues/held/act/",
        {"action": action, "source": "live", "scope": "selected", "msg_id": str(msg_id), "confirmed": "1"},
    )
    api = superuser_client.post(
        "/api/v1/queues/held/actions/",
        {"action": action, "msg_ids": [msg_id], "source": "live"},
        content_type="application/json",
    )
    assert (page.status_code, api.status_code) == (403, 403)
    assert "read-only" in api.json()["detail"]
    assert backlog(pgmq_sql) == 3 and action_records().count() == 0


def test_nothing_to_act_with_is_shown_and_the_header_says_read_only(read_only, held, superuser_client, pgmq_sql):
    msg_id = pgmq_sql.execute("SELECT min(msg_id) FROM pgmq.q_held").fetchone()[0]
    for path in ("/", "/queues/held/", "/queues/held/messages/", f"/queues/held/messages/{msg_id}/", "/audit/"):
        answer = superuser_client.get(path)
        assert answer.status_code == 200, path
        page = parse(answer)
        assert "read-only" in page.select_one("header").get_text(" "), path
        forms = [form for form in page.select("form") if (form.get("method") or "get").lower() == "post"]
        assert [form["action"] for form in forms] == ["/logout/"], path
        shown = page.get_text(" ")
        for offer in ("New queue", "Send a message", "Purge", "Drop", "Edit and resend"):
            assert offer not in shown, (path, offer)
        assert not page.select("input[type=checkbox][name=msg_id]"), path
    for path in ("/new-queue/", "/queues/held/send/", "/queues/held/purge/", "/queues/held/drop/"):
        assert superuser_client.get(path).status_code == 403, path
    assert superuser_client.get(f"/queues/held/messages/{msg_id}/edit/").status_code == 403


def test_without_the_switch_the_same_admin_acts(held, superuser_client, pgmq_sql):
    page = parse(superuser_client.get("/queues/held/"))
    assert "read-only" not in page.select_one("header").get_text(" ")
    assert "Send a message" in page.get_text(" ")
    sent = superuser_client.post("/api/v1/queues/held/send/", {"message": {"a": 1}}, content_type="application/json")
    assert sent.status_code == 201 and backlog(pgmq_sql) == 4


def test_the_job_runner_leaves_queued_jobs_waiting(pending_job, read_only, pgmq_sql, settings):
    assert run_pending_jobs() == 0
    pending_job.refresh_from_db()
    assert pending_job.status == BulkJob.PENDING and backlog(pgmq_sql) == 3
    settings.READ_ONLY = False
    assert run_pending_jobs() == 1
    assert backlog(pgmq_sql) == 0


def test_a_job_is_not_started_by_a_service_caller_either(read_only, held, django_user_model):
    user = django_user_model.objects.create_superuser("root2", password="a-long-test-password-42")
    with pytest.raises(PermissionError, match="read-only"):
        jobs.create(
            user=user,
            queue=Queue.objects.get(queue_name="held"),
            source="live",
            action="archive",
            parameters={},
            message_filter=MessageFilter(),
            expected=3,
        )
    assert not BulkJob.objects.exists()


def test_user_management_stays_available(read_only, superuser_client, django_user_model):
    answer = superuser_client.post(
        "/admin/auth/user/add/",
        {"username": "newcomer", "password1": "a-long-test-password-42", "password2": "a-long-test-password-42"},
    )
    assert answer.status_code == 302
    assert django_user_model.objects.filter(username="newcomer").exists()

"""Roles: viewers read, operators act on messages and send, admins also purge, create and drop.
What a role may not do is not shown, and refused with 403 if asked for anyway. GET never changes
anything; every change is a POST with a CSRF token."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from tests.conftest import action_records, uses_databases
from tests.pages import parse

pytestmark = uses_databases

CHANGES = [  # (path, form data): everything that changes something
    (
        "/queues/guarded/act/",
        {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1", "confirmed": "1"},
    ),
    ("/queues/guarded/send/", {"message": "{}", "delay_s": "0"}),
    ("/queues/guarded/messages/1/edit/", {"source": "live", "message": "{}"}),
    ("/queues/guarded/purge/", {"confirm_name": "guarded"}),
    ("/queues/guarded/drop/", {"confirm_name": "guarded"}),
    ("/new-queue/", {"name": "another", "confirm_name": "another"}),
]
ADMIN_ONLY = {"/queues/guarded/purge/", "/queues/guarded/drop/", "/new-queue/"}


def signed_in(django_user_model, role: str | None) -> Client:
    user = django_user_model.objects.create_user(f"user-{role}", password="a-long-enough-password-9")
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def guarded(make_queue):
    return make_queue("guarded", messages=3)


def backlog(pgmq_sql) -> int:
    return pgmq_sql.execute("SELECT count(*) FROM pgmq.q_guarded").fetchone()[0]


@pytest.mark.parametrize("path, data", CHANGES)
def test_a_viewer_is_refused_every_change(django_user_model, guarded, pgmq_sql, path, data):
    viewer = signed_in(django_user_model, "Viewer")
    assert viewer.post(path, data).status_code == 403
    assert backlog(pgmq_sql) == 3
    # Nothing done; the attempt itself is in the log, as refused.
    assert list(action_records().values_list("username", "outcome", "affected")) == [("user-Viewer", "refused", 0)]


@pytest.mark.parametrize("path, data", [change for change in CHANGES if change[0] in ADMIN_ONLY])
def test_an_operator_is_refused_what_only_admins_do(django_user_model, guarded, pgmq_sql, path, data):
    operator = signed_in(django_user_model, "Operator")
    assert operator.post(path, data).status_code == 403
    assert backlog(pgmq_sql) == 3


def test_a_viewer_sees_no_action(django_user_model, guarded):
    viewer = signed_in(django_user_model, "Viewer")
    for path in ("/", "/queues/guarded/", "/queues/guarded/messages/", "/queues/guarded/messages/1/"):
        page = parse(viewer.get(path))
        assert (
            page.select(
                "form[action*='/act/'], input[name=msg_id], a[href$='/send/'], a[href$='/purge/'], "
                "a[href$='/drop/'], a[href='/new-queue/'], a[href*='/edit']"
            )
            == []
        ), path


def test_an_operator_sees_message_actions_but_not_queue_administration(django_user_model, guarded):
    operator = signed_in(django_user_model, "Operator")
    messages_page = parse(operator.get("/queues/guarded/messages/"))
    assert len(messages_page.select("input[name=msg_id]")) == 3
    queue_page = parse(operator.get("/queues/guarded/"))
    assert queue_page.select("a[href$='/send/']") and not queue_page.select("a[href$='/purge/']")


def test_an_admin_sees_everything(django_user_model, guarded):
    admin = signed_in(django_user_model, "Admin")
    queue_page = parse(admin.get("/queues/guarded/"))
    assert queue_page.select("a[href$='/purge/']") and queue_page.select("a[href$='/drop/']")
    assert parse(admin.get("/")).select("a[href='/new-queue/']")


@pytest.mark.parametrize("path", ["/queues/guarded/act/", "/jobs/1/cancel/"])
def test_get_never_changes_anything(django_user_model, guarded, pgmq_sql, path):
    admin = signed_in(django_user_model, "Admin")
    assert admin.get(path + "?action=delete&source=live&scope=selected&msg_id=1&confirmed=1").status_code == 405
    assert backlog(pgmq_sql) == 3


def test_confirmation_pages_change_nothing(django_user_model, guarded, pgmq_sql):
    admin = signed_in(django_user_model, "Admin")
    for path in ("/queues/guarded/purge/", "/queues/guarded/drop/", "/queues/guarded/send/", "/new-queue/"):
        assert admin.get(path).status_code == 200
    assert backlog(pgmq_sql) == 3 and action_records().count() == 0


def test_a_change_without_the_csrf_token_is_refused(django_user_model, guarded, pgmq_sql):
    user = django_user_model.objects.create_user("csrf-op", password="a-long-enough-password-9")
    user.groups.add(Group.objects.get(name="Operator"))
    careful = Client(enforce_csrf_checks=True)
    careful.force_login(user)
    data = {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1", "confirmed": "1"}
    assert careful.post("/queues/guarded/act/", data).status_code == 403
    assert backlog(pgmq_sql) == 3
    token = parse(careful.get("/queues/guarded/messages/")).select_one("input[name=csrfmiddlewaretoken]")["value"]
    # htmx sends the token in a header (hx-headers on <main>), as here:
    assert careful.post("/queues/guarded/act/", data, headers={"X-CSRFToken": token}).status_code == 200
    assert backlog(pgmq_sql) == 2


def test_add_user_gives_the_role(django_user_model, monkeypatch):
    from django.core.management import call_command

    monkeypatch.setenv("PASSWORD", "a-long-enough-password-9")
    call_command("add_user", "newcomer", "--role", "admin")
    user = django_user_model.objects.get(username="newcomer")
    assert (
        user.is_staff and user.has_perm("queues.administer_queues") and user.check_password("a-long-enough-password-9")
    )

"""Who may do what, changed, is in the append-only audit log (who, whom, before and after), however
it was changed; API tokens are kept as hashes, their key shown once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client

from queues.models import ApiToken, AuditEntry
from tests.conftest import uses_databases
from tests.pages import parse
from tests.test_admin_security import change_form, user_in
from tests.test_configuration import run_manage

pytestmark = uses_databases

PASSWORD = "a-long-test-password-42"


def permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def records(action: str | None = None, *, after: int = 0) -> list[AuditEntry]:
    found = AuditEntry.objects.filter(database="", id__gt=after).order_by("id")
    return list(found.filter(action=action) if action else found)


@pytest.fixture
def boss(client, django_user_model):
    client.force_login(user_in(django_user_model, "boss", "Admin", staff=True))
    return client


def test_a_role_and_flag_change_in_the_admin_is_one_record_saying_before_and_after(boss, django_user_model):
    alice = user_in(django_user_model, "alice", "Viewer")
    before = max((entry.pk for entry in records()), default=0)
    data = change_form(boss, alice)
    data["groups"] = [str(Group.objects.get(name="Operator").pk)]
    data.pop("is_active", None)
    assert boss.post(f"/admin/auth/user/{alice.pk}/change/", data).status_code == 302
    [entry] = records(after=before)
    assert (entry.action, entry.username, entry.target["account"]) == ("change_account", "boss", "alice")
    assert entry.details["changes"] == {"groups": [["Viewer"], ["Operator"]], "is_active": [True, False]}
    # On the dashboard's own audit log too, with the account named.
    row = parse(boss.get("/audit/").content.decode()).select_one(f"[data-audit-entry='{entry.pk}']")
    assert "Change account" in row.get_text() and "alice" in row.get_text()


def test_a_password_change_is_recorded_without_the_password(boss, django_user_model):
    alice = user_in(django_user_model, "alice", "Viewer")
    before = max(entry.pk for entry in records())
    answer = boss.post(
        f"/admin/auth/user/{alice.pk}/password/",
        {
            "password1": "a-new-password-for-alice-7",
            "password2": "a-new-password-for-alice-7",
            "usable_password": "true",
        },
    )
    assert answer.status_code == 302
    alice.refresh_from_db()
    [entry] = records("change_account", after=before)
    assert entry.details["changes"] == {"password": ["(set)", "(changed)"]}
    assert alice.password not in str(entry.details) and "a-new-password" not in str(entry.details)


def test_superuser_flags_raw_permissions_and_a_groups_permissions_are_recorded(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", password=PASSWORD)
    client.force_login(root)
    before = max((entry.pk for entry in records()), default=0)
    alice = user_in(django_user_model, "alice", "Viewer")
    alice.is_superuser = True
    alice.save()
    alice.user_permissions.add(permission("queues.view_unredacted"))
    Group.objects.get(name="Operator").permissions.add(permission("queues.administer_queues"))
    changes = [
        (entry.action, entry.target.get("account") or entry.target.get("group"), entry.details["changes"])
        for entry in records(after=before)
        if entry.action != "create_account"
    ]
    assert changes == [
        ("change_account", "alice", {"groups": [[], ["Viewer"]]}),
        ("change_account", "alice", {"is_superuser": [False, True]}),
        ("change_account", "alice", {"user_permissions": [[], ["queues.view_unredacted"]]}),
        (
            "change_group",
            "Operator",
            {"permissions": [["queues.operate_messages"], ["queues.administer_queues", "queues.operate_messages"]]},
        ),
    ]
    assert {entry.username for entry in records(after=before)} == {
        "(command line)"
    }  # no request: not the signed-in root


def test_the_command_line_is_recorded_as_such(pgmq_database_url):
    done = run_manage("add_user", "carol", "--role", "admin", PASSWORD=PASSWORD, PGMQ_DATABASE_URL=pgmq_database_url)
    assert done.returncode == 0, done.stderr
    created = [entry for entry in records() if entry.target.get("account") == "carol"]
    assert [entry.action for entry in created] == ["create_account", "change_account"]
    assert created[1].details["changes"]["groups"] == [[], ["Admin"]]
    assert all(entry.username == "(command line)" for entry in created)


def test_a_token_is_kept_as_a_hash_shown_once_and_its_making_and_deleting_recorded(
    boss, django_user_model, pgmq_sql, settings, pgmq_database_url
):
    bot = user_in(django_user_model, "ci-bot", "Operator")
    done = run_manage("create_token", "ci-bot", "--name", "ci", PGMQ_DATABASE_URL=pgmq_database_url)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("pgmqd_") and len(key) > 40
    schema = settings.DASHBOARD_SCHEMA
    stored = pgmq_sql.execute(f"SELECT row_to_json(t)::text FROM {schema}.queues_apitoken t").fetchall()
    assert len(stored) == 1 and key not in stored[0][0]
    api = Client()
    assert api.get("/api/v1/queues/", headers={"Authorization": f"Token {key}"}).status_code == 200
    assert api.get("/api/v1/queues/", headers={"Authorization": f"Token {key}x"}).status_code == 401

    # Made in the admin: the key in the message after saving, once; never on the token's pages.
    answer = boss.post("/admin/queues/apitoken/add/", {"user": str(bot.pk), "name": "second"}, follow=True)
    shown = [str(message) for message in answer.context["messages"]]
    second_key = next(text.rsplit(" ", 1)[1] for text in shown if "shown this once" in text)
    assert api.get("/api/v1/queues/", headers={"Authorization": f"Token {second_key}"}).status_code == 200
    listing = boss.get("/admin/queues/apitoken/").content.decode()
    assert second_key not in listing and key not in listing

    token = ApiToken.objects.get(name="ci")
    assert boss.post(f"/admin/queues/apitoken/{token.pk}/delete/", {"post": "yes"}).status_code == 302
    assert api.get("/api/v1/queues/", headers={"Authorization": f"Token {key}"}).status_code == 401
    assert [
        (entry.action, entry.username, entry.target["token_name"]) for entry in records() if "token" in entry.action
    ] == [("create_token", "(command line)", "ci"), ("create_token", "boss", "second"), ("delete_token", "boss", "ci")]


def test_an_admin_makes_tokens_only_for_accounts_within_its_reach(boss, django_user_model):
    root = django_user_model.objects.create_superuser("root", password=PASSWORD)
    answer = boss.post("/admin/queues/apitoken/add/", {"user": str(root.pk), "name": "mine now"})
    assert answer.status_code == 200 and "errorlist" in answer.content.decode()
    assert not ApiToken.objects.exists()


def test_a_password_rehashed_at_sign_in_is_not_recorded_as_changed_but_a_new_one_is(django_user_model):
    """Django strengthens a stored hash when someone signs in with it (after an upgrade raises the
    PBKDF2 iterations): the same password, so no record; setting a new one is a record."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, get_random_string

    carol = django_user_model.objects.create_user("carol", password=PASSWORD)
    carol.groups.add(Group.objects.get(name="Viewer"))
    weak = PBKDF2PasswordHasher().encode(PASSWORD, get_random_string(12), iterations=100)
    django_user_model.objects.filter(pk=carol.pk).update(password=weak)
    before = max((entry.pk for entry in records()), default=0)

    assert Client().login(username="carol", password=PASSWORD)
    assert django_user_model.objects.get(pk=carol.pk).password != weak  # strengthened
    assert records(after=before) == []

    carol.refresh_from_db()
    carol.set_password("another-long-password-43")
    carol.save()
    [entry] = records(after=before)
    assert (entry.action, entry.details["changes"]) == ("change_account", {"password": ["(set)", "(changed)"]})

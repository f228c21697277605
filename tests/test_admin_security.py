"""Django's admin as an attacker with a small role would try it: a user who is Admin of one watched
database only, and a plain Admin (staff, not superuser) reaching for more than its role.

One gunicorn watches the test database ("main") and a second database of the same server
("staging"), as in production.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.test import override_settings
from django.urls import URLPattern, URLResolver
from psycopg import sql

from dashboard import embedded_postgres
from queues.models import AuditEntry
from queues.watched import watching
from tests.conftest import gunicorn, uses_databases
from tests.http_client import HttpSession
from tests.pages import parse
from tests.test_configuration import run_manage

# Its module-scoped servers are made once: every test of it runs in the same worker (pytest-xdist).
pytestmark = [uses_databases, pytest.mark.xdist_group("admin_security")]

PASSWORD = "a-long-test-password-42"


@pytest.fixture(scope="module")
def both_databases(pgmq_database_url: str) -> Iterator[dict[str, str]]:
    # A name of its own per run: the server may be shared with another run of the suite.
    name = f"admin_security_staging_{secrets.token_hex(4)}"
    staging = embedded_postgres.create_database(pgmq_database_url, name)
    embedded_postgres.install_pgmq(staging)
    yield {"PGMQ_DATABASE_URL": pgmq_database_url, "PGMQ_DATABASE_URL_STAGING": staging}
    with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def dashboard(both_databases: dict[str, str], tmp_path_factory) -> Iterator[str]:
    with gunicorn(
        both_databases["PGMQ_DATABASE_URL"],
        tmp_path_factory.mktemp("gunicorn"),
        PGMQ_DATABASE_URL_STAGING=both_databases["PGMQ_DATABASE_URL_STAGING"],
    ) as base_url:
        yield base_url


@pytest.fixture
def scoped_roles(both_databases: dict[str, str]) -> None:
    """The per-database groups ("staging: Admin"...), made by migrate with both databases set."""
    done = run_manage("migrate", "--no-input", **both_databases)
    assert done.returncode == 0, done.stdout + done.stderr


def user_in(django_user_model, username: str, *groups: str, staff: bool = False):
    user = django_user_model.objects.create_user(username, password=PASSWORD, is_staff=staff)
    user.groups.add(*(Group.objects.get(name=group) for group in groups))
    return user


def signed_in(base_url: str, username: str) -> HttpSession:
    session = HttpSession(base_url)
    session.sign_in(username, PASSWORD)
    return session


def admin_paths(object_ids: dict[str, int]) -> list[str]:
    """Every URL of Django's admin site, its parameters filled (an object of each model)."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                model = next((key for key in object_ids if route.startswith(key + "/")), None)
                path = (
                    route.replace("<path:object_id>", str(object_ids.get(model, 1)))
                    .replace("<id>", str(object_ids.get(model, 1)))
                    .replace("<path:content_type_id>", "1")
                )
                path = re.sub(r"\^\(\?P<app_label>([a-z]+)\|.*\)/\$", r"\1/", path).replace("(?P<url>.*)$", "nowhere/")
                assert "<" not in path and "(" not in path, f"a parameter this test does not fill: {route}"
                found.append("/admin/" + path)

    walk(admin.site.get_urls(), "")
    return sorted(set(found))


def test_a_database_scoped_admin_gets_nothing_of_the_admin_site_under_any_prefix(
    dashboard, scoped_roles, django_user_model, make_queue, pgmq_sql
):
    make_queue("orders", messages=1)
    pgmq_sql.execute("SELECT pgmq.delete('orders', 1::bigint)")
    secret = AuditEntry.objects.create(
        username="someone",
        action="delete",
        database="main",
        queue_name="orders",
        target={"msg_ids": [1]},
        requested=1,
        affected=1,
        outcome="done",
        deleted_payloads=[{"msg_id": 1, "message": {"card": "4111-secret"}}],
    )
    attacker = user_in(django_user_model, "stager", "staging: Admin", staff=True)
    session = signed_in(dashboard, "stager")
    ids = {
        "auth/user": attacker.pk,
        "auth/group": Group.objects.get(name="staging: Admin").pk,
        "queues/auditentry": secret.pk,
    }
    paths = admin_paths(ids)
    assert "/admin/auth/user/" in paths and f"/admin/auth/user/{attacker.pk}/change/" in paths
    for prefix in ("", "/db/staging", "/db/main"):
        for path in paths:
            answer = session.get(prefix + path)
            assert "4111-secret" not in answer.text, f"{prefix}{path} showed a deleted payload of main"
            if prefix == "/db/staging":
                assert answer.status == 404, (
                    f"{prefix}{path} answered {answer.status}: the admin exists once, at /admin/"
                )
            elif (
                path.startswith("/admin/auth/") or path.startswith("/admin/queues/") or path.startswith("/admin/axes/")
            ):
                assert answer.status in (403, 404) or "/login/" in answer.url, (
                    f"{prefix}{path} answered {answer.status} to a staging-only admin"
                )

    # The attack itself: adding "main: Admin" to its own account through its own user page.
    main_admin = Group.objects.get(name="main: Admin")
    for prefix in ("", "/db/staging"):
        page = session.get(f"{prefix}/admin/auth/user/{attacker.pk}/change/")
        token = next((cookie.value for cookie in session.cookies if cookie.name == "csrftoken"), "x")
        answer = session.request(
            f"{prefix}/admin/auth/user/{attacker.pk}/change/",
            {
                "csrfmiddlewaretoken": token,
                "username": "stager",
                "is_active": "on",
                "is_staff": "on",
                "groups": str(main_admin.pk),
                "date_joined_0": "2026-01-01",
                "date_joined_1": "00:00:00",
            },
        )
        assert answer.status in (403, 404), f"{prefix}: the change answered {answer.status} ({page.status} before)"
    attacker.refresh_from_db()
    assert list(attacker.groups.values_list("name", flat=True)) == ["staging: Admin"]
    assert session.get("/").status in (403,) or "/db/staging/" in session.get("/").url


def test_a_scoped_role_never_grants_permissions_on_the_dashboards_own_tables(scoped_roles, django_user_model):
    scoped_admin = Group.objects.get(name="staging: Admin")
    assert not scoped_admin.permissions.exclude(codename__in=["operate_messages", "administer_queues"]).exists()
    # Even a permission on the dashboard's tables given to a scoped group by hand counts nowhere.
    scoped_admin.permissions.add(permission("auth.change_user"), permission("queues.view_auditentry"))
    user = user_in(django_user_model, "scoped", "staging: Admin", staff=True)
    with override_settings(WATCHED_DATABASES={"main": "pgmq", "staging": "pgmq-staging"}):
        for alias in ("pgmq", "pgmq-staging"):
            with watching(alias):
                granted = django_user_model.objects.get(pk=user.pk).get_all_permissions()
            assert not any(
                name.startswith(("auth.", "axes.", "authtoken.")) or name.endswith(("_auditentry", "_bulkjob"))
                for name in granted
            ), f"{alias}: {granted}"
            assert ("queues.administer_queues" in granted) == (alias == "pgmq-staging")


def test_the_header_links_to_the_one_admin_site_from_every_database(dashboard, scoped_roles, django_user_model):
    user_in(django_user_model, "boss", "Admin", staff=True)
    session = signed_in(dashboard, "boss")
    for prefix in ("", "/db/staging"):
        links = [
            link["href"]
            for link in parse(session.get(prefix + "/").text).select("header a")
            if link.get_text(strip=True) == "Users"
        ]
        assert links == ["/admin/"]


def permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


# A plain Admin (staff, in the Admin group, not a superuser) reaching for more than its role.


@pytest.fixture
def admin_user(django_user_model):
    return user_in(django_user_model, "boss", "Admin", staff=True)


@pytest.fixture
def boss(client, admin_user):
    client.force_login(admin_user)
    return client


def change_form(client, user) -> dict[str, str | list[str]]:
    """What the user's change page would send back as it is (every field the form shows)."""
    page = parse(client.get(f"/admin/auth/user/{user.pk}/change/").content.decode())
    form = page.select_one("form#user_form")
    data: dict[str, str | list[str]] = {}
    for field in form.select("input[name], select[name], textarea[name]"):
        name = field["name"]
        if field.name == "select":
            data[name] = [option["value"] for option in field.select("option[selected]")]
        elif field.get("type") == "checkbox":
            if field.has_attr("checked"):
                data[name] = "on"
        elif field.get("type") != "submit":
            data[name] = field.get("value", "")
    return data


def test_an_admin_cannot_make_itself_superuser_or_give_itself_permissions(boss, admin_user):
    data = change_form(boss, admin_user)
    data.update(
        {
            "is_superuser": "on",
            "user_permissions": [str(permission("queues.view_unredacted").pk), str(permission("auth.change_group").pk)],
        }
    )
    boss.post(f"/admin/auth/user/{admin_user.pk}/change/", data)
    admin_user.refresh_from_db()
    assert not admin_user.is_superuser
    assert not admin_user.user_permissions.exists()
    assert not admin_user.has_perm("queues.view_unredacted")


def test_an_admin_gives_roles_but_nothing_beyond_what_it_holds(boss, django_user_model):
    unredacted = Group.objects.create(name="Unredacted")
    unredacted.permissions.add(permission("queues.view_unredacted"))
    alice = user_in(django_user_model, "alice", "Viewer")
    data = change_form(boss, alice)
    data["groups"] = [str(Group.objects.get(name="Operator").pk)]
    assert boss.post(f"/admin/auth/user/{alice.pk}/change/", data).status_code == 302
    assert list(alice.groups.values_list("name", flat=True)) == ["Operator"]
    data["groups"] = [str(Group.objects.get(name="Operator").pk), str(unredacted.pk)]
    answer = boss.post(f"/admin/auth/user/{alice.pk}/change/", data)
    assert answer.status_code == 200 and "errorlist" in answer.content.decode()
    assert list(alice.groups.values_list("name", flat=True)) == ["Operator"]


def test_an_admin_cannot_take_over_an_account_holding_more_than_it_does(boss, django_user_model):
    root = django_user_model.objects.create_superuser("root", password=PASSWORD)
    trusted = user_in(django_user_model, "trusted", "Viewer")
    trusted.user_permissions.add(permission("queues.view_unredacted"))
    for account in (root, trusted):
        for page in (
            f"/admin/auth/user/{account.pk}/change/",
            f"/admin/auth/user/{account.pk}/password/",
            f"/admin/auth/user/{account.pk}/delete/",
        ):
            answer = boss.post(
                page,
                {
                    "password1": "taken-over-42x",
                    "password2": "taken-over-42x",
                    "post": "yes",
                    "usable_password": "true",
                },
            )
            assert answer.status_code == 403, f"{page} answered {answer.status_code}"
        account.refresh_from_db()
        assert account.check_password(PASSWORD)


def test_an_admin_cannot_change_what_a_group_grants(boss):
    admin_group = Group.objects.get(name="Admin")
    admin_group.permissions.add(permission("auth.change_group"), permission("auth.add_group"))  # as before this release
    answer = boss.post(
        f"/admin/auth/group/{admin_group.pk}/change/",
        {"name": "Admin", "permissions": [str(permission("queues.view_unredacted").pk)]},
    )
    assert answer.status_code == 403
    assert boss.post("/admin/auth/group/add/", {"name": "Mine"}).status_code == 403
    assert not admin_group.permissions.filter(codename="view_unredacted").exists()


def test_the_admins_audit_entry_redacts_a_deleted_payload_as_the_audit_page_does(boss, settings):
    settings.REDACT_PATHS = [("message", ("card",))]
    entry = AuditEntry.objects.create(
        username="someone",
        action="delete",
        database="main",
        queue_name="orders",
        target={"msg_ids": [1]},
        requested=1,
        affected=1,
        outcome="done",
        deleted_payloads=[{"msg_id": 1, "message": {"card": "4111-secret", "n": 1}}],
    )
    for page in (f"/admin/queues/auditentry/{entry.pk}/change/", "/admin/queues/auditentry/", f"/audit/{entry.pk}/"):
        answer = boss.get(page)
        assert answer.status_code == 200, page
        assert "4111-secret" not in answer.content.decode(), page
    assert "[redacted]" in boss.get(f"/admin/queues/auditentry/{entry.pk}/change/").content.decode()


# Smaller protections.


def test_a_login_losing_its_last_scoped_role_sees_less_never_more(client, django_user_model):
    from queues.models import AlertEpisode

    own_database = Group.objects.create(name="main: Viewer")
    user = user_in(django_user_model, "narrow", "main: Viewer")
    client.force_login(user)
    assert client.get("/").status_code == 200
    user.groups.remove(own_database)
    AlertEpisode.objects.create(
        database="main",
        rule="r",
        queue_name="q",
        measure="visible",
        threshold=1,
        state=AlertEpisode.FIRING,
        pending_since="2026-01-01T00:00:00Z",
    )
    for path in ("/", "/alerts/", "/audit/", "/api/v1/queues/"):
        assert client.get(path).status_code == 403, path
    refused = parse(client.get("/").content.decode())
    assert not refused.select("[data-firing-alerts]"), "the 403 page tells of the database's alerts"
    assert "test_" not in refused.select_one("header").get_text(), "the 403 page names the database's host"


def test_pages_and_answers_with_payloads_are_never_cached(operator_client, make_queue, django_user_model):
    make_queue("cached", messages=1)
    from queues.tokens import issue_token

    token = issue_token(django_user_model.objects.get(username="operator-user"))[1]
    for path in (
        "/queues/cached/messages/",
        "/queues/cached/messages/1/",
        "/queues/cached/messages/1/raw/",
        "/queues/cached/",
        "/audit/",
    ):
        assert "no-store" in operator_client.get(path)["Cache-Control"], path
    for path in ("/api/v1/queues/cached/messages/", "/api/v1/queues/cached/messages/1/"):
        answer = operator_client.get(path, headers={"Authorization": f"Token {token}"})
        assert "no-store" in answer["Cache-Control"], path


def test_a_sign_in_lasts_twelve_hours_unless_set(client, django_user_model, settings):
    user_in(django_user_model, "daily", "Viewer")
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    signed_in_answer = client.post("/login/", {"username": "daily", "password": PASSWORD})
    assert signed_in_answer.cookies["sessionid"]["max-age"] == 12 * 3600


def test_gunicorn_trusts_a_forwarded_scheme_only_when_told_to(pgmq_database_url, tmp_path):
    import http.client
    from urllib.parse import urlsplit

    def answer(base_url: str):
        parts = urlsplit(base_url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        connection.request("GET", "/login/", headers={"X-Forwarded-Proto": "https", "Host": "127.0.0.1"})
        response = connection.getresponse()
        return response.status, response.getheader("Location")

    with gunicorn(pgmq_database_url, tmp_path, DASHBOARD_HTTPS="1") as base_url:
        status, location = answer(base_url)
        assert status == 301 and location.startswith("https://"), "a client's header made plain http count as https"
    with gunicorn(
        pgmq_database_url, tmp_path, DASHBOARD_HTTPS="1", DASHBOARD_PROXY_SSL_HEADER="X-Forwarded-Proto"
    ) as base_url:
        assert answer(base_url)[0] == 200

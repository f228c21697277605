"""Who gets in: sign-in on every page but the health check, failed sign-ins slowed down, the
optional reverse-proxy sign-in, and the production settings (HTTPS, HSTS, CSP, framing)."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import urllib.parse

import pytest
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver
from playwright.sync_api import expect

from tests.conftest import BASE_DIR, gunicorn, sign_in, uses_databases
from tests.pages import parse

# Paths that answer without a sign-in, on purpose.
OPEN = {"login", "healthz", "metrics"}  # metrics: a bearer token instead (tests/test_metrics.py)


def every_route(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple[str, str]]:
    """(name, path) of every route of the dashboard, its converters filled with a plausible value."""
    routes = []
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if route.startswith("admin/"):
                continue  # Django's admin signs in on its own page: checked below
            if route.startswith("api/"):
                continue  # the API answers 401 without a token, its schema is public: tests/test_api.py
            routes += every_route(pattern, route)
        elif isinstance(pattern, URLPattern) and pattern.name not in OPEN:
            path = route.replace("<queue:queue_name>", "orders").replace("<int:msg_id>", "1")
            path = path.replace("<int:job_id>", "1").replace("<int:entry_id>", "1")
            assert "<" not in path, f"a converter this test does not fill: {route}"
            routes.append((pattern.name, "/" + path))
    return routes


@uses_databases
@pytest.mark.parametrize(("name", "path"), every_route())
def test_every_page_and_endpoint_needs_a_sign_in(client, make_queue, pgmq_sql, name, path):
    make_queue("orders", messages=1)
    for response in (client.get(path), client.post(path, {"confirmed": "1", "action": "delete", "msg_id": "1"})):
        assert response.status_code == 302, f"{name} answered {response.status_code} without a sign-in"
        assert response["Location"].startswith("/login/?next=")
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_orders").fetchone()[0] == 1


@uses_databases
def test_the_admin_and_the_health_check(client):
    assert client.get("/admin/").status_code == 302
    assert client.get("/healthz").status_code == 200  # probes need no sign-in


def sign_in_attempt(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


@uses_databases
def test_failed_sign_ins_slow_down_that_name_from_that_address(client, django_user_model, settings, clock):
    django_user_model.objects.create_user("alice", password="alice-real-password-1")
    django_user_model.objects.create_user("bob", password="bob-real-password-1")
    for _ in range(settings.SIGN_IN_FAILURE_LIMIT - 1):
        response = sign_in_attempt(client, "alice", "guess")
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    waiting = sign_in_attempt(client, "alice", "guess")
    assert waiting.status_code == 429 and waiting["Retry-After"] == "1"
    assert "Too many failed sign-ins" in parse(waiting).select_one("[role=alert]").get_text()
    # Refused even with the right password until the wait is over; another name from the same address is not.
    assert sign_in_attempt(client, "alice", "alice-real-password-1").status_code == 429
    assert sign_in_attempt(client, "bob", "bob-real-password-1").status_code == 302
    client.logout()
    clock.advance(1)
    assert sign_in_attempt(client, "alice", "alice-real-password-1").status_code == 302


@uses_databases
def test_a_successful_sign_in_forgets_the_failures(client, django_user_model, settings):
    django_user_model.objects.create_user("carol", password="carol-real-password-1")
    for _ in range(settings.SIGN_IN_FAILURE_LIMIT - 1):
        sign_in_attempt(client, "carol", "guess")
    assert sign_in_attempt(client, "carol", "carol-real-password-1").status_code == 302
    client.logout()
    assert sign_in_attempt(client, "carol", "guess").status_code == 200  # counting starts again


PROXY_SETTINGS = {
    "REMOTE_USER_HEADER": "X-Forwarded-User",
    "AUTHENTICATION_BACKENDS": [
        "queues.sign_in_limits.SignInLimitBackend",
        "django.contrib.auth.backends.ModelBackend",
        "dashboard.proxy_auth.ProxyHeaderUserBackend",
    ],
}


@uses_databases
def test_the_proxy_header_is_ignored_unless_configured(make_queue):
    make_queue("orders")
    response = Client().get("/", headers={"X-Forwarded-User": "mallory"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")


@uses_databases
def test_a_user_the_proxy_signed_in_gets_in_as_a_viewer(make_queue, django_user_model):
    make_queue("orders", messages=1)
    with override_settings(**PROXY_SETTINGS):
        proxied = Client()  # its middleware is built with the setting on
        assert proxied.get("/", headers={"X-Forwarded-User": "dana"}).status_code == 200
        dana = django_user_model.objects.get(username="dana")
        assert list(dana.groups.values_list("name", flat=True)) == ["Viewer"]
        refused = proxied.post(
            "/queues/orders/act/",
            {"action": "delete", "source": "live", "scope": "selected", "msg_id": "1", "confirmed": "1"},
            headers={"X-Forwarded-User": "dana"},
        )
        assert refused.status_code == 403
        assert Client().get("/", headers={"X-Forwarded-User": ""}).status_code == 302  # empty is no one


def production_environment(**extra: str) -> dict[str, str]:
    test_only = ("DASHBOARD_HTTPS", "DJANGO_DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    environment = {key: value for key, value in os.environ.items() if key not in test_only}
    return {
        **environment,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,dashboard.example.com",
        **extra,
    }


def test_check_deploy_finds_nothing_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=production_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def raw_get(base_url: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """One request, redirects not followed."""
    address = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@uses_databases
def test_production_serves_https_only_with_secure_cookies_hsts_and_a_strict_policy(pgmq_database_url, tmp_path):
    environment = production_environment(DASHBOARD_PROXY_SSL_HEADER="X-Forwarded-Proto")
    with gunicorn(
        pgmq_database_url,
        tmp_path,
        **{
            key: environment[key] for key in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DASHBOARD_PROXY_SSL_HEADER")
        },
        DASHBOARD_HTTPS="1",
    ) as base:
        plain = raw_get(base, "/login/")
        assert plain.status == 301 and plain.getheader("Location") == f"{base.replace('http:', 'https:')}/login/"
        assert raw_get(base, "/healthz").status == 200  # probes speak plain http inside the cluster

        secure = raw_get(base, "/login/", {"X-Forwarded-Proto": "https"})
        assert secure.status == 200
        assert secure.getheader("Strict-Transport-Security").startswith("max-age=31536000")
        assert secure.getheader("X-Frame-Options") == "DENY"
        assert secure.getheader("X-Content-Type-Options") == "nosniff"
        policy = dict(
            directive.strip().split(" ", 1)
            for directive in secure.getheader("Content-Security-Policy").split(";")
            if directive.strip()
        )
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        cookies = secure.headers.get_all("Set-Cookie")
        assert cookies and all("Secure" in cookie and "SameSite=Lax" in cookie for cookie in cookies)


@uses_databases
@pytest.mark.browser
def test_no_page_needs_anything_the_content_security_policy_refuses(
    make_queue, pgmq_sql, admin_user, page, dashboard_server
):
    # (the page comes after make_queue: it is closed before the queue is dropped, so no refresh sees it go)
    make_queue("guarded", messages=3)
    pgmq_sql.execute("SELECT pgmq.archive('guarded', 1::bigint)")
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    sign_in(page, dashboard_server, admin_user.username, "password")
    for path in (
        "/",
        "/queues/guarded/",
        "/queues/guarded/messages/",
        "/queues/guarded/messages/?source=archive",
        "/queues/guarded/messages/2/",
        "/queues/guarded/send/",
        "/audit/",
        "/admin/",
    ):
        response = page.goto(dashboard_server + path)
        assert response.status == 200 and "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")  # the live regions and charts have run
    page.goto(dashboard_server + "/queues/guarded/")
    expect(page.locator("canvas[data-chart=age]")).to_be_visible()
    assert violations == []

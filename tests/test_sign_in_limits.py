"""Sign-in limits an attacker cannot turn against anyone else: a back-off per (name, address) and a
larger budget per address, counted by the address the trusted proxy reports, the same on Django's
admin sign-in; and the client-address rule itself."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.test import Client, RequestFactory, override_settings
from django.utils import timezone

from dashboard.client_address import client_address
from queues.models import SignInFailures
from tests.conftest import uses_databases
from tests.http_client import HttpSession
from tests.pages import parse
from tests.test_configuration import assert_one_line_error, run_manage

INGRESS = "10.0.0.2"  # what gunicorn sees as REMOTE_ADDR behind the ingress, for every client
BEHIND_ONE_PROXY = override_settings(CLIENT_IP_HEADER="X-Forwarded-For", TRUSTED_PROXIES=1)
WRONG_PASSWORD = "Please enter a correct username and password"


@pytest.fixture
def fast_passwords(settings) -> None:
    """Users made in the test get a cheap hash: these tests are about counting, not hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sign_in(
    client: Client,
    username: str,
    password: str,
    *,
    address: str,
    claimed: list[str] | None = None,
    path: str = "/login/",
):
    """A sign-in as the ingress passes it on: from the ingress's own address, with X-Forwarded-For
    holding what the client sent itself (if anything) and then the address the ingress saw."""
    forwarded = ", ".join([*(claimed or []), address])
    return client.post(
        path, {"username": username, "password": password}, headers={"X-Forwarded-For": forwarded}, REMOTE_ADDR=INGRESS
    )


def alert(response_or_html) -> str:
    return " ".join(parse(response_or_html).select_one("[role=alert]").get_text().split())


@uses_databases
@BEHIND_ONE_PROXY
def test_an_attackers_failures_from_one_address_do_not_stop_the_victim_at_another(
    django_user_model, settings, fast_passwords
):
    django_user_model.objects.create_user("victim", password="victim-real-password-1")
    attacker = Client()
    answers = [
        sign_in(attacker, "victim", f"guess-{n}", address="203.0.113.66").status_code
        for n in range(settings.SIGN_IN_FAILURE_LIMIT + 3)
    ]
    assert answers[-1] == 429, answers  # the attacker is slowed down...
    victim = sign_in(Client(), "victim", "victim-real-password-1", address="198.51.100.7")
    assert victim.status_code == 302 and victim["Location"] == "/"  # ...and the victim, elsewhere, is not


@uses_databases
@override_settings(SIGN_IN_MAX_DELAY_SECONDS=8)
def test_failures_back_off_doubling_and_the_right_password_works_after_the_wait(
    client, django_user_model, settings, clock, fast_passwords
):
    django_user_model.objects.create_user("carol", password="carol-real-password-1")
    for _ in range(settings.SIGN_IN_FAILURE_LIMIT - 1):
        response = client.post("/login/", {"username": "carol", "password": "guess"})
        assert response.status_code == 200 and WRONG_PASSWORD in response.content.decode()
    waits = []
    for _ in range(5):  # each failure past the limit: 1, 2, 4, 8 s, then no longer than the cap
        failed = client.post("/login/", {"username": "carol", "password": "guess"})
        assert failed.status_code == 429
        waits.append(int(failed["Retry-After"]))
        assert (
            f"Wrong username or password. Too many failed sign-ins for this name from your address: try again "
            f"in {waits[-1]} second" in alert(failed)
        )
        clock.advance(waits[-1])
    assert waits == [1, 2, 4, 8, 8]

    client.post("/login/", {"username": "carol", "password": "guess"})  # another failure: wait 8 s
    clock.advance(7)
    early = client.post("/login/", {"username": "carol", "password": "carol-real-password-1"})
    assert early.status_code == 429 and early["Retry-After"] == "1"  # trying early does not push the wait back
    assert "This attempt was not checked" in parse(early).get_text()
    clock.advance(1)
    signed_in = client.post("/login/", {"username": "carol", "password": "carol-real-password-1"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/"
    client.logout()
    assert client.post("/login/", {"username": "carol", "password": "guess"}).status_code == 200  # forgotten


@uses_databases
@BEHIND_ONE_PROXY
def test_one_wrong_password_for_each_of_many_names_from_one_address_ends_in_429(
    django_user_model, settings, fast_passwords
):
    django_user_model.objects.create_user("mallory", password="mallorys-own-password-1")
    stuffer = Client()
    for n in range(settings.SIGN_IN_ADDRESS_FAILURE_LIMIT - 1):
        assert sign_in(stuffer, f"user-{n}", "Summer2026!", address="203.0.113.66").status_code == 200
        if n == 20:  # signing in to an account of one's own does not reset the address's budget
            assert sign_in(stuffer, "mallory", "mallorys-own-password-1", address="203.0.113.66").status_code == 302
            stuffer.logout()
    limited = sign_in(stuffer, "user-last", "Summer2026!", address="203.0.113.66")
    assert limited.status_code == 429 and limited["Retry-After"] == "1"
    assert "Too many failed sign-ins from your address, for any name" in alert(limited)
    assert sign_in(stuffer, "user-next", "Summer2026!", address="203.0.113.66").status_code == 429
    # Someone at another address behind the same ingress is not limited.
    assert sign_in(Client(), "user-next", "Summer2026!", address="198.51.100.7").status_code == 200


@uses_databases
def test_the_admin_sign_in_counts_and_is_limited_like_the_dashboards(
    client, django_user_model, settings, clock, fast_passwords
):
    django_user_model.objects.create_user("root", password="root-real-password-1", is_staff=True)
    pages = ["/login/", "/admin/login/"]
    for n in range(settings.SIGN_IN_FAILURE_LIMIT - 1):
        assert client.post(pages[n % 2], {"username": "root", "password": "guess"}).status_code == 200
    on_admin = client.post("/admin/login/", {"username": "root", "password": "guess"})
    assert on_admin.status_code == 429 and on_admin["Retry-After"] == "1"
    assert "Too many failed sign-ins for this name" in alert(on_admin)
    on_dashboard = client.post("/login/", {"username": "root", "password": "root-real-password-1"})
    assert on_dashboard.status_code == 429 and on_dashboard["Retry-After"] == "1"
    clock.advance(1)
    signed_in = client.post("/admin/login/?next=/admin/", {"username": "root", "password": "root-real-password-1"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/admin/"


@uses_databases
@BEHIND_ONE_PROXY
def test_a_client_cannot_pick_its_address_by_sending_x_forwarded_for(django_user_model, settings, fast_passwords):
    django_user_model.objects.create_user("victim", password="victim-real-password-1")
    attacker = Client()
    answers = []
    for n in range(settings.SIGN_IN_FAILURE_LIMIT + 3):
        # Each attempt claims to come from the victim's address, or from a new one each time.
        claimed = ["198.51.100.7"] if n % 2 else [f"192.0.2.{n}", "198.51.100.7"]
        answers.append(sign_in(attacker, "victim", f"guess-{n}", address="203.0.113.66", claimed=claimed).status_code)
    assert answers[-1] == 429, answers  # still counted as the address the ingress saw
    victim = sign_in(Client(), "victim", "victim-real-password-1", address="198.51.100.7")
    assert victim.status_code == 302 and victim["Location"] == "/"


@uses_databases
@BEHIND_ONE_PROXY
def test_addresses_of_one_ipv6_network_count_as_one(django_user_model, settings, fast_passwords):
    django_user_model.objects.create_user("victim", password="victim-real-password-1")
    answers = [
        sign_in(Client(), "victim", "guess", address=f"2001:db8:5:7::{n:x}").status_code
        for n in range(1, settings.SIGN_IN_FAILURE_LIMIT + 1)
    ]
    assert answers[-1] == 429, answers
    elsewhere = sign_in(Client(), "victim", "victim-real-password-1", address="2001:db8:5:8::1")
    assert elsewhere.status_code == 302


@uses_databases
@BEHIND_ONE_PROXY
@pytest.mark.parametrize(
    ("username", "forwarded"),
    [
        *((name, "203.0.113.5") for name in ("nul\x00byte", "x" * 10_000, "Ünïcode 😀 '; DROP TABLE x; --", " ")),
        *(("victim", address) for address in ("\x00", "x" * 10_000, "999.1.1.1", "[::1", "1.2.3.4, , ,")),
    ],
)
def test_hostile_names_and_addresses_get_a_sign_in_page_never_a_server_error(
    client, username, forwarded, fast_passwords
):
    for path in ("/login/", "/admin/login/"):
        response = client.post(
            path, {"username": username, "password": "guess"}, headers={"X-Forwarded-For": forwarded}
        )
        assert response.status_code in (200, 429), response.status_code


@uses_databases
def test_parallel_guesses_after_the_wait_get_one_password_checked(dashboard_server, django_user_model, settings):
    django_user_model.objects.create_user("victim", password="victim-real-password-1")
    # Deep in the back-off: the last failure's wait (the cap) ended 2 s ago.
    last_failed_at = timezone.now() - timedelta(seconds=settings.SIGN_IN_MAX_DELAY_SECONDS + 2)
    SignInFailures.objects.create(
        address="127.0.0.1", username=None, failures=settings.SIGN_IN_FAILURE_LIMIT + 9, last_failed_at=last_failed_at
    )
    SignInFailures.objects.create(
        address="127.0.0.1",
        username="victim",
        failures=settings.SIGN_IN_FAILURE_LIMIT + 9,
        last_failed_at=last_failed_at,
    )
    sessions = [HttpSession(dashboard_server) for _ in range(8)]
    for session in sessions:
        session.get("/login/")  # the CSRF cookie
    start = threading.Barrier(len(sessions))
    answers = []

    def guess(session: HttpSession, n: int) -> None:
        start.wait(timeout=30)
        answers.append(session.post("/login/", {"username": "victim", "password": f"guess-{n}"}))

    threads = [threading.Thread(target=guess, args=(session, n)) for n, session in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [answer.status for answer in answers] == [429] * len(sessions)
    checked = [answer for answer in answers if "This attempt was not checked" not in answer.text]
    assert len(checked) == 1, [alert(answer.text) for answer in answers]
    assert int(checked[0].headers["Retry-After"]) == settings.SIGN_IN_MAX_DELAY_SECONDS


@pytest.mark.parametrize(
    ("configured", "forwarded", "expected"),
    [
        ({}, "203.0.113.5", "10.0.0.2"),  # no header configured: whatever the client sends is ignored
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "198.51.100.7, 203.0.113.5", "203.0.113.5"),
        (
            {"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 2},
            "1.1.1.1, 203.0.113.5, 10.0.0.9",
            "203.0.113.5",
        ),
        # Fewer hops than proxies: it did not come through all of them, so only the peer is known.
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 2}, "203.0.113.5", "10.0.0.2"),
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "", "10.0.0.2"),
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "203.0.113.5, not-an-address", "10.0.0.2"),
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "203.0.113.5:5678", "203.0.113.5"),
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "[2001:DB8::0:1]:443", "2001:db8::1"),
        ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_the_client_address_is_the_one_the_trusted_proxy_reports(configured, forwarded, expected):
    request = RequestFactory().post("/login/", headers={"X-Forwarded-For": forwarded}, REMOTE_ADDR="10.0.0.2")
    with override_settings(**configured):
        assert client_address(request) == expected


def test_a_real_ip_header_set_by_the_proxy_works_too():
    request = RequestFactory().post("/login/", headers={"X-Real-IP": "203.0.113.5"}, REMOTE_ADDR="10.0.0.2")
    with override_settings(CLIENT_IP_HEADER="X-Real-IP", TRUSTED_PROXIES=1):
        assert client_address(request) == "203.0.113.5"


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({"DASHBOARD_CLIENT_IP_HEADER": "X_Forwarded_For"}, "DASHBOARD_CLIENT_IP_HEADER must be a header name"),
        ({"DASHBOARD_TRUSTED_PROXIES": "2"}, "DASHBOARD_TRUSTED_PROXIES needs DASHBOARD_CLIENT_IP_HEADER"),
        (
            {"DASHBOARD_CLIENT_IP_HEADER": "X-Forwarded-For", "DASHBOARD_TRUSTED_PROXIES": "0"},
            "DASHBOARD_TRUSTED_PROXIES must be at least 1",
        ),
        (
            {"DASHBOARD_LOGIN_FAILURE_WINDOW_MINUTES": "5", "DASHBOARD_LOGIN_MAX_DELAY_SECONDS": "300"},
            "must be longer than DASHBOARD_LOGIN_MAX_DELAY_SECONDS",
        ),
        ({"DASHBOARD_LOGIN_LOCKOUT_MINUTES": "15"}, "DASHBOARD_LOGIN_LOCKOUT_MINUTES is gone"),
    ],
)
def test_sign_in_settings_that_cannot_work_stop_the_dashboard_in_one_line(environment, complaint):
    assert_one_line_error(run_manage("check", **environment), complaint)

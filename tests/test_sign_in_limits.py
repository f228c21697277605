"""The client's address as the trusted proxy reports it, for the sign-in limits."""
from __future__ import annotations

import pytest
from django.test import RequestFactory, override_settings

from dashboard.client_address import client_address
from tests.test_configuration import assert_one_line_error, run_manage


@pytest.mark.parametrize(("configured", "forwarded", "expected"), [
    ({}, "203.0.113.5", "10.0.0.2"),  # no header configured: whatever the client sends is ignored
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "198.51.100.7, 203.0.113.5", "203.0.113.5"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 2}, "1.1.1.1, 203.0.113.5, 10.0.0.9", "203.0.113.5"),
    # Fewer hops than proxies: it did not come through all of them, so only the peer is known.
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 2}, "203.0.113.5", "10.0.0.2"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "", "10.0.0.2"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "203.0.113.5, not-an-address", "10.0.0.2"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "203.0.113.5:5678", "203.0.113.5"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "[2001:DB8::0:1]:443", "2001:db8::1"),
    ({"CLIENT_IP_HEADER": "X-Forwarded-For", "TRUSTED_PROXIES": 1}, "::ffff:203.0.113.5", "203.0.113.5"),
])
def test_the_client_address_is_the_one_the_trusted_proxy_reports(configured, forwarded, expected):
    request = RequestFactory().post("/login/", headers={"X-Forwarded-For": forwarded}, REMOTE_ADDR="10.0.0.2")
    with override_settings(**configured):
        assert client_address(request) == expected


def test_a_real_ip_header_set_by_the_proxy_works_too():
    request = RequestFactory().post("/login/", headers={"X-Real-IP": "203.0.113.5"}, REMOTE_ADDR="10.0.0.2")
    with override_settings(CLIENT_IP_HEADER="X-Real-IP", TRUSTED_PROXIES=1):
        assert client_address(request) == "203.0.113.5"


@pytest.mark.parametrize(("environment", "complaint"), [
    ({"DASHBOARD_CLIENT_IP_HEADER": "X_Forwarded_For"}, "DASHBOARD_CLIENT_IP_HEADER must be a header name"),
    ({"DASHBOARD_TRUSTED_PROXIES": "2"}, "DASHBOARD_TRUSTED_PROXIES needs DASHBOARD_CLIENT_IP_HEADER"),
    ({"DASHBOARD_CLIENT_IP_HEADER": "X-Forwarded-For", "DASHBOARD_TRUSTED_PROXIES": "0"},
     "DASHBOARD_TRUSTED_PROXIES must be at least 1"),
])
def test_sign_in_settings_that_cannot_work_stop_the_dashboard_in_one_line(environment, complaint):
    assert_one_line_error(run_manage("check", **environment), complaint)

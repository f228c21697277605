"""Static files come from the dashboard itself (whitenoise), never from a CDN at page load."""

from __future__ import annotations

from django.templatetags.static import static

from dashboard.static_files import collect_static
from tests.conftest import BASE_DIR, uses_databases
from tests.http_client import HttpSession

pytestmark = uses_databases


def test_chart_js_is_served_pinned_and_cacheable(dashboard_server):
    response = HttpSession(dashboard_server).get(static("pgmq_dashboard/vendor/chart.umd.min.js"))
    assert response.status == 200
    assert "Chart.js v4.6.1" in response.text[:200]
    assert "immutable" in response.headers["Cache-Control"]


def test_htmx_comes_from_django_htmxs_own_static_files(dashboard_server, signed_in_client):
    html = signed_in_client.get("/").content.decode()
    htmx_url = static("django_htmx/htmx-2.min.js")
    assert f'src="{htmx_url}"' in html
    assert HttpSession(dashboard_server).get(htmx_url).status == 200


def test_no_page_loads_anything_from_another_host(signed_in_client, make_queue):
    make_queue("local_only", messages=1)
    for path in ("/", "/queues/local_only/", "/login/"):
        html = signed_in_client.get(path).content.decode()
        assert 'src="http' not in html and 'href="http' not in html, path


def test_a_start_with_everything_collected_collects_nothing():
    """Each `make run`, `pgmq-dashboard` and test run asks; collecting again while a server reads the
    files made a page fail (a hashed file deleted and rewritten under it). The pinned Chart.js's
    hidden marker, which collectstatic leaves out, once made every start collect."""
    assert any(path.name.startswith(".") for path in (BASE_DIR / "static" / "vendor").iterdir())
    # The suite collected at its start (tests/conftest.py): nothing has changed since.
    assert collect_static() is False

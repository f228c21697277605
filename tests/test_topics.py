"""The topics page (pgmq 1.11+): the bindings, pattern -> queue, and where a routing key would go
by pgmq's own routing (pgmq.test_routing)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.conftest import client_with_role, uses_databases
from tests.pages import parse

pytestmark = uses_databases


@pytest.fixture
def viewer_client(client, django_user_model):
    return client_with_role(client, django_user_model, "Viewer")


@pytest.fixture
def bound(make_queue, pgmq_sql):
    """Three queues bound to topics, one of them with an awkward name."""
    for name in ("eu_orders", "every order", "payments"):
        make_queue(name)
    pgmq_sql.execute("SELECT pgmq.bind_topic('orders.eu.*', 'eu_orders')")
    pgmq_sql.execute("SELECT pgmq.bind_topic('orders.#', 'every order')")
    pgmq_sql.execute("SELECT pgmq.bind_topic('payments.*', 'payments')")


def routes(page) -> dict[str, str]:
    """Queue -> the pattern that sends the key there, as the answer lists them."""
    return {
        row.select_one("a").get_text(strip=True): row.select_one("code").get_text(strip=True)
        for row in page.select("[data-routes] tbody tr")
    }


def test_a_viewer_sees_the_bindings_each_linked_to_its_queue(viewer_client, bound):
    page = parse(viewer_client.get("/topics/"))

    rows = {
        row.select_one("code").get_text(strip=True): row.select_one("a")
        for row in page.select("[data-bindings] tbody tr")
    }
    assert {pattern: link.get_text(strip=True) for pattern, link in rows.items()} == {
        "orders.#": "every order",
        "orders.eu.*": "eu_orders",
        "payments.*": "payments",
    }
    assert rows["orders.#"]["href"] == "/queues/every%20order/"
    assert page.select_one("nav.topnav a[href='/topics/']").get_text(strip=True) == "Topics"


def test_a_routing_key_lists_the_queues_pgmq_would_send_it_to(viewer_client, bound, pgmq_sql):
    page = parse(viewer_client.get("/topics/?key=orders.eu.created"))

    assert routes(page) == {"eu_orders": "orders.eu.*", "every order": "orders.#"}
    # Only tried: nothing was sent to any queue.
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_eu_orders").fetchone()[0] == 0


def test_a_key_no_binding_matches_says_it_would_go_nowhere(viewer_client, bound):
    response = viewer_client.get("/topics/?key=invoices.paid")
    assert response.status_code == 200
    page = parse(response)
    assert routes(page) == {}
    assert "would go nowhere" in page.select_one("[data-no-route]").get_text()


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("", "Give a routing key"),
        ("   ", "Give a routing key"),
        ("a" * 10_000, "at most 255 characters"),
        ("orders..eu", "consecutive dots"),  # pgmq's own rules, in pgmq's words
        ("orders.*", "invalid characters"),
        (".orders", "cannot start with a dot"),
        ("orders\x00eu", "Null characters are not allowed"),
    ],
)
def test_a_key_that_cannot_be_routed_is_a_400_saying_why(viewer_client, bound, key, said):
    response = viewer_client.get(f"/topics/?key={quote(key)}")
    assert response.status_code == 400
    errors = parse(response).select_one("[data-routing-errors]").get_text(" ", strip=True)
    assert said in errors
    # The page still shows the bindings.
    assert parse(response).select("[data-bindings] tbody tr[data-binding]")


def test_the_queue_page_links_its_bindings_to_the_topics_page(viewer_client, bound):
    facts = parse(viewer_client.get("/queues/eu_orders/")).select_one("[data-topic-bindings]")
    link = facts.select_one("a")
    assert link.get_text(strip=True) == "orders.eu.*"
    assert link["href"] == "/topics/"


@pytest.fixture
def pgmq_without_topics(pgmq_sql):
    """The watched database as a pgmq before 1.11 has it: no pgmq.topic_bindings."""
    pgmq_sql.execute("ALTER TABLE pgmq.topic_bindings RENAME TO topic_bindings_away")
    try:
        yield
    finally:
        pgmq_sql.execute("ALTER TABLE pgmq.topic_bindings_away RENAME TO topic_bindings")


def test_without_topics_the_page_says_which_pgmq_has_them_and_the_header_has_no_link(
    viewer_client, make_queue, pgmq_without_topics
):
    response = viewer_client.get("/topics/?key=orders.eu.created")
    assert response.status_code == 404
    assert "pgmq 1.11" in parse(response).select_one("main").get_text()
    overview = parse(viewer_client.get("/"))
    assert overview.select_one("nav.topnav a[href='/topics/']") is None

"""The overview: every queue in pgmq.meta with its backlog, true to the tables."""
from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import AWKWARD_NAMES, uses_databases
from tests.pages import number, overview_rows, parse, stat

pytestmark = uses_databases


def backlog_by_sql(pgmq_sql, name: str) -> int:
    table = pgmq_sql.execute("SELECT pgmq.format_table_name(%s, 'q')", [name]).fetchone()[0]
    return pgmq_sql.execute(f'SELECT count(*) FROM pgmq."{table.replace(chr(34), chr(34) * 2)}"').fetchone()[0]


def test_it_requires_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_it_lists_every_queue_with_its_backlog(signed_in_client, make_queue, pgmq_sql):
    make_queue("empty_one")
    make_queue("busy_one", messages=37)
    pgmq_sql.execute("SELECT pgmq.archive('busy_one', ARRAY[1, 2, 3]::bigint[])")

    rows = overview_rows(parse(signed_in_client.get("/")))

    assert rows["empty_one"]["backlog"] == "0"
    assert number(rows["busy_one"]["backlog"]) == backlog_by_sql(pgmq_sql, "busy_one") == 34


def test_names_that_break_naive_sql_or_urls_work_through_the_overview_and_their_links(
        signed_in_client, make_queue, pgmq_sql):
    for count, name in enumerate(AWKWARD_NAMES, start=1):
        make_queue(name, messages=count)

    rows = overview_rows(parse(signed_in_client.get("/")))

    for name in AWKWARD_NAMES:
        assert number(rows[name]["backlog"]) == backlog_by_sql(pgmq_sql, name)
        # The test client decodes one level of %-escapes, as a real server does.
        queue_page = signed_in_client.get(rows[name]["href"])
        assert queue_page.status_code == 200, name
        page = parse(queue_page)
        assert page.select_one("h1.queue-name").get_text() == name
        assert number(stat(page, "backlog")) == backlog_by_sql(pgmq_sql, name)


def test_the_orders_eu_and_with_space_links_are_plain_urls(signed_in_client, make_queue):
    make_queue("Orders-EU", messages=2)
    make_queue("with space", messages=1)
    rows = overview_rows(parse(signed_in_client.get("/")))
    assert rows["Orders-EU"]["href"] == "/queues/Orders-EU/"
    assert rows["with space"]["href"] == "/queues/with%20space/"


def test_queue_names_are_escaped(signed_in_client, make_queue):
    name = "<img src=x onerror=alert(1)>"
    make_queue(name, messages=1)
    html = signed_in_client.get("/").content.decode()
    assert name not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert name in overview_rows(parse(html))


def test_big_queues_show_the_planners_estimate_marked_as_such(signed_in_client, make_queue, pgmq_sql):
    make_queue("small_enough", messages=5)
    make_queue("too_big_to_count", messages=500)
    pgmq_sql.execute("ANALYZE pgmq.q_too_big_to_count")

    with override_settings(EXACT_COUNT_LIMIT=100):
        rows = overview_rows(parse(signed_in_client.get("/")))

    assert rows["small_enough"]["backlog"] == "5"
    assert rows["too_big_to_count"]["backlog"].startswith("≈")
    assert number(rows["too_big_to_count"]["backlog"]) == 500  # just analyzed: the estimate is exact
    assert "estimate" in rows["too_big_to_count"]["backlog_title"]


def test_a_never_analyzed_big_table_is_estimated_from_its_size(signed_in_client, make_queue, pgmq_sql):
    make_queue("fresh_and_big", messages=3000)
    assert pgmq_sql.execute("SELECT reltuples FROM pg_class WHERE relname = 'q_fresh_and_big'").fetchone()[0] < 0

    with override_settings(EXACT_COUNT_LIMIT=100):
        backlog = overview_rows(parse(signed_in_client.get("/")))["fresh_and_big"]["backlog"]

    assert backlog.startswith("≈")
    assert 300 < number(backlog) < 30_000  # an order of magnitude, which is all an estimate promises


def test_the_refresh_returns_only_the_table(signed_in_client, make_queue):
    make_queue("refreshed", messages=4)
    response = signed_in_client.get("/", headers={"HX-Request": "true", "HX-Target": "queue-table"})
    html = response.content.decode()
    assert not html.lstrip().startswith("<!doctype")
    assert html.lstrip().startswith('<section id="queue-table"')
    assert overview_rows(parse(html))["refreshed"]["backlog"] == "4"


def test_an_empty_database_says_how_to_create_a_queue(signed_in_client, pgmq_sql):
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta").fetchone()[0] == 0
    page = parse(signed_in_client.get("/"))
    assert "No queues in this database yet" in page.select_one("#queue-table").get_text()


@pytest.mark.parametrize("path", ["/queues/never-created/", "/queues/%252F/"])
def test_an_unknown_queue_is_a_404_naming_it(signed_in_client, path):
    response = signed_in_client.get(path)
    assert response.status_code == 404
    assert "There is no queue named" in response.content.decode()

"""One message: its JSON pretty and escaped, its timings by the database's clock, its SQL."""

from __future__ import annotations

import json

import psycopg
import pytest

from queues.templatetags.queue_format import DISPLAY_LIMIT_CHARS
from tests.conftest import uses_databases
from tests.pages import body, parse

pytestmark = uses_databases


@pytest.fixture
def one_message(make_queue, pgmq_sql) -> str:
    make_queue("detailed")
    pgmq_sql.execute(
        "SELECT pgmq.send('detailed', %s::jsonb, %s::jsonb)",
        [
            json.dumps({"id": 7, "note": "<script>alert(1)</script>", "nested": {"ok": True}}),
            json.dumps({"trace_id": "abc", "x-pgmq-group": "g1"}),
        ],
    )
    return "detailed"


def test_it_shows_message_and_headers_pretty_printed_and_escaped(signed_in_client, one_message):
    response = signed_in_client.get("/queues/detailed/messages/1/")
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    page = parse(response)
    blocks = page.select("pre.json")
    assert json.loads(blocks[0].get_text()) == {"id": 7, "note": "<script>alert(1)</script>", "nested": {"ok": True}}
    assert json.loads(blocks[1].get_text()) == {"trace_id": "abc", "x-pgmq-group": "g1"}
    assert blocks[0].select_one("span.nt") is not None  # highlighted: keys are marked up
    copied = json.loads(page.select_one("#message-json").get_text())  # the text the Copy button copies
    assert json.loads(copied)["note"] == "<script>alert(1)</script>"


def test_the_countdown_to_vt_comes_from_the_database(signed_in_client, one_message, pgmq_sql):
    pgmq_sql.execute("SELECT * FROM pgmq.read('detailed', 90, 1)")
    countdown = parse(signed_in_client.get("/queues/detailed/messages/1/")).select_one("[data-countdown]")
    left = float(countdown["data-countdown"])
    truth = pgmq_sql.execute("SELECT extract(epoch FROM vt - now()) FROM pgmq.q_detailed").fetchone()[0]
    assert truth - 2 <= left <= truth + 2
    assert 80 < left <= 90


def test_an_archived_message_is_found_in_the_archive(signed_in_client, one_message, pgmq_sql):
    pgmq_sql.execute("SELECT pgmq.archive('detailed', 1::bigint)")
    page = parse(signed_in_client.get("/queues/detailed/messages/1/"))
    assert page.select_one("h1 .state").get_text() == "archived"
    assert page.select_one("#fetch-sql").get_text() == 'SELECT * FROM "pgmq"."a_detailed" WHERE msg_id = 1;'


def test_the_sql_for_the_row_quotes_awkward_table_names(signed_in_client, make_queue, pgmq_sql):
    name = 'say "hi" now'
    make_queue(name, messages=1)
    sql = parse(signed_in_client.get("/queues/say%20%22hi%22%20now/messages/1/")).select_one("#fetch-sql").get_text()
    assert sql == 'SELECT * FROM "pgmq"."q_say ""hi"" now" WHERE msg_id = 1;'
    assert pgmq_sql.execute(sql.rstrip(";")).fetchone()[0] == 1  # it runs as printed


def test_a_missing_message_is_a_404_saying_why(signed_in_client, one_message):
    response = signed_in_client.get("/queues/detailed/messages/999/")
    assert response.status_code == 404
    assert "Message 999 is not in queue" in response.content.decode()


def test_a_huge_message_is_shown_cut_with_a_link_to_the_whole(signed_in_client, make_queue, pgmq_sql):
    make_queue("huge")
    payload = {"blob": "x" * (2 * DISPLAY_LIMIT_CHARS)}
    pgmq_sql.execute("SELECT pgmq.send('huge', %s::jsonb)", [json.dumps(payload)])
    page = parse(signed_in_client.get("/queues/huge/messages/1/"))
    assert "the page shows its beginning" in page.get_text()
    assert len(page.select_one("pre.json").get_text().rstrip("\n")) <= DISPLAY_LIMIT_CHARS
    raw = signed_in_client.get(page.select_one("a[href*='/raw/']")["href"])
    assert raw.status_code == 200 and json.loads(body(raw)) == payload


def test_the_downloads_are_the_whole_message_and_headers(signed_in_client, one_message):
    raw = signed_in_client.get("/queues/detailed/messages/1/raw/")
    assert raw["Content-Type"] == "application/json"
    assert json.loads(body(raw)) == {"id": 7, "note": "<script>alert(1)</script>", "nested": {"ok": True}}
    headers = signed_in_client.get("/queues/detailed/messages/1/raw/?part=headers")
    assert json.loads(body(headers)) == {"trace_id": "abc", "x-pgmq-group": "g1"}


def test_a_message_of_an_old_pgmq_without_headers(signed_in_client, make_queue, pgmq_sql):
    make_queue("headerless", messages=1)
    pgmq_sql.execute("ALTER TABLE pgmq.q_headerless DROP COLUMN headers, DROP COLUMN last_read_at")
    page = parse(signed_in_client.get("/queues/headerless/messages/1/"))
    assert [h2.get_text() for h2 in page.select("h2") if not h2.find_parent("dialog")] == [
        "Message",
        "SQL for this row",
    ]


def test_viewing_a_message_does_not_read_it(signed_in_client, one_message, pgmq_database_url):
    signed_in_client.get("/queues/detailed/messages/1/")
    with psycopg.connect(pgmq_database_url) as connection:
        assert connection.execute("SELECT read_ct FROM pgmq.q_detailed").fetchone()[0] == 0


def test_numbers_are_shown_and_given_exactly_as_stored(signed_in_client, make_queue, pgmq_sql):
    make_queue("precise")
    exact = '{"price": 0.12345678901234567890, "big": 12345678901234567890, "scale": 1.10}'
    pgmq_sql.execute("SELECT pgmq.send('precise', %s::jsonb)", [exact])
    page = parse(signed_in_client.get("/queues/precise/messages/1/"))
    shown = page.select_one("pre.json").get_text()
    copied = json.loads(page.select_one("#message-json").get_text())
    raw = body(signed_in_client.get("/queues/precise/messages/1/raw/")).decode()
    for text in (shown, copied, raw):
        assert "0.12345678901234567890" in text and "12345678901234567890" in text and "1.10" in text

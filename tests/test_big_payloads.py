"""One huge message cannot take a worker's memory: pgmq stores any jsonb, and a 40 MB one is one
`send` away. Lists and the API's pages leave it out (saying how big it is), the message page holds
its beginning, and the downloads, the API's single message and the exports stream it from the
database in chunks, byte for byte PostgreSQL's `message::text`. Python's own allocations are
measured (tracemalloc), not the process's: the figure does not depend on the machine's load.
(The memory benchmark, `make bench-memory`, measures whole workers under concurrent readers.)"""

from __future__ import annotations

import csv
import io
import json
import sys
import tracemalloc

import pytest

from queues.pgmq import Queue
from queues.selectors import exports
from tests.conftest import uses_databases
from tests.pages import body, parse

pytestmark = uses_databases

MB = 1024 * 1024
# 40 MB of JSON, with letters of two and three bytes in UTF-8 (so characters and bytes differ),
# numbers a float would change, and a quote and a backslash for CSV and JSON escaping.
HUGE = (
    '{"blob": "' + "x" * (30 * MB) + '", "letters": "' + "é€" * (3 * MB) + '", "price": 1.10, '
    '"big": 12345678901234567890.5, "quoted": "say \\"hi\\" \\\\ bye"}'
)


@pytest.fixture
def heavy(make_queue, pgmq_sql) -> dict[str, str]:
    """msg 1 small, msg 2 the 40 MB message (with headers of 2 MB), msg 3 small; their text as
    PostgreSQL writes it."""
    make_queue("heavy")
    pgmq_sql.execute("SELECT pgmq.send('heavy', '{\"n\": 1}'::jsonb, '{\"h\": 1}'::jsonb)")
    pgmq_sql.execute("SELECT pgmq.send('heavy', %s::jsonb, %s::jsonb)", [HUGE, json.dumps({"trace": "t" * 2 * MB})])
    pgmq_sql.execute("SELECT pgmq.send('heavy', '{\"n\": 3}'::jsonb)")
    message, headers = pgmq_sql.execute(
        "SELECT message::text, headers::text FROM pgmq.q_heavy WHERE msg_id = 2"
    ).fetchone()
    return {"message": message, "headers": headers}


@pytest.fixture
def warmed_client(signed_in_client, heavy):
    """Signed in, with each kind of page already served once (for the small message 1): a worker's
    first request imports views and compiles templates, megabytes that are not the payload's."""
    for path in ("/queues/heavy/messages/1/raw/", "/api/v1/queues/heavy/messages/1/", "/queues/heavy/messages/1/"):
        assert signed_in_client.get(path).status_code == 200
    return signed_in_client


def fetched_measured(client, path: str):
    """GET path and read the answer to its end: the response, its body, and the most Python held at
    once while the view made the answer and while it was read, beyond the body read so far (which
    the test itself keeps). An answer made whole in memory counts whole."""
    kept, read = [], 0
    tracemalloc.start()
    try:
        response = client.get(path)
        if not response.streaming:
            return response, response.content, tracemalloc.get_traced_memory()[1]
        held = tracemalloc.get_traced_memory()[1]
        for piece in response.streaming_content:
            held = max(held, tracemalloc.get_traced_memory()[1] - read)
            kept.append(piece)
            read += len(piece)
            tracemalloc.reset_peak()
        return response, b"".join(kept), held
    finally:
        tracemalloc.stop()


def test_the_download_is_exactly_message_text_and_never_whole_in_the_worker(warmed_client, heavy):
    response, content, peak = fetched_measured(warmed_client, "/queues/heavy/messages/2/raw/")
    assert response.status_code == 200
    assert content == heavy["message"].encode()  # byte for byte PostgreSQL's message::text
    assert int(response["Content-Length"]) == len(content)
    assert peak < len(content) / 2, f"{peak / MB:.0f} MB held for a {len(content) / MB:.0f} MB message"
    headers = warmed_client.get("/queues/heavy/messages/2/raw/?part=headers")
    assert body(headers) == heavy["headers"].encode()


def test_the_apis_single_message_streams_the_payload_into_its_answer(warmed_client, heavy):
    response, content, peak = fetched_measured(warmed_client, "/api/v1/queues/heavy/messages/2/")
    assert response.status_code == 200
    assert int(response["Content-Length"]) == len(content)
    assert peak < len(content) / 2, f"{peak / MB:.0f} MB held for a {len(content) / MB:.0f} MB answer"
    answer = json.loads(content, parse_float=str)
    assert answer["msg_id"] == 2 and answer["message_chars"] == len(heavy["message"])
    assert answer["message"] == json.loads(heavy["message"], parse_float=str)
    assert '"big": 12345678901234567890.5' in content.decode()  # the numbers as stored
    assert answer["headers"] == json.loads(heavy["headers"])
    small = warmed_client.get("/api/v1/queues/heavy/messages/1/")
    assert not small.streaming and json.loads(small.content)["message"] == {"n": 1}


def test_the_apis_pages_leave_a_huge_payload_out_and_say_how_big_it_is(signed_in_client, heavy, settings):
    response = signed_in_client.get("/api/v1/queues/heavy/messages/")
    assert response.status_code == 200 and len(response.content) < 100_000
    rows = {row["msg_id"]: row for row in json.loads(response.content)["results"]}
    assert rows[2]["message"] is None and rows[2]["message_left_out"] is True
    # Stored in more than LIST_PAYLOAD_MAX_STORED_BYTES: not even measured; its headers are (24 kB
    # stored), and over API_LIST_PAYLOAD_CHARS.
    assert rows[2]["message_chars"] is None and rows[2]["message_stored_bytes"] > settings.LIST_PAYLOAD_MAX_STORED_BYTES
    assert rows[2]["headers"] is None and rows[2]["headers_left_out"] is True
    assert rows[2]["headers_chars"] == len(heavy["headers"])
    assert rows[1]["message"] == {"n": 1} and rows[1]["headers"] == {"h": 1} and rows[1]["message_left_out"] is False
    assert rows[3]["headers"] is None and rows[3]["headers_left_out"] is False  # sent without headers


def test_lists_never_turn_a_huge_payload_into_text(signed_in_client, heavy, pgmq_sql, settings):
    """A list pays for its rows, not for their payloads: turning the 40 MB message into text for a
    preview and a length takes the database most of a second (two seconds on a busy machine, the
    whole search budget: the page then came back empty). Under the smallest budget the browser's
    page and the API's list still give every row, the huge one with the size it is stored in."""
    settings.SEARCH_TIMEOUT_MS = 100
    stored = pgmq_sql.execute("SELECT pg_column_size(message) FROM pgmq.q_heavy WHERE msg_id = 2").fetchone()[0]
    shown = parse(signed_in_client.get("/queues/heavy/messages/"))
    rows = {
        int(row["data-msg-id"]): row.get_text(" ", strip=True).replace("\xa0", " ")
        for row in shown.select("tr[data-msg-id]")
    }
    assert sorted(rows) == [1, 2, 3], shown.select_one("main").get_text(" ", strip=True)[:500]
    assert "too big for a list" in rows[2] and f"{stored:,} bytes stored" in rows[2]
    assert '{"n": 1}' in rows[1] and "8 bytes of JSON" in rows[1]
    answer = json.loads(signed_in_client.get("/api/v1/queues/heavy/messages/").content)
    assert not answer["timed_out"]
    listed = {row["msg_id"]: row for row in answer["results"]}
    assert sorted(listed) == [1, 2, 3]
    assert listed[2]["message_left_out"] is True and listed[2]["message_stored_bytes"] == stored
    assert listed[1]["message"] == {"n": 1} and listed[1]["message_chars"] == 8
    pgmq_sql.execute("UPDATE pgmq.q_heavy SET read_ct = %s WHERE msg_id = 2", [settings.POISON_READ_COUNT])
    poison = parse(signed_in_client.get("/queues/heavy/poison/")).select_one("tr[data-msg-id='2']")
    assert f"Too big for a list: {stored:,} bytes stored" in poison.get_text(" ", strip=True)


def test_the_message_page_holds_only_the_beginning(warmed_client, heavy):
    tracemalloc.start()
    try:
        response = warmed_client.get("/queues/heavy/messages/2/")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200 and len(response.content) < 2 * MB
    assert "the page shows its beginning" in parse(response).get_text()
    assert peak < 40 * MB / 4, f"{peak / MB:.0f} MB for the page of a 40 MB message"


def test_over_the_download_limit_the_page_and_the_api_name_the_sql_that_fetches_it(signed_in_client, heavy, settings):
    settings.DOWNLOAD_MAX_BYTES = 10 * MB
    page = signed_in_client.get("/queues/heavy/messages/2/raw/")
    assert page.status_code == 413
    shown = parse(page)
    assert "too big to download" in shown.get_text()
    assert shown.select_one("#fetch-sql").get_text().startswith("SELECT") and "q_heavy" in shown.get_text()
    answer = signed_in_client.get("/api/v1/queues/heavy/messages/2/")
    assert answer.status_code == 413 and answer["Content-Type"] == "application/json"
    refusal = json.loads(answer.content)
    assert "DASHBOARD_DOWNLOAD_MAX_BYTES" in refusal["detail"] and "q_heavy" in refusal["sql"]
    assert refusal["bytes"] == len(heavy["message"].encode())
    assert body(signed_in_client.get("/queues/heavy/messages/1/raw/")) == b'{"n": 1}'  # small ones still come


def exported(client, export_format: str) -> tuple[bytes, int]:
    response, content, peak = fetched_measured(client, f"/queues/heavy/messages/export.{export_format}")
    assert response.status_code == 200
    return content, peak


def test_an_export_streams_a_huge_row_alone_and_exactly(warmed_client, heavy):
    content, peak = exported(warmed_client, "csv")
    csv.field_size_limit(sys.maxsize)  # Python's csv module refuses fields over 128 kB unless told
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [row["msg_id"] for row in rows] == ["1", "2", "3"]
    assert rows[1]["message"] == heavy["message"] and rows[1]["headers"] == heavy["headers"]
    assert rows[0]["message"] == '{"n": 1}' and rows[2]["headers"] == ""
    assert peak < len(content) / 2, f"{peak / MB:.0f} MB held for a {len(content) / MB:.0f} MB export"

    content, peak = exported(warmed_client, "ndjson")
    lines = [json.loads(line, parse_float=str) for line in content.decode().splitlines()]
    assert [line["msg_id"] for line in lines] == [1, 2, 3]
    assert lines[1]["message"] == json.loads(heavy["message"], parse_float=str)
    assert lines[1]["headers"] == json.loads(heavy["headers"]) and lines[2]["headers"] is None
    assert peak < len(content) / 2, f"{peak / MB:.0f} MB held for a {len(content) / MB:.0f} MB export"


def test_export_batches_end_by_size_as_well_as_by_rows(make_queue, pgmq_sql, monkeypatch):
    """Thirty rows of 300 kB, each under the size a row is streamed alone at: a batch stops once
    EXPORT_BATCH_CHARS (1 MB here) of payloads came, although the first one asks for 500 rows."""
    make_queue("mid")
    pgmq_sql.execute(
        "SELECT pgmq.send_batch('mid', array_fill(jsonb_build_object('blob', repeat('m', 300000)), ARRAY[30]))"
    )
    monkeypatch.setattr(exports, "EXPORT_BATCH_CHARS", 1_000_000)
    statements = []
    batch_sql = exports._batch_sql
    monkeypatch.setattr(
        exports, "_batch_sql", lambda plan, **asked: statements.append(asked) or batch_sql(plan, **asked)
    )
    plan = exports.export_plan(Queue.objects.get(queue_name="mid"), exports.MessageFilter())
    rows = list(exports.export_rows(plan, ndjson=False))
    assert [row.msg_id for row in rows] == list(range(1, 31))  # every row, once, in order
    assert all(len(row.values[-2]) == len('{"blob": ""}') + 300_000 for row in rows)
    assert statements[0]["limit"] == exports.EXPORT_FIRST_BATCH_ROWS
    assert len(statements) >= 30 * 300_000 // 1_000_000  # at most 4 rows (1.2 MB) a batch

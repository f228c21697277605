"""Messages whose body is SQL NULL (pgmq's own tests send one; pgmq.send accepts it), with and
without headers: every page, download, export and API answer shows them as null, never a 500."""

from __future__ import annotations

import json

import pytest

from tests.conftest import uses_databases
from tests.pages import parse

pytestmark = uses_databases


@pytest.fixture
def null_queue(make_queue, pgmq_sql) -> str:
    """msg 1: message NULL, headers NULL; msg 2: message NULL, headers set; msg 3: an ordinary one.
    msg 4, NULL too, archived."""
    make_queue("nulls")
    pgmq_sql.execute("SELECT pgmq.send('nulls', NULL::jsonb)")
    pgmq_sql.execute("""SELECT pgmq.send('nulls', NULL::jsonb, '{"trace": "t2"}'::jsonb)""")
    pgmq_sql.execute("""SELECT pgmq.send('nulls', '{"n": 3}'::jsonb)""")
    pgmq_sql.execute("SELECT pgmq.send('nulls', NULL::jsonb)")
    pgmq_sql.execute("SELECT pgmq.archive('nulls', 4::bigint)")
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.q_nulls WHERE message IS NULL").fetchone()[0] == 2
    return "nulls"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/queues/nulls/",
        "/queues/nulls/poison/",
        "/queues/nulls/diagnostics/",
        "/queues/nulls/messages/",
        "/queues/nulls/messages/?source=archive",
        "/queues/nulls/messages/?q=message.n:3",
        "/queues/nulls/messages/?sort=-msg_id",
        "/queues/nulls/messages/1/",
        "/queues/nulls/messages/2/",
        "/queues/nulls/messages/4/",
        "/queues/nulls/messages/4/?source=archive",
        "/queues/nulls/messages/1/edit/",
    ],
)
def test_every_page_shows_a_null_message(operator_client, null_queue, path):
    response = operator_client.get(path)
    assert response.status_code == 200, response.content.decode()[:2000]


def test_the_message_page_says_the_body_is_null_and_shows_the_headers(operator_client, null_queue):
    page = parse(operator_client.get("/queues/nulls/messages/2/"))
    assert "this message is SQL NULL" in " ".join(page.select_one("[data-null-message]").get_text().split())
    assert json.loads(json.loads(page.select_one("#headers-json").string)) == {"trace": "t2"}


def test_downloads_give_a_null_body_as_json_null_and_the_headers(operator_client, null_queue):
    body = operator_client.get("/queues/nulls/messages/1/raw/")
    assert body.status_code == 200 and b"".join(body.streaming_content) == b"null"
    headers = operator_client.get("/queues/nulls/messages/2/raw/?part=headers")
    content = b"".join(headers.streaming_content) if headers.streaming else headers.content
    assert json.loads(content) == {"trace": "t2"}


@pytest.mark.parametrize("export_format", ["csv", "ndjson"])
def test_exports_carry_null_messages(operator_client, null_queue, export_format):
    response = operator_client.get(f"/queues/nulls/messages/export.{export_format}")
    assert response.status_code == 200
    content = b"".join(response.streaming_content).decode()
    if export_format == "ndjson":
        rows = {row["msg_id"]: row for row in map(json.loads, content.splitlines())}
        assert rows[1]["message"] is None and rows[2]["message"] is None and rows[3]["message"] == {"n": 3}
        assert rows[2]["headers"] == {"trace": "t2"}
    else:
        assert len(content.strip().splitlines()) == 4  # a header line and three messages


def test_the_api_gives_null_messages_as_null(operator_client, null_queue):
    listed = operator_client.get("/api/v1/queues/nulls/messages/")
    assert listed.status_code == 200, listed.content[:500]
    messages = {item["msg_id"]: item for item in listed.json()["results"]}
    assert messages[1]["message"] is None and messages[3]["message"] == {"n": 3}
    single = operator_client.get("/api/v1/queues/nulls/messages/2/")
    assert single.status_code == 200, single.content[:500]
    assert single.json()["message"] is None and single.json()["headers"] == {"trace": "t2"}


def test_actions_on_null_messages_keep_them_null(operator_client, null_queue, make_queue, pgmq_sql):
    make_queue("nulls_dlq")
    data = {
        "action": "move",
        "source": "live",
        "scope": "selected",
        "msg_id": ["1", "2"],
        "destination": "nulls_dlq",
        "original": "archive",
        "confirmed": "1",
    }
    response = operator_client.post("/queues/nulls/act/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    moved = pgmq_sql.execute("SELECT message, headers->'trace' FROM pgmq.q_nulls_dlq ORDER BY msg_id").fetchall()
    assert [row[0] for row in moved] == [None, None]
    assert moved[1][1] == "t2"

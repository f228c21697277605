"""A queue's page: counts by state and its latest messages, by the database's clock."""
from __future__ import annotations

import json

from tests.conftest import uses_databases
from tests.pages import number, parse, stat

pytestmark = uses_databases


def test_counts_by_state_match_the_table(signed_in_client, make_queue, pgmq_sql):
    make_queue("states", messages=10)
    pgmq_sql.execute("SELECT * FROM pgmq.read('states', 60, 3)")  # 3 in flight for a minute
    for _ in range(2):
        pgmq_sql.execute("""SELECT pgmq.send('states', '{"later": true}', 600)""")  # 2 delayed
    pgmq_sql.execute("SELECT pgmq.archive('states', ARRAY[9, 10]::bigint[])")

    page = parse(signed_in_client.get("/queues/states/"))

    truth = pgmq_sql.execute("""
        SELECT count(*),
               count(*) FILTER (WHERE vt <= now()),
               count(*) FILTER (WHERE vt > now() AND read_ct > 0),
               count(*) FILTER (WHERE vt > now() AND read_ct = 0),
               (SELECT count(*) FROM pgmq.a_states)
        FROM pgmq.q_states""").fetchone()
    shown = tuple(number(stat(page, name)) for name in ("backlog", "visible", "in-flight", "delayed", "archived"))
    assert shown == truth == (10, 5, 3, 2, 2)


def test_latest_messages_show_state_read_count_and_payload(signed_in_client, make_queue, pgmq_sql):
    make_queue("latest", messages=3)
    pgmq_sql.execute("SELECT * FROM pgmq.read('latest', 60, 1)")  # msg 1: in flight, read once

    rows = {row["data-msg-id"]: row for row in parse(signed_in_client.get("/queues/latest/")).select("tr[data-msg-id]")}

    assert list(rows) == ["3", "2", "1"]  # newest first
    assert rows["1"].select_one(".state").get_text() == "in flight"
    assert rows["1"].select_one("[data-column=read_ct]").get_text() == "1"
    assert rows["3"].select_one(".state").get_text() == "visible"
    assert json.loads(rows["3"].select_one(".payload").get_text()) == {"n": 3}


def test_payloads_are_escaped(signed_in_client, make_queue, pgmq_sql):
    make_queue("hostile")
    payload = {"comment": "</code><script>alert(1)</script>"}
    pgmq_sql.execute("SELECT pgmq.send('hostile', %s::jsonb)", [json.dumps(payload)])
    html = signed_in_client.get("/queues/hostile/").content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_browsing_never_changes_a_message(signed_in_client, make_queue, pgmq_sql):
    make_queue("untouched", messages=5)
    pgmq_sql.execute("SELECT * FROM pgmq.read('untouched', 60, 2)")
    before = pgmq_sql.execute("SELECT msg_id, read_ct, vt, message FROM pgmq.q_untouched ORDER BY msg_id").fetchall()

    for path in ("/", "/queues/untouched/"):
        assert signed_in_client.get(path).status_code == 200
        assert signed_in_client.get(path, headers={"HX-Request": "true"}).status_code == 200

    after = pgmq_sql.execute("SELECT msg_id, read_ct, vt, message FROM pgmq.q_untouched ORDER BY msg_id").fetchall()
    assert after == before


def test_the_refresh_returns_only_the_live_region(signed_in_client, make_queue):
    make_queue("live_region", messages=2)
    response = signed_in_client.get("/queues/live_region/", headers={"HX-Request": "true", "HX-Target": "queue-live"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="queue-live"')
    assert number(stat(parse(html), "backlog")) == 2


def test_a_queue_of_pgmq_1_4_layout_renders(signed_in_client, make_queue, pgmq_sql):
    make_queue("old_layout", messages=2)
    pgmq_sql.execute("ALTER TABLE pgmq.q_old_layout DROP COLUMN headers, DROP COLUMN last_read_at")
    page = parse(signed_in_client.get("/queues/old_layout/"))
    assert number(stat(page, "backlog")) == 2
    assert len(page.select("tr[data-msg-id]")) == 2

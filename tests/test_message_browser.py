"""The message browser: keyset pages both ways, every filter, live and archive, bounded search."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from django.test import override_settings

from tests.conftest import uses_databases
from tests.pages import message_rows, pager_links, parse

pytestmark = uses_databases


def page_ids(client, url: str) -> tuple[list[int], dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200, response.content.decode()[:500]
    page = parse(response)
    return [int(row["msg_id"]) for row in message_rows(page)], pager_links(page)


def follow(base: str, link: str) -> str:
    return base + link


def test_keyset_pages_walk_forward_and_back_across_boundaries(signed_in_client, make_queue):
    make_queue("paged", messages=120)
    base = "/queues/paged/messages/"

    first, links = page_ids(signed_in_client, base)
    assert first == list(range(120, 70, -1))
    assert "Previous" not in links and "First" not in links
    second, links = page_ids(signed_in_client, follow(base, links["Next"]))
    assert second == list(range(70, 20, -1))
    third, links = page_ids(signed_in_client, follow(base, links["Next"]))
    assert third == list(range(20, 0, -1))
    assert "Next" not in links and "Last" not in links

    back, links = page_ids(signed_in_client, follow(base, links["Previous"]))
    assert back == second
    back, links = page_ids(signed_in_client, follow(base, links["Previous"]))
    assert back == first
    assert "Previous" not in links


def test_the_last_page_is_the_oldest_messages(signed_in_client, make_queue):
    make_queue("far_end", messages=120)
    ids, links = page_ids(signed_in_client, "/queues/far_end/messages/?last=1")
    assert ids == list(range(50, 0, -1))
    assert "Next" not in links
    newer, _ = page_ids(signed_in_client, "/queues/far_end/messages/" + links["Previous"])
    assert newer == list(range(100, 50, -1))


def test_paging_never_skips_or_repeats_while_messages_arrive(signed_in_client, make_queue, pgmq_sql):
    make_queue("arriving", messages=60)
    first, links = page_ids(signed_in_client, "/queues/arriving/messages/")
    pgmq_sql.execute("SELECT pgmq.send_batch('arriving', array_fill('{}'::jsonb, ARRAY[30]))")
    second, _ = page_ids(signed_in_client, "/queues/arriving/messages/" + links["Next"])
    assert first == list(range(60, 10, -1)) and second == list(range(10, 0, -1))


def test_jump_to_a_msg_id(signed_in_client, make_queue):
    make_queue("jumpy", messages=200)
    ids, links = page_ids(signed_in_client, "/queues/jumpy/messages/?from=137")
    assert ids == list(range(137, 87, -1))
    assert "Previous" in links and "Next" in links


def test_sorting_by_read_ct_pages_through_ties_by_msg_id(signed_in_client, make_queue, pgmq_sql):
    make_queue("sorted", messages=70)
    pgmq_sql.execute("SELECT * FROM pgmq.read('sorted', 0, 30)")  # msgs 1-30 read once
    pgmq_sql.execute("SELECT * FROM pgmq.read('sorted', 0, 10)")  # msgs 1-10 read twice
    base = "/queues/sorted/messages/?sort=-read_ct"
    first, links = page_ids(signed_in_client, base)
    second, _ = page_ids(signed_in_client, "/queues/sorted/messages/" + links["Next"])
    expected = [*range(10, 0, -1), *range(30, 10, -1), *range(70, 30, -1)]
    assert first + second == expected
    assert parse_qs(urlsplit(links["Next"]).query)["sort"] == ["-read_ct"]


def test_each_filter_finds_exactly_what_sql_finds(signed_in_client, make_queue, pgmq_sql):
    make_queue("filtered")
    for n in range(1, 31):
        message = {
            "n": n,
            "type": "order_created" if n % 3 == 0 else "order_paid",
            "customer": {"id": n % 5, "email": f"c{n}@example.com"},
        }
        headers = {"trace_id": f"trace-{n:03d}", "x-pgmq-group": "even" if n % 2 == 0 else "odd"}
        pgmq_sql.execute(
            "SELECT pgmq.send('filtered', %s::jsonb, %s::jsonb)", [json.dumps(message), json.dumps(headers)]
        )
    pgmq_sql.execute("SELECT * FROM pgmq.read('filtered', 300, 4)")  # 1-4 in flight
    pgmq_sql.execute("""SELECT pgmq.send('filtered', '{"n": 31, "type": "reminder"}', 600)""")  # delayed

    cases = {
        "state=visible": "vt <= now()",
        "state=in_flight": "vt > now() AND read_ct > 0",
        "state=delayed": "vt > now() AND read_ct = 0",
        "read_ct_min=1": "read_ct >= 1",
        "read_ct_max=0": "read_ct <= 0",
        "message=%7B%22type%22%3A%22order_created%22%7D": """message @> '{"type": "order_created"}'""",
        "headers=%7B%22x-pgmq-group%22%3A%22even%22%7D": """headers @> '{"x-pgmq-group": "even"}'""",
        "q=c17%40example": "message::text ILIKE '%c17@example%'",
        "q=message.customer.id%3A3": "message #>> '{customer,id}' = '3'",
        "q=headers.trace_id%3Atrace-02*": "headers ->> 'trace_id' LIKE 'trace-02%'",
        "q=headers%3AEVEN": "headers::text ILIKE '%even%'",
        "q=order_created+message.customer.id%3A1": (
            "message::text ILIKE '%order_created%' AND message #>> '{customer,id}' = '1'"
        ),
    }
    for query, where in cases.items():
        truth = [
            row[0]
            for row in pgmq_sql.execute(
                f"SELECT msg_id FROM pgmq.q_filtered WHERE {where} ORDER BY msg_id DESC"
            ).fetchall()
        ]
        shown, _ = page_ids(signed_in_client, f"/queues/filtered/messages/?{query}")
        assert shown == truth, query
        assert truth, f"{query} should match something"


def test_time_range_filters(signed_in_client, make_queue, pgmq_sql):
    make_queue("timed", messages=10)
    pgmq_sql.execute("SELECT pgmq.archive('timed', ARRAY[1, 2, 3]::bigint[])")
    middle = pgmq_sql.execute("SELECT enqueued_at FROM pgmq.q_timed WHERE msg_id = 6").fetchone()[0]
    after, _ = page_ids(signed_in_client, f"/queues/timed/messages/?enqueued_after={middle:%Y-%m-%dT%H:%M:%S.%f}")
    truth = [
        row[0]
        for row in pgmq_sql.execute(
            "SELECT msg_id FROM pgmq.q_timed WHERE enqueued_at >= %s ORDER BY msg_id DESC", [middle]
        ).fetchall()
    ]
    assert after == truth
    archived_at = pgmq_sql.execute("SELECT max(archived_at) FROM pgmq.a_timed").fetchone()[0]
    ids, _ = page_ids(
        signed_in_client, f"/queues/timed/messages/?source=both&archived_before={archived_at:%Y-%m-%dT%H:%M:%S.%f}"
    )
    truth = [
        row[0]
        for row in pgmq_sql.execute(
            "SELECT msg_id FROM pgmq.a_timed WHERE archived_at < %s ORDER BY msg_id DESC", [archived_at]
        ).fetchall()
    ]
    assert ids == truth


def test_the_archive_and_both_at_once(signed_in_client, make_queue, pgmq_sql):
    make_queue("split", messages=8)
    pgmq_sql.execute("SELECT pgmq.archive('split', ARRAY[2, 4, 6]::bigint[])")

    archived = message_rows(parse(signed_in_client.get("/queues/split/messages/?source=archive")))
    assert [int(row["msg_id"]) for row in archived] == [6, 4, 2]
    assert {row["state"] for row in archived} == {"archived"}

    both_page = parse(signed_in_client.get("/queues/split/messages/?source=both"))
    both = message_rows(both_page)
    # One column holds the live rows' vt and the archived rows' archived_at: its heading says so.
    assert [th.get_text() for th in both_page.select("#messages-live thead th")][-2] == "vt, or archived"
    archived_at = pgmq_sql.execute("SELECT archived_at FROM pgmq.a_split WHERE msg_id = 6").fetchone()[0]
    sixth = both_page.select_one('#messages-live tr[data-msg-id="6"] td[data-label="archived"] time')
    assert datetime.fromisoformat(sixth["datetime"]) == archived_at
    assert [(int(row["msg_id"]), row["source"]) for row in both] == [
        (8, "live"),
        (7, "live"),
        (6, "archive"),
        (5, "live"),
        (4, "archive"),
        (3, "live"),
        (2, "archive"),
        (1, "live"),
    ]


def test_both_at_once_pages_across_the_two_tables(signed_in_client, make_queue, pgmq_sql):
    make_queue("interleaved", messages=100)
    pgmq_sql.execute("SELECT pgmq.archive('interleaved', array_agg(i)) FROM generate_series(1, 100, 2) i")
    first, links = page_ids(signed_in_client, "/queues/interleaved/messages/?source=both")
    second, links = page_ids(signed_in_client, "/queues/interleaved/messages/" + links["Next"])
    assert first + second == list(range(100, 0, -1))
    assert "Next" not in links


def test_a_search_stops_after_its_budget_and_continues_from_there(signed_in_client, make_queue, pgmq_sql, monkeypatch):
    make_queue("haystack", messages=300)
    pgmq_sql.execute("""SELECT pgmq.send('haystack', '{"needle": true}')""")  # msg 301
    pgmq_sql.execute("""SELECT pgmq.send_batch('haystack', array_fill('{"hay": 1}'::jsonb, ARRAY[100]))""")
    monkeypatch.setattr("queues.selectors.messages.SCAN_CHUNK", 40)

    with override_settings(SEARCH_TIMEOUT_MS=0):  # one step of the scan, then out of time
        page = parse(signed_in_client.get("/queues/haystack/messages/?q=needle"))
        stopped = page.select_one("[data-scan-stopped]")
        assert stopped is not None and message_rows(page) == []
        assert int(stopped["data-scan-stopped"]) == 362  # looked at 401..362
        continue_link = stopped.select_one("a")["href"]
        hops = 0
        while not message_rows(page):
            page = parse(signed_in_client.get("/queues/haystack/messages/" + continue_link))
            hops += 1
            stopped = page.select_one("[data-scan-stopped]")
            if stopped is not None:
                continue_link = stopped.select_one("a")["href"]
    assert [row["msg_id"] for row in message_rows(page)] == ["301"]
    assert hops == 2


def test_a_finished_search_says_nothing_more_matches(signed_in_client, make_queue):
    make_queue("small_haystack", messages=10)
    page = parse(signed_in_client.get("/queues/small_haystack/messages/?q=nothing-like-this"))
    assert "No message matches these filters" in page.get_text()
    assert page.select_one("[data-scan-stopped]") is None


@pytest.mark.parametrize(
    "query, complaint",
    [
        ("message=%7Bnot+json", "not valid JSON"),
        ("headers=%5B1%2C", "not valid JSON"),
        ("sort=payload", "sort"),
        ("state=lost", "state"),
        ("read_ct_min=-1", "read_ct_min"),
        ("read_ct_min=5&read_ct_max=2", "read_ct_max"),
        ("after=abc", "after"),
        ("after=10&before=20", "one place at a time"),
        ("from=99999999999999999999999", "from"),
        ("enqueued_after=yesterday", "enqueued_after"),
        ("q=%22unclosed", "close the quotes"),
        ("q=message.customer.id%3A", "needs a value"),
        ("sort=-enqueued_at&after=notatime|5", "after"),
        ("source=elsewhere", "source"),
    ],
)
def test_bad_input_is_a_400_saying_what_is_wrong(signed_in_client, make_queue, query, complaint):
    make_queue("strict", messages=1)
    response = signed_in_client.get(f"/queues/strict/messages/?{query}")
    assert response.status_code == 400
    assert complaint in response.content.decode()


def test_state_comes_from_the_database_clock(signed_in_client, make_queue, pgmq_sql):
    make_queue("clocked", messages=2)
    pgmq_sql.execute("SELECT pgmq.set_vt('clocked', 1::bigint, 3600)")  # msg 1: vt an hour ahead
    rows = {
        row["msg_id"]: row["state"] for row in message_rows(parse(signed_in_client.get("/queues/clocked/messages/")))
    }
    assert rows == {"2": "visible", "1": "delayed"}


def test_payloads_are_escaped_in_the_list(signed_in_client, make_queue, pgmq_sql):
    make_queue("hostile")
    pgmq_sql.execute(
        "SELECT pgmq.send('hostile', %s::jsonb, %s::jsonb)",
        [
            json.dumps({"comment": "</code><script>alert(1)</script>"}),
            json.dumps({"x": "<img src=x onerror=alert(2)>"}),
        ],
    )
    html = signed_in_client.get("/queues/hostile/messages/").content.decode()
    assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_links_keep_every_filter(signed_in_client, make_queue):
    make_queue("kept", messages=120)
    _, links = page_ids(signed_in_client, "/queues/kept/messages/?state=visible&q=n&sort=-msg_id")
    kept = parse_qs(urlsplit(links["Next"]).query)
    assert kept["state"] == ["visible"] and kept["q"] == ["n"] and kept["sort"] == ["-msg_id"]


def test_the_unfiltered_list_never_counts_a_big_table(signed_in_client, make_queue, pgmq_sql):
    make_queue("uncounted", messages=500)
    pgmq_sql.execute("ANALYZE pgmq.q_uncounted")
    with override_settings(EXACT_COUNT_LIMIT=100):
        summary = parse(signed_in_client.get("/queues/uncounted/messages/")).select_one(".summary").get_text()
    assert "≈ 500 messages" in " ".join(summary.split())


def test_browsing_never_changes_a_message(signed_in_client, make_queue, pgmq_sql):
    make_queue("untouched", messages=5)
    pgmq_sql.execute("SELECT * FROM pgmq.read('untouched', 60, 2)")
    pgmq_sql.execute("SELECT pgmq.archive('untouched', 5::bigint)")
    snapshot = (
        "SELECT msg_id, read_ct, vt, message FROM pgmq.q_untouched UNION ALL "
        "SELECT msg_id, read_ct, vt, message FROM pgmq.a_untouched ORDER BY msg_id"
    )
    before = pgmq_sql.execute(snapshot).fetchall()
    for path in (
        "/",
        "/queues/untouched/",
        "/queues/untouched/messages/?source=both",
        "/queues/untouched/messages/?q=n",
        "/queues/untouched/messages/1/",
        "/queues/untouched/messages/5/?source=archive",
        "/queues/untouched/poison/",
        "/queues/untouched/diagnostics/",
        "/queues/untouched/archive-history/",
    ):
        assert signed_in_client.get(path).status_code == 200, path
    assert pgmq_sql.execute(snapshot).fetchall() == before


# Found in review: each of these was a server error or a wrong page before.


@pytest.mark.parametrize(
    "query, complaint",
    [
        ("message=42", None),
        ("message=NaN", "NaN is not a JSON number"),
        ("message=%7B%22a%22%3A1e400%7D", "too large"),
        ("message=%7B%22a%22%3A%22%5Cu0000%22%7D", "NUL"),
        ("headers=%7B%22a%22%3A%22%5Cud800%22%7D", "surrogate"),
        ("message=" + "%5B" * 3000 + "%5D" * 3000, "nested"),
        ("q=a%00b", "Null characters are not allowed"),
        ("sort=-archived_at", "archived_at sorts the archive only"),
        ("source=both&sort=archived_at", "archived_at sorts the archive only"),
        ("from=0&after=5", "one place at a time"),
    ],
)
def test_edge_inputs_get_a_clear_answer(signed_in_client, make_queue, query, complaint):
    make_queue("edgy", messages=2)
    response = signed_in_client.get(f"/queues/edgy/messages/?{query}")
    if complaint is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert complaint in response.content.decode()


def test_a_page_that_runs_out_of_time_says_so(signed_in_client, make_queue, pgmq_database_url):
    make_queue("locked_away", messages=5)
    with psycopg.connect(pgmq_database_url) as holder, override_settings(SEARCH_TIMEOUT_MS=100):
        holder.execute("LOCK TABLE pgmq.q_locked_away IN ACCESS EXCLUSIVE MODE")
        sorted_page = signed_in_client.get("/queues/locked_away/messages/?sort=-enqueued_at")
        searched_page = signed_in_client.get("/queues/locked_away/messages/?q=n")
    assert sorted_page.status_code == 200
    assert "ran for its whole time budget" in sorted_page.content.decode()
    assert searched_page.status_code == 200
    assert parse(searched_page).select_one("[data-scan-stopped]") is not None


def test_a_state_filter_that_runs_out_of_time_offers_the_order_pgmqs_vt_index_serves(
    signed_in_client, make_queue, pgmq_sql, pgmq_database_url
):
    """Newest first, "in flight" walks the primary key past every message not in flight (seconds on
    a queue of millions, README "Many queues, and one giant queue"); ordered by vt it rides pgmq's index."""
    make_queue("mostly_waiting", messages=30)
    pgmq_sql.execute("SELECT * FROM pgmq.read('mostly_waiting', 600, 3)")  # msg 1, 2, 3 in flight
    with psycopg.connect(pgmq_database_url) as holder, override_settings(SEARCH_TIMEOUT_MS=100):
        holder.execute("LOCK TABLE pgmq.q_mostly_waiting IN ACCESS EXCLUSIVE MODE")
        page = parse(signed_in_client.get("/queues/mostly_waiting/messages/?state=in_flight"))
    banner = page.select_one("[data-timed-out]")
    assert banner is not None and "pgmq's index on vt" in banner.get_text()
    by_vt = banner.select_one("a")["href"]
    assert parse_qs(urlsplit(by_vt).query) == {"state": ["in_flight"], "sort": ["vt"]}
    page = parse(signed_in_client.get("/queues/mostly_waiting/messages/" + by_vt))
    assert page.select_one("[data-timed-out]") is None
    assert [int(row["msg_id"]) for row in message_rows(page)] == [1, 2, 3]


def test_paging_after_a_jump_under_another_sort(signed_in_client, make_queue):
    make_queue("jumped", messages=120)
    ids, links = page_ids(signed_in_client, "/queues/jumped/messages/?sort=-vt&from=100")
    assert ids == list(range(100, 50, -1))
    older, _ = page_ids(signed_in_client, "/queues/jumped/messages/" + links["Next"])
    assert older == list(range(50, 0, -1))


def test_a_backward_search_continues_backwards_and_its_last_page_ends(
    signed_in_client, make_queue, pgmq_sql, monkeypatch
):
    make_queue("rewound", messages=300)
    monkeypatch.setattr("queues.selectors.messages.SCAN_CHUNK", 40)
    with override_settings(SEARCH_TIMEOUT_MS=0):
        page = parse(signed_in_client.get("/queues/rewound/messages/?q=n&last=1"))
    assert [int(row["msg_id"]) for row in message_rows(page)] == list(range(40, 0, -1))
    assert "Next" not in pager_links(page) and "Last" not in pager_links(page)
    continue_link = page.select_one("[data-scan-stopped] a")["href"]
    assert "before=40" in continue_link


def test_a_search_jumps_over_gaps_in_msg_ids(signed_in_client, make_queue, pgmq_sql, monkeypatch):
    make_queue("gappy", messages=30)
    pgmq_sql.execute("SELECT setval('pgmq.q_gappy_msg_id_seq', 1000000000000)")
    pgmq_sql.execute("SELECT pgmq.send('gappy', '{\"n\": 0}')")
    monkeypatch.setattr("queues.selectors.messages.SCAN_CHUNK", 10)
    ids, _ = page_ids(signed_in_client, "/queues/gappy/messages/?q=n")
    assert ids == [1000000000001, *range(30, 0, -1)]
    ids, _ = page_ids(signed_in_client, "/queues/gappy/messages/?q=n&from=9223372036854775807")
    assert len(ids) == 31


def test_a_search_path_key_may_contain_double_underscores(signed_in_client, make_queue, pgmq_sql):
    make_queue("underscored")
    pgmq_sql.execute("""SELECT pgmq.send('underscored', '{"a__b": 1, "a": {"b": 2}}')""")
    ids, _ = page_ids(signed_in_client, "/queues/underscored/messages/?q=message.a__b%3A1")
    assert ids == [1]


def test_both_at_once_reads_queue_and_archive_at_one_moment(
    signed_in_client, make_queue, pgmq_database_url, monkeypatch
):
    """Archive a message exactly between the two queries: it must show once, not twice."""
    from queues.selectors import messages as messages_module

    make_queue("moving", messages=5)
    fetched = messages_module._fetch_in_snapshot

    def archive_in_between(queue, kinds, *args, **kwargs):
        original_listing = messages_module.listing
        calls = []

        def listing_then_archive(queryset, **options):
            calls.append(queryset.model)
            if len(calls) == 2:  # after the live table was read, before the archive is
                with psycopg.connect(pgmq_database_url, autocommit=True) as consumer:
                    consumer.execute("SELECT pgmq.archive('moving', 3::bigint)")
            return original_listing(queryset, **options)

        monkeypatch.setattr(messages_module, "listing", listing_then_archive)
        try:
            return fetched(queue, kinds, *args, **kwargs)
        finally:
            monkeypatch.setattr(messages_module, "listing", original_listing)

    monkeypatch.setattr(messages_module, "_fetch_in_snapshot", archive_in_between)
    ids, _ = page_ids(signed_in_client, "/queues/moving/messages/?source=both")
    assert ids == [5, 4, 3, 2, 1]


def test_the_refresh_returns_only_the_message_list(signed_in_client, make_queue):
    make_queue("refreshed_list", messages=3)
    response = signed_in_client.get(
        "/queues/refreshed_list/messages/?state=visible", headers={"HX-Request": "true", "HX-Target": "messages-live"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="messages-live"')
    assert [row["msg_id"] for row in message_rows(parse(html))] == ["3", "2", "1"]
    assert 'hx-get="/queues/refreshed_list/messages/?state=visible"' in html  # it refreshes what it shows


def test_a_cursor_with_an_offset_postgresql_refuses_is_read_in_utc(signed_in_client, make_queue):
    make_queue("offsets", messages=3)  # found by schemathesis: Python takes -19:23, PostgreSQL does not
    response = signed_in_client.get("/queues/offsets/messages/?sort=-enqueued_at&after=2144-10-23T06:01:16-19:23|2")
    assert response.status_code == 200
    far = signed_in_client.get("/queues/offsets/messages/?sort=-enqueued_at&after=9999-12-31T23:59:59-23:59|2")
    assert far.status_code == 400 and "out of range" in far.content.decode()
    filtered = signed_in_client.get("/queues/offsets/messages/?enqueued_after=2000-01-01T06:01:16-19:23")
    assert filtered.status_code == 200 and len(parse(filtered).select("tr[data-msg-id]")) == 3
    beyond = signed_in_client.get("/queues/offsets/messages/?enqueued_before=9999-12-31T23:59:59-23:59")
    assert beyond.status_code == 400 and "out of range" in beyond.content.decode()

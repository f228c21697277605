"""Lineage of copies: every copy the dashboard makes (move, requeue, edit and resend, a bulk job's)
carries where it came from in its headers, the message page says so both ways, and the message
browser filters by it. Dead-letter queues are paired with their queue, and a selection chosen by
read_ct is retried or moved with its in-flight messages in one click."""

from __future__ import annotations

import json

import pytest

from queues.lineage import ORIGIN_KEY, WRAPPED_HEADERS_KEY, dead_letter_pair
from queues.management.commands.run_jobs import run_pending_jobs
from tests.conftest import uses_databases
from tests.pages import parse
from tests.test_actions import act

pytestmark = uses_databases


def headers_of(pgmq_sql, table: str) -> list:
    return [row[0] for row in pgmq_sql.execute(f'SELECT headers FROM pgmq."{table}" ORDER BY msg_id')]


def text(soup, selector: str) -> str:
    found = soup.select_one(selector)
    assert found is not None, f"nothing matches {selector}"
    return " ".join(found.get_text().split())


def test_a_moved_copy_records_its_origin_and_keeps_whatever_headers_the_client_set(
    operator_client, make_queue, pgmq_sql
):
    make_queue("lineage_src")
    make_queue("lineage_dst")
    for headers in ('{"trace": "t1"}', None, '["not", "an", "object"]', '"a string"'):
        pgmq_sql.execute("SELECT pgmq.send('lineage_src', '{\"n\": 1}'::jsonb, %s::jsonb)", [headers])
    for _ in range(3):
        pgmq_sql.execute("SELECT pgmq.read('lineage_src', 0, 10)")  # a consumer failing on them three times

    act(operator_client, "lineage_src", "move", [1, 2, 3, 4], destination="lineage_dst", original="archive")

    copies = headers_of(pgmq_sql, "q_lineage_dst")
    origins = [copy[ORIGIN_KEY] for copy in copies]
    for msg_id, chain in enumerate(origins, start=1):
        assert len(chain) == 1
        origin = chain[0]
        assert (origin["queue"], origin["msg_id"], origin["read_ct"], origin["action"], origin["by"]) == (
            "lineage_src",
            msg_id,
            3,
            "move",
            "operator-user",
        )
        assert origin["source"] == "live" and origin["at"]
    assert {key: value for key, value in copies[0].items() if key != ORIGIN_KEY} == {"trace": "t1"}
    assert set(copies[1]) == {ORIGIN_KEY}  # NULL headers: only the origin
    assert copies[2][WRAPPED_HEADERS_KEY] == ["not", "an", "object"]  # kept whole, beside the origin
    assert copies[3][WRAPPED_HEADERS_KEY] == "a string"


def test_a_copy_of_a_copy_keeps_the_chain_and_a_requeue_records_the_archive(operator_client, make_queue, pgmq_sql):
    make_queue("chain_a")
    make_queue("chain_b")
    pgmq_sql.execute(
        "SELECT pgmq.send('chain_a', '{\"n\": 1}'::jsonb, '{\"x-pgmq-dashboard-origin\": \"odd\"}'::jsonb)"
    )
    act(operator_client, "chain_a", "move", [1], destination="chain_b", original="archive")
    pgmq_sql.execute("SELECT pgmq.read('chain_b', 0, 1)")
    act(operator_client, "chain_b", "move", [1], destination="chain_a", original="archive")
    pgmq_sql.execute("SELECT pgmq.archive('chain_a', 2::bigint)")
    act(operator_client, "chain_a", "requeue", [2], source="archive", destination="chain_b")

    chain = headers_of(pgmq_sql, "q_chain_b")[0][ORIGIN_KEY]
    # A value a client had put under the key is kept, first in the chain.
    assert chain[0] == "odd"
    assert [(o["queue"], o["msg_id"], o["read_ct"], o["action"], o["source"]) for o in chain[1:]] == [
        ("chain_a", 1, 0, "move", "live"),
        ("chain_b", 1, 1, "move", "live"),
        ("chain_a", 2, 0, "requeue", "archive"),
    ]


def test_edit_and_resend_marks_the_edited_copy(operator_client, make_queue, pgmq_sql):
    make_queue("edited_lineage", messages=1)
    pgmq_sql.execute("SELECT pgmq.read('edited_lineage', 0, 1)")
    response = operator_client.post(
        "/queues/edited_lineage/messages/1/edit/",
        {
            "source": "live",
            "message": '{"n": 1, "fixed": true}',
            "headers": '{"why": "typo"}',
            "destination": "edited_lineage",
        },
    )
    assert response.status_code == 302
    headers = headers_of(pgmq_sql, "q_edited_lineage")[0]
    assert headers["why"] == "typo"
    assert [(o["queue"], o["msg_id"], o["read_ct"], o["action"]) for o in headers[ORIGIN_KEY]] == [
        ("edited_lineage", 1, 1, "edit_and_resend")
    ]


def test_a_move_job_marks_every_copy(operator_client, make_queue, pgmq_sql):
    make_queue("job_src", messages=4)
    make_queue("job_dst")
    data = {
        "action": "move",
        "source": "live",
        "scope": "matching",
        "filter_query": "",
        "confirmed": "1",
        "destination": "job_dst",
        "original": "archive",
    }
    assert operator_client.post("/queues/job_src/act/", data, headers={"HX-Request": "true"}).status_code == 200
    run_pending_jobs()
    chains = [headers[ORIGIN_KEY] for headers in headers_of(pgmq_sql, "q_job_dst")]
    assert [(chain[0]["queue"], chain[0]["msg_id"], chain[0]["by"]) for chain in chains] == [
        ("job_src", n, "operator-user") for n in range(1, 5)
    ]


def test_the_message_page_says_where_a_copy_came_from_and_where_the_copies_went(operator_client, make_queue, pgmq_sql):
    make_queue("page_src")
    make_queue("page_dst")
    pgmq_sql.execute("SELECT pgmq.send('page_src', '{\"n\": 1}'::jsonb)")
    for _ in range(9):
        pgmq_sql.execute("SELECT pgmq.read('page_src', 0, 1)")
    act(operator_client, "page_src", "move", [1], destination="page_dst", original="archive")

    copy_page = parse(operator_client.get("/queues/page_dst/messages/1/"))
    assert text(copy_page, "[data-copied-from]").startswith("Copied from page_src #1 (read 9 times)")
    link = copy_page.select_one("[data-copied-from] a")
    assert link["href"] == "/queues/page_src/messages/1/?source=archive"

    original_page = parse(operator_client.get("/queues/page_src/messages/1/?source=archive"))
    # Every queue's headers are read whole for it: a region of its own, loaded after the page.
    copies_region = original_page.select_one("#message-copies")["hx-get"]
    assert copies_region == "/queues/page_src/messages/1/copies/"
    original_page = parse(operator_client.get(copies_region))
    copies = text(original_page, "[data-copies]")
    assert "page_dst #1" in copies and "move" in copies
    assert original_page.select_one("[data-copies] a")["href"] == "/queues/page_dst/messages/1/?source=live"
    assert original_page.select_one("[data-copies-partial]") is None

    untouched = parse(operator_client.get("/queues/page_dst/messages/1/copies/"))
    assert "No copies found" in text(untouched, "[data-copies]")


def test_the_message_browser_filters_by_origin(operator_client, make_queue, pgmq_sql):
    make_queue("filter_src", messages=3)
    make_queue("filter_dst", messages=2)  # 1, 2: sent by a client, no origin
    act(operator_client, "filter_src", "move", [1, 3], destination="filter_dst", original="archive")  # 3, 4

    def shown(query: str) -> list[int]:
        response = operator_client.get(f"/queues/filter_dst/messages/?{query}")
        assert response.status_code == 200
        return sorted(int(row["data-msg-id"]) for row in parse(response).select("tbody tr[data-msg-id]"))

    assert shown("copied_from=filter_src") == [3, 4]
    assert shown("copied_from=filter_src%233") == [4]
    assert shown("copied_from=filter_src+%233") == [4]
    bad = operator_client.get("/queues/filter_dst/messages/?copied_from=filter_src%23x")
    assert bad.status_code == 400 and "copied_from" in bad.content.decode()
    # The API's filter is the same filter.
    listed = operator_client.get("/api/v1/queues/filter_dst/messages/?copied_from=filter_src%231")
    assert [row["msg_id"] for row in listed.json()["results"]] == [3]


@pytest.mark.parametrize(
    ("names", "queue", "pair"),
    [
        (["orders", "orders-dlq", "notifications"], "orders", "orders-dlq"),
        (["orders", "orders-dlq", "notifications"], "orders-dlq", "orders"),
        (["jobs", "jobs_dlq"], "jobs_dlq", "jobs"),
        (["mail", "mail.dead"], "mail", "mail.dead"),
        (["mail", "notifications"], "mail", None),
        (["orders-dlq"], "orders-dlq", None),
    ],
)
def test_a_dead_letter_queue_is_paired_with_its_queue_by_name(names, queue, pair):
    assert dead_letter_pair(queue, names) == pair


def test_an_admin_pairs_queues_whose_names_say_nothing(settings):
    settings.DEAD_LETTER_QUEUES = {"parked": "billing"}
    assert dead_letter_pair("parked", ["billing", "parked", "billing-dlq"]) == "billing"
    assert dead_letter_pair("billing", ["billing", "parked", "billing-dlq"]) == "parked"


def test_the_move_dialog_proposes_the_pair_both_ways(operator_client, make_queue):
    make_queue("a_first")  # alphabetically first: what the dialog used to propose
    make_queue("pairs", messages=1)
    make_queue("pairs-dlq", messages=1)
    for queue, pair in (("pairs", "pairs-dlq"), ("pairs-dlq", "pairs")):
        _, dialog = act(operator_client, queue, "move", [1], confirmed=False)
        assert dialog.select_one("select[name=destination] option[selected]")["value"] == pair


def test_the_dead_letter_queue_page_sends_everything_back_in_one_job(operator_client, make_queue, pgmq_sql):
    make_queue("back")
    make_queue("back-dlq", messages=3)
    page = parse(operator_client.get("/queues/back-dlq/"))
    form = page.select_one("form[data-send-back]")
    assert "Send all back to back" in text(form, "button")
    fields = {field["name"]: field.get("value", "") for field in form.select("input[type=hidden]")}
    assert fields["destination"] == "back" and fields["scope"] == "matching"
    fields.pop("csrfmiddlewaretoken")
    dialog = parse(operator_client.post("/queues/back-dlq/act/", fields, headers={"HX-Request": "true"}))
    assert dialog.select_one("[data-plan-count]").get_text() == "3"
    assert dialog.select_one("select[name=destination] option[selected]")["value"] == "back"
    assert parse(operator_client.get("/queues/back/")).select_one("form[data-send-back]") is None


def test_a_selection_by_read_ct_leads_with_it_and_takes_the_in_flight_in_one_click(
    operator_client, make_queue, pgmq_sql
):
    make_queue("poisoned", messages=4)
    for _ in range(5):
        pgmq_sql.execute("SELECT pgmq.read('poisoned', 0, 3)")  # 1-3 fail five times
    pgmq_sql.execute("SELECT pgmq.read('poisoned', 600, 3)")  # and are in flight again
    data = {"action": "retry", "source": "live", "scope": "matching", "filter_query": "read_ct_min=5"}
    response = operator_client.post("/queues/poisoned/act/", data, headers={"HX-Request": "true"})
    dialog = parse(response)
    lead = text(dialog, "[data-read-ct-lead]")
    assert "chosen by read_ct" in lead and "3 of the 3" in lead and "in flight" in lead
    assert "second delivery" in text(dialog, "[data-in-flight]")
    one_click = dialog.select_one("button[name=include_in_flight]")
    assert " ".join(one_click.get_text().split()) == "Retry now all 3, in flight included"
    fields = {field["name"]: field.get("value", "") for field in dialog.select("form input[type=hidden]")}
    fields[one_click["name"]] = one_click["value"]
    operator_client.post("/queues/poisoned/act/", fields, headers={"HX-Request": "true"})
    run_pending_jobs()
    visible = pgmq_sql.execute("SELECT msg_id FROM pgmq.q_poisoned WHERE vt <= now() ORDER BY msg_id").fetchall()
    assert [row[0] for row in visible] == [1, 2, 3, 4]


def test_a_bad_origin_filter_is_a_clear_400_in_the_api(operator_client, make_queue):
    make_queue("api_origin")
    response = operator_client.get("/api/v1/queues/api_origin/messages/?copied_from=x%23-1")
    assert response.status_code == 400
    assert "copied_from" in json.dumps(response.json())

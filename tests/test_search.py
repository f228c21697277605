"""Search that forgives: a path without a prefix means the message, what matched is shown and
marked in the list, the filter form folds away once applied, an empty result offers no actions."""

from __future__ import annotations

import json

from tests.conftest import uses_databases
from tests.pages import message_rows, parse
from tests.test_redaction import redacting, unredacted_client  # noqa: F401 (fixtures)

pytestmark = uses_databases


def found(client, queue: str, query: str) -> list[str]:
    response = client.get(f"/queues/{queue}/messages/", {"q": query})
    assert response.status_code == 200, response.content.decode()[:500]
    return [row["msg_id"] for row in message_rows(parse(response))]


def send(pgmq_sql, queue: str, *messages: dict) -> None:
    for message in messages:
        pgmq_sql.execute("SELECT pgmq.send(%s, %s::jsonb)", [queue, json.dumps(message)])


def test_a_path_without_a_prefix_means_the_message(signed_in_client, make_queue, pgmq_sql):
    make_queue("customers")
    send(
        pgmq_sql,
        "customers",
        {"customer": {"id": 2122}, "kind": "refund"},
        {"customer": {"id": 7}, "kind": "refund"},
        {"customer": {"id": "2122"}, "kind": "order"},
        {"note": "at 10:30 see https://example.com/x"},
    )
    assert found(signed_in_client, "customers", "customer.id:2122") == ["3", "1"]
    assert found(signed_in_client, "customers", "customer.id:2122") == found(
        signed_in_client, "customers", "message.customer.id:2122"
    )
    assert found(signed_in_client, "customers", "kind:ref*") == ["2", "1"]
    assert found(signed_in_client, "customers", "kind:refund customer.id:7") == ["2"]
    # What was text before still is: a time, an address, a word ending in a colon.
    assert found(signed_in_client, "customers", "10:30") == ["4"]
    assert found(signed_in_client, "customers", "https://example.com/x") == ["4"]
    assert found(signed_in_client, "customers", "see:") == []
    assert found(signed_in_client, "customers", "message:10:30") == ["4"]  # text, said so
    assert found(signed_in_client, "customers", "headers:see") == []


def test_a_path_without_a_prefix_cannot_find_a_redacted_value(redacting, operator_client):  # noqa: F811
    assert found(operator_client, "private", "customer.email:bob*") == []
    assert found(operator_client, "private", "customer.email:bob@example.com") == []
    assert found(operator_client, "private", "customer.id:42") == ["1"]


def test_an_empty_result_has_no_action_bar(operator_client, make_queue):
    make_queue("acted", messages=3)
    some = parse(operator_client.get("/queues/acted/messages/", {"q": "n:2"}))
    assert [row["msg_id"] for row in message_rows(some)] == ["2"]
    assert some.select_one("form.action-bar") is not None
    none = parse(operator_client.get("/queues/acted/messages/", {"q": "n:99"}))
    assert message_rows(none) == [] and "No message matches these filters" in none.get_text()
    assert none.select_one("form.action-bar") is None
    assert "Select messages to act on them" not in none.get_text()


def test_the_filter_form_folds_away_once_applied(signed_in_client, make_queue):
    make_queue("folded", messages=3)

    def folded(query: dict):
        page = parse(signed_in_client.get("/queues/folded/messages/", query))
        fold = page.select_one("details.filter-fold")
        assert fold is not None and fold.select_one("form.filters input[name=q]") is not None
        return fold, " ".join(fold.summary.get_text().split())

    fold, summary = folded({})
    assert fold.has_attr("open") and summary == "Filters"
    fold, summary = folded({"q": "n:2", "state": "visible"})
    assert not fold.has_attr("open")
    assert summary == "Filtered: state is visible, message.n is '2'"
    fold, _ = folded({"q": '"unclosed'})  # what is wrong stays in sight
    assert fold.has_attr("open")


def previews(client, queue: str, query: str) -> dict[str, object]:
    """msg_id -> the preview line of its row (a tag: its text, its marks, its markup)."""
    response = client.get(f"/queues/{queue}/messages/", {"q": query})
    assert response.status_code == 200, response.content.decode()[:500]
    return {
        row["data-msg-id"]: row.select_one("td.payload summary code")
        for row in parse(response).select("tr[data-msg-id]")
    }


def test_the_preview_shows_the_part_that_matched_and_marks_it(signed_in_client, make_queue, pgmq_sql):
    make_queue("haystacks")
    hostile = "<script>alert(1)</script>"
    send(
        pgmq_sql,
        "haystacks",
        {"a": "hay " * 100, "note": f"a Needle and {hostile} here", "tail": "z" * 300},
        {"kind": "refund", "note": "short"},
    )
    found_far = previews(signed_in_client, "haystacks", "needle")["1"]
    text = found_far.get_text()
    assert [mark.get_text() for mark in found_far.select("mark")] == ["Needle"]
    assert text.startswith("…") and text.endswith("…") and "hay hay" in text and hostile in text
    assert found_far.select("script") == [] and "&lt;script&gt;" in str(found_far)
    # The hostile text itself searched for: marked, still text.
    marked = previews(signed_in_client, "haystacks", hostile)["1"]
    assert [mark.get_text() for mark in marked.select("mark")] == [hostile]
    assert marked.select("script") == [] and "<mark>&lt;script&gt;alert(1)&lt;/script&gt;</mark>" in str(marked)
    # A path:value search marks the value; a short message is shown whole, uncut.
    short = previews(signed_in_client, "haystacks", "kind:ref*")["2"]
    assert [mark.get_text() for mark in short.select("mark")] == ["ref"]
    assert short.get_text() == '{"kind": "refund", "note": "short"}'


def test_a_marked_preview_never_shows_a_redacted_value(redacting, operator_client, unredacted_client):  # noqa: F811
    for query in ("keep me", "note:keep*", "customer.id:42"):
        shown = previews(operator_client, "private", query)["1"]
        assert shown.select("mark"), query
        for secret in ("bob@example.com", "4111111111111111", "Bearer s3cret", "hidden-too"):
            assert secret not in str(shown), query
    assert previews(operator_client, "private", "bob") == {}
    revealed = previews(unredacted_client, "private", "bob@example")["1"]
    assert [mark.get_text() for mark in revealed.select("mark")] == ["bob@example"]

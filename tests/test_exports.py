"""Exports of the message browser's filter, CSV and NDJSON: the same rows plain SQL finds, numbers
exact, redacted as the list is, streamed in keyset batches with flat memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from urllib.parse import unquote

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from queues.selectors import exports
from tests.conftest import AWKWARD_NAMES, uses_databases

pytestmark = uses_databases

# The columns as plain SQL writes them (timestamps as JSON writes them, payloads as jsonb text).
SQL_COLUMNS = """msg_id, read_ct, to_json(enqueued_at) #>> '{}', to_json(vt) #>> '{}', message::text,
                 headers::text"""


def export(client, queue: str, export_format: str, query: str = ""):
    response = client.get(reverse(f"messages-export-{export_format}", args=[queue]) + ("?" + query if query else ""))
    assert response.status_code == 200, response.content.decode()[:500]
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def ndjson_rows(text: str) -> list[dict]:
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def sql_rows(pgmq_sql, table: str, where: str = "true") -> list[tuple]:
    return pgmq_sql.execute(f'SELECT {SQL_COLUMNS} FROM pgmq."{table}" WHERE {where} ORDER BY msg_id').fetchall()


@pytest.fixture
def orders(make_queue, pgmq_sql):
    """40 messages: 1-15 archived, 16-20 in flight (read once), the rest visible; headers on all."""
    make_queue("orders")
    pgmq_sql.execute("""SELECT pgmq.send_batch('orders',
        array_agg(jsonb_build_object('n', i, 'kind', CASE WHEN i % 3 = 0 THEN 'refund' ELSE 'sale' END)),
        array_agg(jsonb_build_object('trace', 't-' || i))) FROM generate_series(1, 40) i""")
    pgmq_sql.execute("SELECT pgmq.archive('orders', ARRAY(SELECT generate_series(1, 15)::bigint))")
    pgmq_sql.execute("SELECT * FROM pgmq.read('orders', 3600, 5)")  # 16-20: in flight
    return "orders"


def as_sql(row: dict) -> tuple:
    """An exported row (NDJSON parsed, or CSV) in plain SQL's shape."""

    def text(value):
        return value if isinstance(value, str) or value is None else json.dumps(value, separators=(", ", ": "))

    return (
        int(row["msg_id"]),
        int(row["read_ct"]),
        row["enqueued_at"],
        row["vt"],
        text(row["message"]),
        text(row["headers"]),
    )


@pytest.mark.parametrize(
    "source, tables", [("live", ["q_orders"]), ("archive", ["a_orders"]), ("both", ["q_orders", "a_orders"])]
)
def test_it_exports_exactly_what_sql_finds_for_each_source(signed_in_client, orders, pgmq_sql, source, tables):
    expected = sorted(row for table in tables for row in sql_rows(pgmq_sql, table))
    _, ndjson = export(signed_in_client, orders, "ndjson", f"source={source}")
    _, text = export(signed_in_client, orders, "csv", f"source={source}")
    lines, cells = ndjson_rows(ndjson), csv_rows(text)
    assert [row["msg_id"] for row in lines] == [row[0] for row in expected]
    # CSV: payloads are PostgreSQL's own text, compared as text.
    assert [as_sql(row) for row in cells] == expected
    # NDJSON: payloads are JSON values inside the line, compared as values.
    assert [
        (row["msg_id"], row["read_ct"], row["enqueued_at"], row["vt"], row["message"], row["headers"]) for row in lines
    ] == [(*row[:4], json.loads(row[4]), json.loads(row[5])) for row in expected]
    assert {row["source"] for row in lines} == {"live" if table.startswith("q_") else "archive" for table in tables}
    for row in lines:
        assert (row["archived_at"] is None) == (row["source"] == "live")
        assert row["state"] == (
            "archived" if row["source"] == "archive" else "in flight" if 16 <= row["msg_id"] <= 20 else "visible"
        )
    assert list(cells[0]) == list(lines[0])  # the same columns in both formats, in the same order


@pytest.mark.parametrize(
    "query, live_where, archive_where",
    [
        ("state=in_flight", "vt > now() AND read_ct > 0", None),
        ("q=refund", "message->>'kind' = 'refund'", "message->>'kind' = 'refund'"),
        (
            "message=" + json.dumps({"kind": "sale"}) + "&read_ct_max=0",
            'message @> \'{"kind": "sale"}\' AND read_ct = 0',
            'message @> \'{"kind": "sale"}\' AND read_ct = 0',
        ),
        ("q=headers.trace:t-1*", "headers->>'trace' LIKE 't-1%%'", "headers->>'trace' LIKE 't-1%%'"),
    ],
)
def test_filters_export_what_the_same_filter_finds_in_sql(
    signed_in_client, orders, pgmq_sql, query, live_where, archive_where
):
    expected = sql_rows(pgmq_sql, "q_orders", live_where)
    if archive_where:
        expected = sorted(expected + sql_rows(pgmq_sql, "a_orders", archive_where))
    _, text = export(signed_in_client, orders, "csv", "source=both&" + query)
    assert [as_sql(row) for row in csv_rows(text)] == expected
    _, ndjson = export(signed_in_client, orders, "ndjson", "source=both&" + query)
    assert [row["msg_id"] for row in ndjson_rows(ndjson)] == [row[0] for row in expected]


def test_numbers_stay_exactly_as_stored_in_both_formats(signed_in_client, make_queue, pgmq_sql):
    make_queue("exact")
    pgmq_sql.execute("""SELECT pgmq.send('exact', '{"big": 12345678901234567890.5, "price": 1.10,
                        "tiny": 0.12345678901234567890}'::jsonb, '{"weight": 2.50}'::jsonb)""")
    _, ndjson = export(signed_in_client, "exact", "ndjson")
    _, text = export(signed_in_client, "exact", "csv")
    for output in (ndjson, text):
        for number in ("12345678901234567890.5", "1.10", "0.12345678901234567890", "2.50"):
            assert number in output, (number, output)
    assert csv_rows(text)[0]["message"] == pgmq_sql.execute("SELECT message::text FROM pgmq.q_exact").fetchone()[0]


def test_a_user_without_the_permission_gets_redacted_values(
    settings, make_queue, pgmq_sql, operator_client, django_user_model
):
    settings.REDACT_PATHS = [("message", ("customer", "email")), ("headers", ("authorization",))]
    make_queue("private")
    pgmq_sql.execute("""SELECT pgmq.send('private', '{"customer": {"email": "bob@example.com", "id": 42},
                        "note": "keep me"}'::jsonb, '{"authorization": "Bearer s3cret"}'::jsonb)""")
    for export_format in ("csv", "ndjson"):
        _, text = export(operator_client, "private", export_format)
        assert "bob@example.com" not in text and "s3cret" not in text
        assert "[redacted]" in text and "keep me" in text
        # Filters match what the user sees: the hidden value finds nothing.
        _, found = export(operator_client, "private", export_format, "q=bob%40example")
        assert "keep me" not in found
    trusted = django_user_model.objects.create_user("trusted", password="a-long-test-password-43")
    trusted.groups.add(Group.objects.get(name="Viewer"))
    trusted.user_permissions.add(Permission.objects.get(codename="view_unredacted"))
    client = Client()
    client.force_login(trusted)
    _, text = export(client, "private", "ndjson")
    assert "bob@example.com" in text and "Bearer s3cret" in text


@pytest.mark.parametrize(
    "query, complaint",
    [
        ("read_ct_min=-1", "greater than or equal to 0"),
        ("message={bad", "not valid JSON"),
        ("q=%22unclosed", "close the quotes"),
        ("source=elsewhere", "not one of the available choices"),
        ("enqueued_after=2026-01-02&enqueued_before=2026-01-01", "must not be before enqueued_after"),
    ],
)
def test_it_answers_400_saying_what_is_wrong_with_a_filter(signed_in_client, orders, query, complaint):
    for export_format in ("csv", "ndjson"):
        response = signed_in_client.get(reverse(f"messages-export-{export_format}", args=[orders]) + "?" + query)
        assert response.status_code == 400
        assert complaint in response.content.decode()


def test_it_requires_a_sign_in_and_any_role_may_export(client, orders, django_user_model):
    response = client.get(reverse("messages-export-csv", args=[orders]))
    assert response.status_code == 302 and "/login/" in response["Location"]
    from tests.conftest import client_with_role

    viewer = client_with_role(client, django_user_model, "Viewer")
    export(viewer, orders, "csv")
    page = viewer.get(reverse("messages", args=[orders]) + "?source=archive&q=refund&after=9").content.decode()
    assert reverse("messages-export-csv", args=[orders]) + '?source=archive&amp;q=refund"' in page
    assert reverse("messages-export-ndjson", args=[orders]) + '?source=archive&amp;q=refund"' in page


def test_it_rejects_post(signed_in_client, orders):
    assert signed_in_client.post(reverse("messages-export-csv", args=[orders])).status_code == 405


# pgmq refuses ; in a name, so a second parameter is tried with a comma.
@pytest.mark.parametrize("name", AWKWARD_NAMES + ['quote", filename="evil.sh'])
def test_awkward_queue_names_work_in_the_url_and_the_file_name(signed_in_client, make_queue, pgmq_sql, name):
    make_queue(name, messages=3)
    response, text = export(signed_in_client, name, "ndjson", "source=both")
    assert [row["msg_id"] for row in ndjson_rows(text)] == [1, 2, 3]
    disposition = response["Content-Disposition"]
    disposition.encode("ascii")  # nothing outside ASCII in a header
    plain, _, extended = disposition.partition("; filename*=UTF-8''")
    assert plain.startswith('attachment; filename="') and plain.count('"') == 2
    assert "/" not in plain and ";" not in plain.removeprefix("attachment;")
    assert unquote(extended) == f"{name}-both.ndjson"


def test_cells_a_spreadsheet_would_run_as_formulas_are_made_inert(signed_in_client, make_queue, pgmq_sql):
    make_queue("formulas")
    pgmq_sql.execute("SELECT pgmq.send('formulas', '-2'::jsonb)")
    pgmq_sql.execute("SELECT pgmq.send('formulas', '\"=HYPERLINK(1)\"'::jsonb, '{\"a\": \"=1+1\"}'::jsonb)")
    _, text = export(signed_in_client, "formulas", "csv")
    rows = csv_rows(text)
    assert rows[0]["message"] == "'-2"
    assert rows[1]["message"] == '"=HYPERLINK(1)"'  # a JSON string starts with its quote: no formula
    for row in rows:
        for value in row.values():
            assert not (value or "").startswith(("=", "+", "-", "@", "\t", "\r")), value
    _, ndjson = export(signed_in_client, "formulas", "ndjson")
    assert ndjson_rows(ndjson)[0]["message"] == -2  # NDJSON keeps the value itself


def test_batches_walk_the_whole_table_across_gaps_and_sparse_matches(
    signed_in_client, make_queue, pgmq_sql, monkeypatch
):
    monkeypatch.setattr(exports, "EXPORT_FIRST_BATCH_ROWS", 7)
    monkeypatch.setattr(exports, "EXPORT_BATCH_ROWS", 7)
    monkeypatch.setattr(exports, "EXPORT_SPAN", 25)
    statements = []
    real_batch_sql = exports._batch_sql
    monkeypatch.setattr(exports, "_batch_sql", lambda *a, **k: statements.append(k) or real_batch_sql(*a, **k))
    make_queue("gappy", messages=300)
    pgmq_sql.execute("DELETE FROM pgmq.q_gappy WHERE msg_id BETWEEN 40 AND 260")  # a gap of 221 ids
    pgmq_sql.execute("SELECT pgmq.archive('gappy', ARRAY(SELECT generate_series(1, 20)::bigint))")
    _, text = export(signed_in_client, "gappy", "ndjson", "source=both")
    expected = [*range(1, 40), *range(261, 301)]
    assert [row["msg_id"] for row in ndjson_rows(text)] == expected
    assert all(k["limit"] <= 7 and k["ceiling"] - k["after"] <= 25 for k in statements)
    assert len(statements) < 30  # the gap was jumped, not walked 25 ids at a time
    # A search matching one message in ten, through spans that hold none: still every match.
    statements.clear()
    _, text = export(signed_in_client, "gappy", "csv", "source=both&q=message.n:*0")
    assert [int(row["msg_id"]) for row in csv_rows(text)] == [n for n in expected if n % 10 == 0]


def test_streaming_keeps_memory_flat_however_many_rows(signed_in_client, make_queue, pgmq_sql):
    """50,000 rows of ~1 KB: the export holds one batch (a few MB) at a time, not the 50+ MB."""
    make_queue("big")
    pgmq_sql.execute("""SELECT pgmq.send_batch('big', ARRAY(SELECT jsonb_build_object('n', i, 'pad', repeat('x', 1000))
                        FROM generate_series(1, 50000) i))""")
    response = signed_in_client.get(reverse("messages-export-ndjson", args=["big"]))
    assert response.streaming
    tracemalloc.start()
    try:
        total = rows = 0
        for chunk in response.streaming_content:
            total += len(chunk)
            rows += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 50_000 and total > 50_000_000
    assert peak < total / 5, f"peak {peak:,} bytes while streaming {total:,}"

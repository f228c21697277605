"""Reaching pgmq's tables: names by pgmq's own rule, models built once, columns read not assumed."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from django.urls import resolve, reverse

from queues.pgmq import ARCHIVE, LIVE, Queue, message_model, queue_tables
from tests.conftest import AWKWARD_NAMES, uses_databases

pytestmark = uses_databases


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_tables_are_found_by_pgmqs_own_naming_rule(make_queue, pgmq_sql, name):
    make_queue(name, messages=3)
    tables = queue_tables(name)
    expected = pgmq_sql.execute(
        "SELECT pgmq.format_table_name(%s, 'q'), pgmq.format_table_name(%s, 'a')", [name, name]
    ).fetchone()
    assert (tables[LIVE].name, tables[ARCHIVE].name) == expected
    assert tables[LIVE].exists and tables[ARCHIVE].exists


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_the_models_read_every_awkward_queue(make_queue, pgmq_sql, name):
    make_queue(name, messages=3)
    pgmq_sql.execute("SELECT pgmq.archive(%s, 1::bigint)", [name])
    queue = Queue.objects.get(queue_name=name)
    assert sorted(queue.live_messages.objects.values_list("msg_id", flat=True)) == [2, 3]
    assert list(queue.archived_messages.objects.values_list("msg_id", "message")) == [(1, {"n": 1})]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_a_queue_url_leads_back_to_the_same_queue(name):
    url = reverse("queue", args=[name])
    # What a server hands Django: the path with one level of %-escapes decoded.
    assert resolve(unquote(url)).kwargs["queue_name"] == name


def test_a_model_is_built_once_per_table_and_then_reused(make_queue):
    make_queue("cached_model")
    first = Queue.objects.get(queue_name="cached_model").live_messages
    second = Queue.objects.get(queue_name="cached_model").live_messages
    assert first is second
    assert Queue.objects.get(queue_name="cached_model").archived_messages is not first


def test_tables_of_pgmq_before_1_5_are_read_without_headers_or_last_read_at(make_queue, pgmq_sql):
    """pgmq 1.4's tables lack headers and last_read_at (added in 1.5 and 1.10). No registry ships
    pgmq 1.4's SQL, so a real queue is reshaped to that layout: its columns, its rows."""
    make_queue("from_pgmq_1_4", messages=2)
    pgmq_sql.execute("SELECT pgmq.archive('from_pgmq_1_4', 1::bigint)")
    for table in ("q_from_pgmq_1_4", "a_from_pgmq_1_4"):
        pgmq_sql.execute(f"ALTER TABLE pgmq.{table} DROP COLUMN headers, DROP COLUMN last_read_at")

    queue = Queue.objects.get(queue_name="from_pgmq_1_4")
    live = queue.live_messages
    field_names = {field.name for field in live._meta.get_fields()}
    assert field_names == {"msg_id", "read_ct", "enqueued_at", "vt", "message"}
    assert list(live.objects.values_list("msg_id", "message")) == [(2, {"n": 2})]
    assert list(queue.archived_messages.objects.values_list("msg_id", flat=True)) == [1]


def test_a_changed_table_gets_a_new_model(make_queue, pgmq_sql):
    make_queue("upgraded_later")
    before = Queue.objects.get(queue_name="upgraded_later").live_messages
    pgmq_sql.execute("ALTER TABLE pgmq.q_upgraded_later DROP COLUMN headers")
    after = Queue.objects.get(queue_name="upgraded_later").live_messages
    assert after is not before
    assert "headers" not in {field.name for field in after._meta.get_fields()}


def test_a_missing_table_is_reported_not_guessed(make_queue, pgmq_sql):
    make_queue("half_dropped")
    pgmq_sql.execute("DROP TABLE pgmq.q_half_dropped")
    tables = queue_tables("half_dropped")
    assert not tables[LIVE].exists
    with pytest.raises(LookupError, match="q_half_dropped"):
        message_model(tables[LIVE])
    pgmq_sql.execute("DELETE FROM pgmq.meta WHERE queue_name = 'half_dropped'")
    pgmq_sql.execute("DROP TABLE pgmq.a_half_dropped")


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_every_page_and_panel_works_for_every_awkward_name(signed_in_client, make_queue, pgmq_sql, name):
    make_queue(name)
    pgmq_sql.execute(
        "SELECT pgmq.send_batch(%s, array_fill('{\"n\": 1}'::jsonb, ARRAY[3]), "
        'array_fill(\'{"x-pgmq-group": "g"}\'::jsonb, ARRAY[3]))',
        [name],
    )
    pgmq_sql.execute("SELECT pgmq.archive(%s, 1::bigint)", [name])
    base = reverse("queue", args=[name])
    for path in (
        "",
        "poison/",
        "archive-history/?range=1h",
        "diagnostics/",
        "messages/?q=n",
        "messages/?source=both&headers=%7B%22x-pgmq-group%22%3A%22g%22%7D",
        "messages/2/",
        "messages/1/?source=archive",
        "messages/2/raw/",
    ):
        response = signed_in_client.get(base + path)
        assert response.status_code == 200, (name, path, response.content[:300])

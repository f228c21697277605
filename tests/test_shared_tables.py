"""Queue names that differ only by case: pgmq lowercases a name to make its tables', so `Foo` and
`FOO`, both created in SQL, are two rows of pgmq.meta and one table pair q_foo / a_foo. The
dashboard says so on every page of either, counts the table once, and refuses what would act on
the other name's messages without saying (purge, drop, a move into or out of either)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.db.models import F
from django.test import override_settings
from django.urls import reverse

from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample
from tests.conftest import uses_databases
from tests.pages import number, overview_rows, parse, totals
from tests.test_alerting import alert_rules  # noqa: F401 (a fixture)
from tests.test_api import as_role  # noqa: F401 (a fixture)
from tests.test_metrics import metrics_on, per_queue, scrape  # noqa: F401 (a fixture)

pytestmark = uses_databases
PAIR = ("Foo", "FOO")
OTHER = {"Foo": "FOO", "FOO": "Foo"}


@pytest.fixture
def forget_the_pair(pgmq_sql):
    """Whatever a test did, the pair goes afterwards: pgmq.drop_queue of the second name finds no
    table (the first took it) and leaves its row, which only a DELETE removes."""
    yield
    pgmq_sql.execute("SELECT pgmq.drop_queue(queue_name) FROM pgmq.meta WHERE queue_name = ANY(%s)", [list(PAIR)])
    pgmq_sql.execute("DELETE FROM pgmq.meta WHERE queue_name = ANY(%s)", [list(PAIR)])


@pytest.fixture
def foo_pair(pgmq_sql, forget_the_pair):
    """Foo with 6 messages (2 of them archived), then FOO created in SQL beside it."""
    pgmq_sql.execute("SELECT pgmq.create('Foo')")
    pgmq_sql.execute("SELECT pgmq.send_batch('Foo', array_agg(jsonb_build_object('n', i))) "
                     "FROM generate_series(1, 6) i")
    pgmq_sql.execute("SELECT pgmq.archive('Foo', ARRAY[1, 2]::bigint[])")
    pgmq_sql.execute("SELECT pgmq.create('FOO')")
    return PAIR


def table_truth(pgmq_sql) -> tuple[int, int, int]:
    """(live rows, archived rows, messages ever sent) of q_foo / a_foo, by SQL."""
    return pgmq_sql.execute("SELECT (SELECT count(*) FROM pgmq.q_foo), (SELECT count(*) FROM pgmq.a_foo), "
                            "(SELECT last_value FROM pgmq.q_foo_msg_id_seq)").fetchone()


def sharing_note(page) -> str:
    note = page.select_one("[data-shared-tables]")
    return " ".join(note.get_text().split()) if note else ""


def test_the_overview_lists_both_names_marked_and_counts_their_table_once(signed_in_client, foo_pair, make_queue,
                                                                          pgmq_sql):
    make_queue("bar", messages=3)
    page = parse(signed_in_client.get("/"))
    live, archived, sent = table_truth(pgmq_sql)
    assert (live, archived, sent) == (4, 2, 6)

    rows = overview_rows(page)
    assert set(rows) >= {"Foo", "FOO", "bar"}
    for name in PAIR:
        assert number(rows[name]["backlog"]) == live
        row = page.select_one(f'tr[data-queue="{name}"]')
        assert f"shares its tables with “{OTHER[name]}”" in sharing_note(row)
    assert sharing_note(page.select_one('tr[data-queue="bar"]')) == ""

    sums = totals(page)
    assert number(sums["queues"]) == 3  # three names are listed ...
    assert number(sums["backlog"]) == live + 3  # ... but q_foo is counted once
    assert number(sums["visible"]) == live + 3
    assert number(sums["archived"]) == archived
    assert number(sums["sent"]) == sent + 3


def test_the_api_says_which_names_share_and_counts_the_table_once(client, as_role, foo_pair, make_queue, pgmq_sql):
    make_queue("bar", messages=3)
    viewer = as_role("Viewer")
    listing = client.get("/api/v1/queues/", headers=viewer).json()
    live, archived, sent = table_truth(pgmq_sql)
    assert listing["totals"]["backlog"]["value"] == live + 3
    assert listing["totals"]["archived"]["value"] == archived
    assert listing["totals"]["sent"] == sent + 3
    by_name = {row["name"]: row for row in listing["results"]}
    assert {name: by_name[name]["shares_tables_with"] for name in (*PAIR, "bar")} == {
        "Foo": ["FOO"], "FOO": ["Foo"], "bar": []}
    for name in PAIR:
        detail = client.get(reverse("api-queue", args=[name]), headers=viewer).json()
        assert detail["shares_tables_with"] == [OTHER[name]] and detail["backlog"]["value"] == live


@pytest.mark.parametrize("name", PAIR)
def test_every_page_of_either_name_says_it_shares_its_tables(signed_in_client, foo_pair, name):
    pages = {"queue page": reverse("queue", args=[name]), "messages": reverse("messages", args=[name]),
             "archive": reverse("messages", args=[name]) + "?source=archive",
             "a message": reverse("message", args=[name, 3])}
    for what, url in pages.items():
        response = signed_in_client.get(url)
        assert response.status_code == 200, what
        page = parse(response)
        note = sharing_note(page)
        assert f"shares its tables with “{OTHER[name]}”" in note, what
        assert "pgmq gives both names the table q_foo" in note and "every figure here is that table's" in note, what
        link = page.select_one("[data-shared-tables] a")
        assert link["href"] == reverse("queue", args=[OTHER[name]]) and link.get_text() == OTHER[name], what


def test_metrics_count_the_shared_table_once(client, metrics_on, foo_pair, make_queue, pgmq_sql):
    make_queue("bar", messages=3)
    found = scrape(client)
    live, archived, sent = table_truth(pgmq_sql)
    backlog = per_queue(found, "pgmq_queue_backlog")
    assert sum(backlog.values()) == live + 3
    assert backlog["Foo"] == live and "FOO" not in backlog  # reported under the name created first
    assert sum(per_queue(found, "pgmq_queue_archived").values()) == archived
    assert sum(per_queue(found, "pgmq_queue_messages_sent_total").values()) == sent + 3
    shared = {dict(labels)["queue"]: (dict(labels)["reported_as"], value)
              for labels, value in found["pgmq_queue_shared_tables"].items()}
    assert shared == {"FOO": ("Foo", 1.0)}


def test_a_sampler_round_counts_the_shared_table_once(signed_in_client, foo_pair, make_queue, pgmq_sql, alert_rules):
    make_queue("bar", messages=3)
    alert_rules("""
        [[rules]]
        name = "anything waiting"
        queues = "*"
        measure = "visible"
        threshold = 1
        emails = ["oncall@example.com"]
    """)
    with override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"):
        take_sample(count_poison_everywhere=True)
        # One table, one alert: under the name created first.
        assert sorted(message.subject.split(":")[1].strip() for message in mail.outbox) == [
            "queue 'Foo' in main", "queue 'bar' in main"]

    live, archived, sent = table_truth(pgmq_sql)
    for name in PAIR:  # each name's page keeps the table's history
        sample = QueueSample.objects.get(queue_name=name)
        assert (sample.backlog, sample.archived, sample.sent_total) == (live, archived, sent)

    QueueSample.objects.update(sampled_at=F("sampled_at") - timedelta(seconds=60))
    pgmq_sql.execute("SELECT pgmq.send_batch('FOO', array_fill(%s::jsonb, ARRAY[30]))", [json.dumps({"late": 1})])
    page = parse(signed_in_client.get("/"))
    rows, sums = overview_rows(page), totals(page)
    assert rows["Foo"]["enqueue-rate"] == rows["FOO"]["enqueue-rate"] != "–"
    assert rows["bar"]["enqueue-rate"] == "0.0/s"
    assert sums["enqueue-rate"] == rows["Foo"]["enqueue-rate"]  # the 30 messages counted once

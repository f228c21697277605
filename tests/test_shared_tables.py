"""Queue names that differ only by case: pgmq lowercases a name to make its tables', so `Foo` and
`FOO`, both created in SQL, are two rows of pgmq.meta and one table pair q_foo / a_foo. The
dashboard says so on every page of either, counts the table once, and refuses what would act on
the other name's messages without saying (purge, drop, a move into or out of either)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.db.models import F
from django.test import override_settings
from django.urls import reverse
from playwright.sync_api import expect

from queues.management.commands.run_jobs import run_pending_jobs
from queues.management.commands.sample_metrics import take_sample
from queues.models import BulkJob, QueueSample
from tests.conftest import action_records, drop_queues, uses_databases
from tests.pages import number, overview_rows, parse, totals
from tests.test_accessibility import PASSWORD, Checker, sign_in
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
    drop_queues(pgmq_sql, PAIR)


@pytest.fixture
def foo_pair(pgmq_sql, forget_the_pair):
    """Foo with 6 messages (2 of them archived), then FOO created in SQL beside it."""
    pgmq_sql.execute("SELECT pgmq.create('Foo')")
    pgmq_sql.execute(
        "SELECT pgmq.send_batch('Foo', array_agg(jsonb_build_object('n', i))) FROM generate_series(1, 6) i"
    )
    pgmq_sql.execute("SELECT pgmq.archive('Foo', ARRAY[1, 2]::bigint[])")
    pgmq_sql.execute("SELECT pgmq.create('FOO')")
    return PAIR


def table_truth(pgmq_sql) -> tuple[int, int, int]:
    """(live rows, archived rows, messages ever sent) of q_foo / a_foo, by SQL."""
    return pgmq_sql.execute(
        "SELECT (SELECT count(*) FROM pgmq.q_foo), (SELECT count(*) FROM pgmq.a_foo), "
        "(SELECT last_value FROM pgmq.q_foo_msg_id_seq)"
    ).fetchone()


def listed(pgmq_sql) -> list[str]:
    return [
        row[0]
        for row in pgmq_sql.execute(
            "SELECT queue_name FROM pgmq.meta WHERE queue_name = ANY(%s) ORDER BY created_at", [list(PAIR)]
        )
    ]


def sharing_note(page) -> str:
    note = page.select_one("[data-shared-tables]")
    return " ".join(note.get_text().split()) if note else ""


def test_the_overview_lists_both_names_marked_and_counts_their_table_once(
    signed_in_client, foo_pair, make_queue, pgmq_sql
):
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
        "Foo": ["FOO"],
        "FOO": ["Foo"],
        "bar": [],
    }
    for name in PAIR:
        detail = client.get(reverse("api-queue", args=[name]), headers=viewer).json()
        assert detail["shares_tables_with"] == [OTHER[name]] and detail["backlog"]["value"] == live


@pytest.mark.parametrize("name", PAIR)
def test_every_page_of_either_name_says_it_shares_its_tables(signed_in_client, foo_pair, name):
    pages = {
        "queue page": reverse("queue", args=[name]),
        "messages": reverse("messages", args=[name]),
        "archive": reverse("messages", args=[name]) + "?source=archive",
        "a message": reverse("message", args=[name, 3]),
    }
    for what, url in pages.items():
        response = signed_in_client.get(url)
        assert response.status_code == 200, what
        page = parse(response)
        note = sharing_note(page)
        assert f"shares its tables with “{OTHER[name]}”" in note, what
        assert "pgmq gives both names the table q_foo" in note and "every figure here is that table's" in note, what
        link = page.select_one("[data-shared-tables] a")
        assert link["href"] == reverse("queue", args=[OTHER[name]]) and link.get_text() == OTHER[name], what


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("action", ["purge", "drop"])
def test_purge_and_drop_of_either_name_are_refused_on_the_page(admin_client, foo_pair, pgmq_sql, name, action):
    before = table_truth(pgmq_sql)
    url = reverse(f"{action}-queue", args=[name])

    offered = parse(admin_client.get(url))
    assert offered.select_one("input[name=confirm_name]") is None  # no form to type the name into
    explained = " ".join(offered.select_one("[data-shared-tables-explained]").get_text().split())
    assert "DELETE FROM pgmq.meta WHERE queue_name = 'FOO';" in explained

    refused = admin_client.post(url, {"confirm_name": name})
    assert refused.status_code == 409
    page = parse(refused)
    explained = " ".join(page.select_one("[data-shared-tables-explained]").get_text().split())
    assert f"“{name}” shares its tables with “{OTHER[name]}”" in explained
    assert "DELETE FROM pgmq.meta WHERE queue_name = 'FOO';" in explained
    assert "Nothing was changed" in page.get_text()

    assert table_truth(pgmq_sql) == before
    assert listed(pgmq_sql) == ["Foo", "FOO"]
    entry = action_records().get()
    assert (entry.action, entry.queue_name, entry.outcome) == (
        {"purge": "purge", "drop": "drop_queue"}[action],
        name,
        "failed",
    )
    assert f"shares its tables with “{OTHER[name]}”" in entry.details["error"]


@pytest.mark.parametrize("name", PAIR)
def test_purge_and_drop_of_either_name_are_refused_in_the_api(client, as_role, foo_pair, pgmq_sql, name):
    admin = as_role("Admin")
    before = table_truth(pgmq_sql)
    for action in ("purge", "drop"):
        response = client.post(
            reverse(f"api-{action}", args=[name]),
            {"confirm_name": name},
            content_type="application/json",
            headers=admin,
        )
        assert response.status_code == 409, response.content
        answer = response.json()
        assert f"shares its tables with “{OTHER[name]}”" in answer["detail"]
        assert answer["shares_tables_with"] == [OTHER[name]] and answer["table"] == "q_foo"
        assert answer["resolve_sql"] == ["DELETE FROM pgmq.meta WHERE queue_name = 'FOO';"]
    assert table_truth(pgmq_sql) == before
    assert listed(pgmq_sql) == ["Foo", "FOO"]
    assert list(action_records().order_by("id").values_list("action", "queue_name", "outcome")) == [
        ("purge", name, "failed"),
        ("drop_queue", name, "failed"),
    ]


def bar_ids(pgmq_sql) -> list[int]:
    return [row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_bar ORDER BY msg_id")]


def test_a_move_into_FOO_is_refused_on_the_page_in_the_api_and_as_a_job(
    client, operator_client, as_role, foo_pair, make_queue, pgmq_sql
):
    make_queue("bar", messages=3)
    before = table_truth(pgmq_sql)
    move = {"action": "move", "source": "live", "destination": "FOO", "original": "archive", "confirmed": "1"}

    offered = parse(
        operator_client.post(
            "/queues/bar/act/",
            {**move, "scope": "selected", "msg_id": ["1"], "confirmed": ""},
            headers={"HX-Request": "true"},
        )
    )
    option = offered.select_one('select[name=destination] option[value="FOO"]')
    assert option.has_attr("disabled") and "shares its tables with “Foo”" in option.get_text()

    page = operator_client.post(
        "/queues/bar/act/", {**move, "scope": "selected", "msg_id": ["1"]}, headers={"HX-Request": "true"}
    )
    assert page.status_code == 409
    assert "“FOO” shares its tables with “Foo”" in " ".join(parse(page).get_text().split())

    job_page = operator_client.post(
        "/queues/bar/act/", {**move, "scope": "matching", "filter_query": ""}, headers={"HX-Request": "true"}
    )
    assert job_page.status_code == 409
    assert "“FOO” shares its tables with “Foo”" in " ".join(parse(job_page).get_text().split())

    operator = as_role("Operator")
    api = client.post(
        "/api/v1/queues/bar/actions/",
        {"action": "move", "msg_ids": [1, 2], "parameters": {"destination": "FOO"}},
        content_type="application/json",
        headers=operator,
    )
    assert api.status_code == 409 and api.json()["shares_tables_with"] == ["Foo"], api.content
    api_job = client.post(
        "/api/v1/queues/bar/jobs/",
        {"action": "move", "filter": {}, "parameters": {"destination": "FOO"}},
        content_type="application/json",
        headers=operator,
    )
    assert api_job.status_code == 409 and "“FOO” shares its tables with “Foo”" in api_job.json()["detail"]

    assert not BulkJob.objects.exists()
    assert bar_ids(pgmq_sql) == [1, 2, 3] and table_truth(pgmq_sql) == before
    refusals = action_records().order_by("id")
    assert [(entry.action, entry.queue_name, entry.outcome) for entry in refusals] == [("move", "bar", "failed")] * 4
    assert all("“FOO” shares its tables with “Foo”" in entry.details["error"] for entry in refusals)


def test_a_move_or_requeue_out_of_either_name_is_refused(client, as_role, foo_pair, make_queue, pgmq_sql):
    make_queue("bar")
    operator = as_role("Operator")
    before = table_truth(pgmq_sql)
    for name in PAIR:
        for body in (
            {"action": "move", "msg_ids": [3], "parameters": {"destination": "bar"}},
            {"action": "requeue", "source": "archive", "msg_ids": [1], "parameters": {"destination": name}},
        ):
            response = client.post(
                reverse("api-message-action", args=[name]), body, content_type="application/json", headers=operator
            )
            assert response.status_code == 409, (name, body, response.content)
            assert f"“{name}” shares its tables with “{OTHER[name]}”" in response.json()["detail"]
    assert table_truth(pgmq_sql) == before and bar_ids(pgmq_sql) == []


def test_a_job_moving_into_a_name_that_came_to_share_its_table_fails_and_moves_nothing(
    operator_client, make_queue, pgmq_sql, forget_the_pair
):
    make_queue("bar", messages=3)
    pgmq_sql.execute("SELECT pgmq.create('Foo')")
    response = operator_client.post(
        "/queues/bar/act/",
        {
            "action": "move",
            "source": "live",
            "scope": "matching",
            "filter_query": "",
            "destination": "Foo",
            "original": "archive",
            "confirmed": "1",
        },
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    pgmq_sql.execute("SELECT pgmq.create('FOO')")  # before the runner takes the job

    run_pending_jobs()
    job = BulkJob.objects.get()
    assert job.status == "failed" and "“Foo” shares its tables with “FOO”" in job.error
    assert bar_ids(pgmq_sql) == [1, 2, 3] and table_truth(pgmq_sql)[0] == 0
    assert job.audit_entry.outcome == "failed"


def test_metrics_count_the_shared_table_once(client, metrics_on, foo_pair, make_queue, pgmq_sql):
    make_queue("bar", messages=3)
    found = scrape(client)
    live, archived, sent = table_truth(pgmq_sql)
    backlog = per_queue(found, "pgmq_queue_backlog")
    assert sum(backlog.values()) == live + 3
    assert backlog["Foo"] == live and "FOO" not in backlog  # reported under the name created first
    assert sum(per_queue(found, "pgmq_queue_archived").values()) == archived
    assert sum(per_queue(found, "pgmq_queue_messages_sent_total").values()) == sent + 3
    shared = {
        dict(labels)["queue"]: (dict(labels)["reported_as"], value)
        for labels, value in found["pgmq_queue_shared_tables"].items()
    }
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
            "queue 'Foo' in main",
            "queue 'bar' in main",
        ]

    live, archived, sent = table_truth(pgmq_sql)
    for name in PAIR:  # each name's page keeps the table's history
        sample = QueueSample.objects.get(queue_name=name)
        assert (sample.backlog, sample.archived, sample.sent_total) == (live, archived, sent)

    QueueSample.objects.update(sampled_at=F("sampled_at") - timedelta(seconds=60))
    pgmq_sql.execute("SELECT pgmq.send_batch('FOO', array_fill(%s::jsonb, ARRAY[30]))", [json.dumps({"late": 1})])
    page = parse(signed_in_client.get("/"))
    rows, sums = overview_rows(page), totals(page)
    assert rows["Foo"]["enqueue-rate"] == rows["FOO"]["enqueue-rate"] != "–"
    unit = rows["Foo"]["enqueue-rate"].partition("/")[2]  # one unit for the whole column
    assert rows["bar"]["enqueue-rate"] == f"0.0/{unit}"
    assert sums["enqueue-rate"] == rows["Foo"]["enqueue-rate"]  # the 30 messages counted once


def test_a_new_queue_is_refused_a_name_pgmq_would_give_an_existing_queues_table(admin_client, make_queue, pgmq_sql):
    """PostgreSQL's lower() makes both Straße and STRAẞE straße, though upper() keeps them apart: asking
    the database "equal ignoring case?" (upper on both sides) let STRAẞE in, to share q_straße."""
    make_queue("Straße", messages=2)
    assert pgmq_sql.execute(
        "SELECT lower('STRAẞE') = lower('Straße'), upper('STRAẞE') = upper('Straße')"
    ).fetchone() == (True, False)
    try:
        refused = admin_client.post(reverse("create-queue"), {"name": "STRAẞE", "confirm_name": "STRAẞE"})
        assert refused.status_code == 400
        assert "a queue named “Straße” exists; pgmq would give both the same table" in refused.content.decode()
        assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta WHERE queue_name = 'STRAẞE'").fetchone()[0] == 0
    finally:
        pgmq_sql.execute("DELETE FROM pgmq.meta WHERE queue_name = 'STRAẞE'")


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_shared_tables_notes_and_explanations_meet_wcag_2_a_and_aa(
    browser, dashboard_server, axe_script, django_user_model, foo_pair, make_queue, scheme
):
    make_queue("bar", messages=3)
    django_user_model.objects.create_user("checker", password=PASSWORD).groups.add(Group.objects.get(name="Admin"))
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(path=axe_script)
    page = context.new_page()
    page.emulate_media(color_scheme=scheme)
    axe = Checker(page, scheme)
    try:
        sign_in(page, dashboard_server)
        axe.check("overview with a shared table")
        page.goto(dashboard_server + "/queues/FOO/")
        page.get_by_text("What this means and how to resolve it").click()
        axe.check("queue page, explanation open")
        for action in ("purge", "drop"):
            page.goto(dashboard_server + f"/queues/FOO/{action}/")
            axe.check(f"{action} explained")
        page.goto(dashboard_server + "/queues/FOO/messages/")
        page.locator("input[name=msg_id]").first.check()
        page.get_by_role("button", name="Move…").first.click()
        expect(page.locator("[data-dialog-stage=confirm] [data-shared-tables-explained]")).to_be_visible()
        axe.check("move out of FOO explained")
    finally:
        context.close()
    assert not axe.found, axe.report()

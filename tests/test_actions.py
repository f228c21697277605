"""Actions on chosen messages, through the pages: what they change in pgmq's tables, what the page
says happened, and what the audit log records."""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from queues.models import AuditEntry
from tests.conftest import action_records, uses_databases
from tests.pages import parse

pytestmark = uses_databases


def act(
    client, queue: str, action: str, msg_ids: list[int], *, source: str = "live", confirmed: bool = True, **extra
) -> tuple[int, object]:
    data = {
        "action": action,
        "source": source,
        "scope": "selected",
        "msg_id": [str(i) for i in msg_ids],
        **({"confirmed": "1"} if confirmed else {}),
        **extra,
    }
    response = client.post(f"/queues/{queue}/act/", data, headers={"HX-Request": "true"})
    return response.status_code, parse(response)


def result_counts(dialog) -> dict[str, int]:
    result = dialog.select_one("[data-result]")
    return {
        name: int(result.select_one(f"[data-result-{name}]").get_text().replace(",", ""))
        for name in ("affected", "gone")
        if result.select_one(f"[data-result-{name}]")
    }


def live_ids(pgmq_sql, queue: str) -> list[int]:
    return [row[0] for row in pgmq_sql.execute(f"SELECT msg_id FROM pgmq.q_{queue} ORDER BY msg_id").fetchall()]


def archived_ids(pgmq_sql, queue: str) -> list[int]:
    return [row[0] for row in pgmq_sql.execute(f"SELECT msg_id FROM pgmq.a_{queue} ORDER BY msg_id").fetchall()]


def test_the_confirmation_states_what_will_happen_and_changes_nothing(operator_client, make_queue, pgmq_sql):
    make_queue("confirming", messages=5)
    status, dialog = act(operator_client, "confirming", "delete", [1, 2, 3], confirmed=False)
    assert status == 200
    plan = " ".join(dialog.select_one("[data-plan]").get_text().split())
    assert plan == "Delete 3 messages of confirming for good."
    assert dialog.select_one("button[type=submit]").get_text(strip=True) == "Delete (3)"
    assert live_ids(pgmq_sql, "confirming") == [1, 2, 3, 4, 5]
    assert action_records().count() == 0


def test_delete_removes_the_messages_and_keeps_their_payloads_in_the_audit_log(operator_client, make_queue, pgmq_sql):
    make_queue("deleting", messages=4)
    status, dialog = act(operator_client, "deleting", "delete", [1, 3])
    assert status == 200 and result_counts(dialog) == {"affected": 2, "gone": 0}
    assert live_ids(pgmq_sql, "deleting") == [2, 4] and archived_ids(pgmq_sql, "deleting") == []
    entry = action_records().get()
    assert (entry.username, entry.action, entry.queue_name, entry.requested, entry.affected, entry.outcome) == (
        "operator-user",
        "delete",
        "deleting",
        2,
        2,
        "done",
    )
    assert entry.target == {"msg_ids": [1, 3]}
    assert entry.deleted_payloads == [
        {"msg_id": 1, "message": {"n": 1}, "headers": None},
        {"msg_id": 3, "message": {"n": 3}, "headers": None},
    ]


def test_a_message_a_consumer_took_meanwhile_is_already_gone(operator_client, make_queue, pgmq_sql):
    make_queue("raced", messages=3)
    pgmq_sql.execute("SELECT pgmq.archive('raced', 2::bigint)")  # a consumer was faster
    status, dialog = act(operator_client, "raced", "archive", [1, 2, 3])
    assert status == 200 and result_counts(dialog) == {"affected": 2, "gone": 1}
    assert archived_ids(pgmq_sql, "raced") == [1, 2, 3]
    entry = action_records().get()
    assert (entry.affected, entry.already_gone, entry.outcome) == (2, 1, "partial")
    assert entry.details == {"already_gone_msg_ids": [2]}


def test_retry_makes_messages_visible_now_but_leaves_those_in_flight_unless_asked(
    operator_client, make_queue, pgmq_sql
):
    make_queue("retried", messages=4)
    pgmq_sql.execute("SELECT pgmq.set_vt('retried', ARRAY[1, 2]::bigint[], 3600)")  # delayed an hour
    pgmq_sql.execute("SELECT * FROM pgmq.read('retried', 3600, 1)")  # msg 3: in flight
    _, confirm = act(operator_client, "retried", "retry", [1, 2, 3], confirmed=False)
    assert confirm.select_one("[data-in-flight]")["data-in-flight"] == "1"
    assert "second delivery" in confirm.select_one("[data-in-flight]").get_text()
    count = confirm.select_one("[data-action-count]")  # the button counts what will be done by default
    assert (count.get_text(), count["data-with-in-flight"]) == ("2", "3")

    _, dialog = act(operator_client, "retried", "retry", [1, 2, 3])
    visible = {row[0] for row in pgmq_sql.execute("SELECT msg_id FROM pgmq.q_retried WHERE vt <= now()")}
    assert visible == {1, 2, 4}  # 3 stays with its consumer
    entry = action_records().get()
    assert (entry.skipped, entry.details) == (1, {"skipped_msg_ids": [3]})

    act(operator_client, "retried", "retry", [3], include_in_flight="1")
    assert pgmq_sql.execute("SELECT vt <= now() FROM pgmq.q_retried WHERE msg_id = 3").fetchone()[0]


def test_delay_hides_messages_until_the_chosen_time(operator_client, make_queue, pgmq_sql):
    make_queue("delayed", messages=2)
    until = pgmq_sql.execute("SELECT date_trunc('second', now() + interval '2 hours')").fetchone()[0]
    act(operator_client, "delayed", "delay", [1], until=until.strftime("%Y-%m-%dT%H:%M:%S"))
    vt = pgmq_sql.execute("SELECT vt FROM pgmq.q_delayed WHERE msg_id = 1").fetchone()[0]
    assert abs((vt - until).total_seconds()) <= 2


def test_move_sends_copies_and_archives_the_originals_in_one_step(operator_client, make_queue, pgmq_sql):
    make_queue("source_q")
    make_queue("dead_letters")
    for n in (1, 2):
        pgmq_sql.execute(
            "SELECT pgmq.send('source_q', %s::jsonb, %s::jsonb)", [json.dumps({"n": n}), json.dumps({"trace": f"t{n}"})]
        )
    _, confirm = act(operator_client, "source_q", "move", [1, 2], confirmed=False)
    assert [option["value"] for option in confirm.select("select[name=destination] option")] == ["dead_letters"]

    _, dialog = act(operator_client, "source_q", "move", [1, 2], destination="dead_letters", original="archive")
    assert result_counts(dialog)["affected"] == 2
    assert live_ids(pgmq_sql, "source_q") == [] and archived_ids(pgmq_sql, "source_q") == [1, 2]
    copies = pgmq_sql.execute(
        "SELECT message, headers - 'x-pgmq-dashboard-origin' FROM pgmq.q_dead_letters ORDER BY msg_id"
    ).fetchall()
    assert copies == [({"n": 1}, {"trace": "t1"}), ({"n": 2}, {"trace": "t2"})]  # and where each came from
    assert action_records().get().details == {"new_msg_ids": {"1": 1, "2": 2}}


def test_move_to_a_queue_that_is_gone_changes_nothing_and_says_why(operator_client, make_queue, pgmq_sql):
    make_queue("stays_put", messages=1)
    status, dialog = act(operator_client, "stays_put", "move", [1], destination="no_such_queue")
    assert status == 400
    assert "there is no queue named “no_such_queue”" in dialog.get_text()
    assert live_ids(pgmq_sql, "stays_put") == [1]
    assert action_records().get().outcome == "failed"


def test_requeue_from_the_archive_keeping_or_removing_the_archived_copy(operator_client, make_queue, pgmq_sql):
    make_queue("replayed", messages=3)
    pgmq_sql.execute("SELECT pgmq.archive('replayed', ARRAY[1, 2, 3]::bigint[])")
    act(operator_client, "replayed", "requeue", [1], source="archive", destination="replayed")
    assert archived_ids(pgmq_sql, "replayed") == [1, 2, 3] and live_ids(pgmq_sql, "replayed") == [4]
    act(operator_client, "replayed", "requeue", [2, 3], source="archive", destination="replayed", remove_archived="1")
    assert archived_ids(pgmq_sql, "replayed") == [1] and live_ids(pgmq_sql, "replayed") == [4, 5, 6]
    assert pgmq_sql.execute("SELECT message FROM pgmq.q_replayed WHERE msg_id = 6").fetchone()[0] == {"n": 3}


def test_delete_from_the_archive(operator_client, make_queue, pgmq_sql):
    make_queue("forgotten", messages=2)
    pgmq_sql.execute("SELECT pgmq.archive('forgotten', ARRAY[1, 2]::bigint[])")
    act(operator_client, "forgotten", "delete_archived", [2], source="archive")
    assert archived_ids(pgmq_sql, "forgotten") == [1]
    assert action_records().get().deleted_payloads[0]["msg_id"] == 2


def test_an_action_of_the_other_table_is_refused(operator_client, make_queue):
    make_queue("mismatched", messages=1)
    status, dialog = act(operator_client, "mismatched", "requeue", [1], source="live")
    assert status == 400 and "not an action on the live" in dialog.get_text()


def test_edit_and_resend_archives_the_original_and_records_both_ids(operator_client, make_queue, pgmq_sql):
    make_queue("edited", messages=2)
    page = operator_client.get("/queues/edited/messages/1/edit/")
    assert json.loads(parse(page).select_one("textarea[name=message]").get_text()) == {"n": 1}
    response = operator_client.post(
        "/queues/edited/messages/1/edit/",
        {"source": "live", "message": '{"n": 1, "fixed": true}', "headers": '{"why": "typo"}', "destination": "edited"},
    )
    assert response.status_code == 302 and response["Location"] == "/queues/edited/messages/3/"
    assert archived_ids(pgmq_sql, "edited") == [1]
    assert pgmq_sql.execute(
        "SELECT message, headers - 'x-pgmq-dashboard-origin' FROM pgmq.q_edited WHERE msg_id = 3"
    ).fetchone() == (
        {"n": 1, "fixed": True},
        {"why": "typo"},
    )
    entry = action_records().get()
    assert (entry.action, entry.details["original_msg_id"], entry.details["new_msg_ids"]) == (
        "edit_and_resend",
        1,
        {"1": 3},
    )


def test_edit_and_resend_sends_nothing_if_a_consumer_took_the_original(operator_client, make_queue, pgmq_sql):
    make_queue("taken", messages=1)
    operator_client.get("/queues/taken/messages/1/edit/")
    pgmq_sql.execute("SELECT pgmq.delete('taken', 1::bigint)")
    response = operator_client.post("/queues/taken/messages/1/edit/", {"source": "live", "message": '{"n": 9}'})
    assert response.status_code == 302
    assert live_ids(pgmq_sql, "taken") == []


def test_send_validates_the_json_and_sends_with_headers_and_delay(operator_client, make_queue, pgmq_sql):
    make_queue("sent_to")
    bad = operator_client.post("/queues/sent_to/send/", {"message": '{"broken": ', "delay_s": "0"})
    assert bad.status_code == 400 and "not valid JSON" in bad.content.decode()
    assert live_ids(pgmq_sql, "sent_to") == []
    good = operator_client.post(
        "/queues/sent_to/send/", {"message": '{"hello": "world"}', "headers": '{"trace_id": "x1"}', "delay_s": "60"}
    )
    assert good.status_code == 302
    row = pgmq_sql.execute("SELECT message, headers, vt > now() + interval '50 seconds' FROM pgmq.q_sent_to").fetchone()
    assert row == ({"hello": "world"}, {"trace_id": "x1"}, True)


def test_purge_needs_the_queue_name_typed(admin_client, make_queue, pgmq_sql):
    make_queue("emptied", messages=7)
    page = parse(admin_client.get("/queues/emptied/purge/"))
    assert "7 messages now" in " ".join(page.select_one("[data-plan]").get_text().split())
    wrong = admin_client.post("/queues/emptied/purge/", {"confirm_name": "emptie"})
    assert wrong.status_code == 400 and len(live_ids(pgmq_sql, "emptied")) == 7
    right = admin_client.post("/queues/emptied/purge/", {"confirm_name": "emptied"})
    assert right.status_code == 302 and live_ids(pgmq_sql, "emptied") == []
    entry = AuditEntry.objects.get(action="purge")
    assert (entry.affected, entry.deleted_count, len(entry.deleted_payloads)) == (7, 7, 7)


def test_create_and_drop_a_queue(admin_client, make_queue, pgmq_sql):
    created = admin_client.post("/new-queue/", {"name": "Fresh-Queue", "confirm_name": "Fresh-Queue"})
    assert created.status_code == 302
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta WHERE queue_name = 'Fresh-Queue'").fetchone()[0] == 1
    clash = admin_client.post("/new-queue/", {"name": "fresh-queue", "confirm_name": "fresh-queue"})
    assert clash.status_code == 400 and "would give both the same table" in clash.content.decode()
    refused = admin_client.post("/new-queue/", {"name": "bad;name", "confirm_name": "bad;name"})
    assert refused.status_code == 400 and "does not accept" in refused.content.decode()
    for hidden, code in (
        ("line\nbreak", "U+000A"),
        ("tab\there", "U+0009"),
        ("orders\u202e", "U+202E"),
        ("zero\u200bwidth", "U+200B"),
    ):
        refused = admin_client.post("/new-queue/", {"name": hidden, "confirm_name": hidden})
        assert refused.status_code == 400 and code in refused.content.decode(), hidden

    dropped = admin_client.post("/queues/Fresh-Queue/drop/", {"confirm_name": "Fresh-Queue"})
    assert dropped.status_code == 302
    assert pgmq_sql.execute("SELECT count(*) FROM pgmq.meta WHERE queue_name = 'Fresh-Queue'").fetchone()[0] == 0
    assert list(action_records().order_by("id").values_list("action", "outcome")) == [
        ("create_queue", "done"),
        ("create_queue", "failed"),
        ("drop_queue", "done"),
    ]  # the clash is on record


def test_actions_on_queues_with_awkward_names(operator_client, make_queue, pgmq_sql):
    from django.urls import reverse

    for name in ('say "hi"', "50%", "a/b"):
        make_queue(name, messages=3)
        url = reverse("message-action", args=[name])
        for action, ids in (("archive", ["1"]), ("delete", ["2"]), ("retry", ["3"])):
            response = operator_client.post(
                url,
                {"action": action, "source": "live", "scope": "selected", "msg_id": ids, "confirmed": "1"},
                headers={"HX-Request": "true"},
            )
            assert response.status_code == 200, (name, action, response.content[:300])
        table = pgmq_sql.execute("SELECT pgmq.format_table_name(%s, 'q')", [name]).fetchone()[0]
        remaining = pgmq_sql.execute(f'SELECT msg_id FROM pgmq."{table.replace(chr(34), chr(34) * 2)}"').fetchall()
        assert remaining == [(3,)], name


def test_a_consumer_striking_in_the_middle_of_a_move_never_doubles_a_message(
    operator_client, make_queue, pgmq_sql, pgmq_database_url, monkeypatch
):
    """Right after the move has read its messages, a consumer tries to delete one. Whoever wins,
    message 1 must end up in exactly one place: deleted by the consumer (then the move reports
    it already gone and copies nothing), or moved (archived, with exactly one copy)."""
    import psycopg

    from queues import services

    make_queue("contested", messages=2)
    make_queue("contested_dlq")
    still_there = services._still_there
    consumer_took = []

    def read_then_consumer_strikes(*args, **kwargs):
        found = still_there(*args, **kwargs)
        with psycopg.connect(pgmq_database_url, autocommit=True) as consumer:
            consumer.execute("SET lock_timeout = '300ms'")
            try:
                consumer_took.append(consumer.execute("SELECT pgmq.delete('contested', 1::bigint)").fetchone()[0])
            except psycopg.errors.LockNotAvailable:
                consumer_took.append(False)  # it had to wait for the move
        return found

    monkeypatch.setattr(services, "_still_there", read_then_consumer_strikes)
    act(operator_client, "contested", "move", [1, 2], destination="contested_dlq", original="archive")
    copies = [row[0]["n"] for row in pgmq_sql.execute("SELECT message FROM pgmq.q_contested_dlq ORDER BY msg_id")]
    if consumer_took == [True]:
        assert archived_ids(pgmq_sql, "contested") == [2] and copies == [2]
    else:
        assert archived_ids(pgmq_sql, "contested") == [1, 2] and copies == [1, 2]


EXACT = '{"price": 1.10, "big": 12345678901234567.89, "tiny": 0.000000000000000000001}'


def test_copies_and_sends_keep_every_number_exactly_as_written(operator_client, make_queue, pgmq_sql):
    make_queue("exact")
    make_queue("exact_copies")
    pgmq_sql.execute("SELECT pgmq.send('exact', %s::jsonb, %s::jsonb)", [EXACT, EXACT])  # 1
    pgmq_sql.execute("SELECT pgmq.send('exact', %s::jsonb)", [EXACT])  # 2, archived below
    pgmq_sql.execute("SELECT pgmq.archive('exact', 2::bigint)")
    act(operator_client, "exact", "move", [1], destination="exact_copies", original="archive")
    act(operator_client, "exact", "requeue", [2], source="archive", destination="exact_copies")
    operator_client.post("/queues/exact_copies/send/", {"message": EXACT, "headers": EXACT, "delay_s": "0"})
    operator_client.post(
        "/queues/exact/messages/1/edit/", {"source": "archive", "message": EXACT, "destination": "exact_copies"}
    )
    expected = pgmq_sql.execute("SELECT %s::jsonb::text", [EXACT]).fetchone()[0]
    assert "1.10" in expected and "12345678901234567.89" in expected
    copies = pgmq_sql.execute(
        "SELECT message::text, (headers - 'x-pgmq-dashboard-origin')::text FROM pgmq.q_exact_copies ORDER BY msg_id"
    ).fetchall()
    # The copies' headers are the originals' and where each came from (none: that alone).
    assert copies == [(expected, expected), (expected, "{}"), (expected, expected), (expected, "{}")]
    # The audit log keeps them exactly too: what was sent, what was deleted.
    act(operator_client, "exact_copies", "delete", [1])
    deleted = AuditEntry.objects.filter(action="delete").values_list("deleted_payloads", flat=True).get()
    assert deleted[0]["msg_id"] == 1
    stored = pgmq_sql.execute(
        f"SELECT deleted_payloads -> 0 ->> 'message' FROM {settings.DASHBOARD_SCHEMA}"
        ".queues_auditentry WHERE action = 'delete'"
    ).fetchone()[0]
    assert stored == expected
    page = operator_client.get(f"/audit/{AuditEntry.objects.get(action='delete').pk}/").content.decode()
    assert "12345678901234567.89" in page and "1.10" in page


def test_a_delay_must_end_in_the_future(operator_client, make_queue, pgmq_sql):
    make_queue("not_back_in_time", messages=1)
    past = pgmq_sql.execute("SELECT now() - interval '1 minute'").fetchone()[0]
    status, dialog = act(operator_client, "not_back_in_time", "delay", [1], until=past.strftime("%Y-%m-%dT%H:%M:%S"))
    assert status == 400 and "choose a time in the future" in dialog.get_text()
    status, dialog = act(operator_client, "not_back_in_time", "delay", [1], until="2999-01-01T00:00:00")
    assert status == 400 and "at most 68 years ahead" in dialog.get_text()
    assert action_records().count() == 0


def test_move_leaves_a_message_in_flight_alone_unless_asked(operator_client, make_queue, pgmq_sql):
    make_queue("busy", messages=3)
    make_queue("busy_dlq")
    pgmq_sql.execute("SELECT * FROM pgmq.read('busy', 300, 1)")  # a consumer holds message 1
    _, confirm = act(operator_client, "busy", "move", [1, 2, 3], confirmed=False)
    assert confirm.select_one("[data-in-flight]")["data-in-flight"] == "1"
    _, dialog = act(operator_client, "busy", "move", [1, 2, 3], destination="busy_dlq", original="delete")
    assert live_ids(pgmq_sql, "busy") == [1] and live_ids(pgmq_sql, "busy_dlq") == [1, 2]
    assert int(dialog.select_one("[data-result-skipped]").get_text()) == 1
    act(operator_client, "busy", "move", [1], destination="busy_dlq", original="delete", include_in_flight="1")
    assert live_ids(pgmq_sql, "busy") == []


def test_the_same_confirmation_sent_twice_acts_once(operator_client, make_queue, pgmq_sql):
    make_queue("twice", messages=2)
    pgmq_sql.execute("SELECT pgmq.archive('twice', ARRAY[1, 2]::bigint[])")
    _, confirm = act(operator_client, "twice", "requeue", [1, 2], source="archive", confirmed=False)
    token = confirm.select_one("input[name=request_token]")["value"]
    first, _ = act(
        operator_client, "twice", "requeue", [1, 2], source="archive", destination="twice", request_token=token
    )
    second, dialog = act(
        operator_client, "twice", "requeue", [1, 2], source="archive", destination="twice", request_token=token
    )
    assert (first, second) == (200, 409)
    assert "already done" in dialog.get_text()
    assert live_ids(pgmq_sql, "twice") == [3, 4]  # one copy each, not two
    form = parse(operator_client.get("/queues/twice/send/"))
    sent = {
        "message": '{"once": true}',
        "delay_s": "0",
        "request_token": form.select_one("input[name=request_token]")["value"],
    }
    assert operator_client.post("/queues/twice/send/", sent).status_code == 302
    again = operator_client.post("/queues/twice/send/", sent, follow=True)
    assert "already done" in again.content.decode()
    sent_once = live_ids(pgmq_sql, "twice")
    assert len(sent_once) == 3 and sent_once[:2] == [3, 4]  # (a rolled-back send still used up msg_ids)


def test_set_role_takes_superuser_away(django_user_model):
    from django.core.management import call_command

    user = django_user_model.objects.create_superuser("was-root", password="a-long-password-for-it")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PASSWORD", "another-long-password")
        call_command("add_user", "was-root", "--role", "viewer")
    user.refresh_from_db()
    assert not user.is_superuser and not user.has_perm("queues.operate_messages")

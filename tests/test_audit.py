"""The audit log: every action recorded, readable, exportable, and never editable."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import DatabaseError, connection, transaction

from queues.models import AuditEntry
from tests.conftest import AUDIT_TRUNCATE_TRIGGER, action_records, uses_databases
from tests.pages import parse

pytestmark = uses_databases


def act(client, queue, action, ids, **extra):
    return client.post(
        f"/queues/{queue}/act/",
        {
            "action": action,
            "source": "live",
            "scope": "selected",
            "msg_id": [str(i) for i in ids],
            "confirmed": "1",
            **extra,
        },
        headers={"HX-Request": "true"},
    )


def test_the_database_refuses_to_change_or_delete_an_entry(admin_client, make_queue):
    make_queue("recorded", messages=2)
    act(admin_client, "recorded", "archive", [1])
    entry = action_records().get()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).update(affected=99)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(AUDIT_TRUNCATE_TRIGGER.format("ENABLE"))  # rolled back with the rest
        cursor.execute("TRUNCATE queues_auditentry CASCADE")
    assert action_records().get().affected == 1


def test_every_action_is_recorded_with_its_counts(admin_client, make_queue, pgmq_sql):
    make_queue("counted", messages=6)
    make_queue("counted_dlq")
    pgmq_sql.execute("SELECT pgmq.delete('counted', 6::bigint)")  # gone before anyone acts
    act(admin_client, "counted", "retry", [1])
    act(admin_client, "counted", "archive", [2, 6])
    act(admin_client, "counted", "move", [3], destination="counted_dlq", original="archive")
    act(admin_client, "counted", "delete", [4])
    admin_client.post("/queues/counted/send/", {"message": '{"x": 1}', "delay_s": "0"})
    admin_client.post("/queues/counted/purge/", {"confirm_name": "counted"})
    rows = list(
        action_records().order_by("id").values_list("action", "requested", "affected", "already_gone", "outcome")
    )
    assert rows == [
        ("retry", 1, 1, 0, "done"),
        ("archive", 2, 1, 1, "partial"),
        ("move", 1, 1, 0, "done"),
        ("delete", 1, 1, 0, "done"),
        ("send", 1, 1, 0, "done"),
        ("purge", 3, 3, 0, "done"),
    ]  # 1, 5 and the sent 7


def test_the_audit_page_filters_and_pages(admin_client, make_queue):
    make_queue("audited_a", messages=60)
    make_queue("audited_b", messages=1)
    for msg_id in range(1, 56):
        act(admin_client, "audited_a", "retry", [msg_id])
    act(admin_client, "audited_b", "archive", [1])

    page = parse(admin_client.get("/audit/?about=queues"))
    assert len(page.select("tr[data-audit-entry]")) == 50
    older = parse(admin_client.get("/audit/" + page.select_one("a[rel=next]")["href"]))
    assert len(older.select("tr[data-audit-entry]")) == 6

    only_b = parse(admin_client.get("/audit/?queue=audited_b"))
    assert [row.select_one("[data-column=action]").get_text() for row in only_b.select("tr[data-audit-entry]")] == [
        "Archive"
    ]
    assert admin_client.get("/audit/?since=never").status_code == 400


def test_the_csv_export_is_every_entry_with_no_formula_to_run(admin_client, make_queue):
    hostile = "=HYPERLINK(1+2)"
    make_queue(hostile, messages=2)
    make_queue("plain", messages=1)
    from django.urls import reverse

    admin_client.post(
        reverse("message-action", args=[hostile]),
        {"action": "archive", "source": "live", "scope": "selected", "msg_id": ["1"], "confirmed": "1"},
        headers={"HX-Request": "true"},
    )
    act(admin_client, "plain", "archive", [1])
    response = admin_client.get("/audit/export.csv?about=queues")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["queue_name"] for row in rows] == ["plain", "'" + hostile]
    assert rows[0]["action"] == "archive" and rows[0]["affected"] == "1"
    assert rows[0]["deleted_count"] == ""  # an archive deletes nothing: an empty cell, not "None"


def test_the_admin_shows_the_log_read_only(admin_client, make_queue):
    make_queue("in_admin", messages=1)
    act(admin_client, "in_admin", "archive", [1])
    entry = action_records().get()
    from django.contrib.auth import get_user_model

    superuser = get_user_model().objects.create_superuser("root-admin", password="a-superuser-password-1")
    admin_client.force_login(superuser)
    listing = admin_client.get("/admin/queues/auditentry/")
    assert listing.status_code == 200 and "in_admin" in listing.content.decode()
    assert admin_client.get("/admin/queues/auditentry/add/").status_code == 403
    change = admin_client.post(f"/admin/queues/auditentry/{entry.pk}/change/", {"affected": "99"})
    assert change.status_code == 403 and action_records().get().affected == 1
    assert admin_client.post(f"/admin/queues/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403


# Issue 15 item 7: refused attempts are in the log, a bounded number of them


def test_a_viewer_refused_through_the_api_is_recorded_and_a_flood_is_kept_bounded(
    client, django_user_model, make_queue
):
    from queues.services import REFUSALS_KEPT_PER_HOUR
    from tests.test_api import token_for

    make_queue("guarded", messages=2)
    token = token_for(django_user_model, "Viewer")
    for _ in range(REFUSALS_KEPT_PER_HOUR + 5):
        answer = client.post(
            "/api/v1/queues/guarded/actions/",
            {"action": "delete", "msg_ids": [1]},
            content_type="application/json",
            headers={"Authorization": f"Token {token}"},
        )
        assert answer.status_code == 403
        assert "Operator" in answer.json()["detail"]

    refused = action_records().filter(outcome=AuditEntry.REFUSED).order_by("id")
    assert refused.count() == REFUSALS_KEPT_PER_HOUR
    first, last = refused.first(), refused.last()
    assert (first.action, first.queue_name, first.affected) == ("delete", "guarded", 0)
    assert "Operator" in first.details["reason"]
    assert "more are not recorded" in last.details["note"]
    assert action_records().exclude(outcome=AuditEntry.REFUSED).count() == 0
    assert client.get("/api/v1/queues/guarded/", headers={"Authorization": f"Token {token}"}).status_code == 200


def test_the_date_filter_takes_a_time_as_the_log_shows_it_in_the_zone_chosen(admin_client, make_queue):
    make_queue("zoned", messages=1)
    act(admin_client, "zoned", "archive", [1])
    entry = action_records().get()
    shown = parse(admin_client.get("/audit/")).select_one(f"tr[data-audit-entry='{entry.pk}'] time")
    typed = shown.get_text()  # "2025-03-01 14:05:09", UTC as the page writes it
    assert admin_client.get("/audit/", {"since": typed}).content.count(b"data-audit-entry=") >= 1
    # The same wall-clock time in Tokyo (UTC+9) is nine hours earlier: the entry is after it...
    assert (
        admin_client.get("/audit/", {"since": typed, "tz": "Asia/Tokyo", "about": "queues"}).content.count(
            b'data-audit-entry="'
        )
        == 1
    )
    # ...and before it, read in Honolulu (UTC-10).
    assert (
        b'data-audit-entry="'
        not in admin_client.get("/audit/", {"since": typed, "tz": "Pacific/Honolulu", "about": "queues"}).content
    )
    refused = admin_client.get("/audit/", {"since": typed, "tz": "Mars/Olympus"})
    assert refused.status_code == 400
    assert b"not a time zone" in refused.content

"""The audit log is tamper-evident: its records are chained by hashes, and `manage.py verify_audit`
and the audit page say exactly which record was changed or is missing, even when the change was
made behind the append-only triggers (taken off by the table's owner, or skipped by a superuser
with session_replication_role = replica)."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import threading

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction

from dashboard.embedded_postgres import install_pgmq
from queues import jobs
from queues.filters import MessageFilter
from queues.management.commands.run_jobs import run_pending_jobs
from queues.models import AuditEntry, BulkJob
from queues.pgmq import Queue
from tests.conftest import BASE_DIR, gunicorn, uses_databases, wait_for, with_database
from tests.http_client import HttpSession
from tests.pages import parse
from tests.test_least_privilege import dashboard_login, database_with_role, readme_sql

pytestmark = uses_databases

ENTRIES = "pgmq_dashboard.queues_auditentry"
# A record written by hand, as any future writer might: the trigger chains it all the same.
INSERT_BY_HAND = (
    f"INSERT INTO {ENTRIES} (at, username, action, database, queue_name, target, requested, affected,"
    " already_gone, skipped, outcome, details, chain_hash) VALUES (now(), %s, 'retry', 'main', 'by_hand',"
    " '{\"msg_ids\": [1]}', 1, 1, 0, 0, 'done', '{}', '') RETURNING id"
)
# The same before migration 0008, which added the chain's columns.
INSERT_BEFORE_THE_CHAIN = INSERT_BY_HAND.replace(", chain_hash)", ")").replace(", '') RETURNING", ") RETURNING")


def act(client, queue: str, action: str, ids: list[int], **extra) -> None:
    response = client.post(
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
    assert response.status_code == 200, response.content.decode()[:500]


def verify_audit() -> tuple[int, str]:
    """`manage.py verify_audit`: its exit status and its first line."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, err.getvalue().strip()
    return 0, out.getvalue().splitlines()[0]


def page_line(client) -> str:
    page = parse(client.get("/audit/"))
    return " ".join(page.select_one("[data-audit-chain]").get_text().split())


def record_ids() -> list[int]:
    return list(AuditEntry.objects.order_by("id").values_list("id", flat=True))


@pytest.fixture
def empty_log(pgmq_sql) -> None:
    """An audit log with no records and a chain starting again: without those of the roles and
    accounts each test's set-up makes (its TRUNCATE allowed in the tests only, see conftest)."""
    pgmq_sql.execute(f"TRUNCATE {ENTRIES}, pgmq_dashboard.queues_auditchainhead CASCADE")  # and jobs: none yet


@pytest.fixture
def recorded(admin_client, empty_log, make_queue, pgmq_sql) -> list[int]:
    """Real actions, each recorded: archive, delete, retry, a move, a send, a job by filter, a purge."""
    make_queue("chained", messages=8)
    make_queue("chained_dlq")
    act(admin_client, "chained", "archive", [1, 2])
    act(admin_client, "chained", "delete", [3])
    act(admin_client, "chained", "retry", [4])
    act(admin_client, "chained", "move", [5], destination="chained_dlq", original="delete")
    assert (
        admin_client.post(
            "/queues/chained/send/", {"message": '{"big": 12345678901234567890.10}', "delay_s": "0"}
        ).status_code
        == 302
    )
    admin_client.post(
        "/queues/chained/act/",
        {
            "action": "delete",
            "source": "live",
            "scope": "matching",
            "filter_query": "q=message.n%3A6",
            "confirmed": "1",
        },
        headers={"HX-Request": "true"},
    )
    assert run_pending_jobs() == 1
    assert admin_client.post("/queues/chained/purge/", {"confirm_name": "chained"}).status_code == 302
    ids = record_ids()
    assert len(ids) == 7
    return ids


def test_a_chain_of_real_actions_verifies_intact(admin_client, recorded):
    assert verify_audit() == (0, f"audit log: intact through #{recorded[-1]} ({len(recorded)} records)")
    assert page_line(admin_client) == f"Hash chain intact through #{recorded[-1]} ({len(recorded)} records)."
    links = list(AuditEntry.objects.order_by("id").values_list("chain_prev_id", flat=True))
    assert links == [None, *recorded[:-1]]


def test_the_chain_does_not_depend_on_the_sessions_settings(admin_client, recorded, pgmq_sql):
    pgmq_sql.execute("SET TimeZone = 'Asia/Kathmandu'")
    pgmq_sql.execute("SET DateStyle = 'SQL, DMY'")
    pgmq_sql.execute("SET extra_float_digits = -3")
    by_hand = pgmq_sql.execute(INSERT_BY_HAND, ["someone"]).fetchone()[0]
    assert verify_audit() == (0, f"audit log: intact through #{by_hand} ({len(recorded) + 1} records)")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TimeZone = 'America/St_Johns'")
            cursor.execute("SET IntervalStyle = 'postgres_verbose'")
        assert page_line(admin_client) == f"Hash chain intact through #{by_hand} ({len(recorded) + 1} records)."
    finally:
        connection.close()  # the next test's connection has the usual settings


def tamper(pgmq_sql, change: str, entry_id: int) -> None:
    """What the table's owner can do: take the append-only trigger off, change a record, put it back."""
    with pgmq_sql.transaction():
        pgmq_sql.execute(f"ALTER TABLE {ENTRIES} DISABLE TRIGGER audit_log_is_append_only")
        pgmq_sql.execute(f"UPDATE {ENTRIES} SET {change} WHERE id = %s", [entry_id])
        pgmq_sql.execute(f"ALTER TABLE {ENTRIES} ENABLE TRIGGER audit_log_is_append_only")


@pytest.mark.parametrize(
    "change, undo",
    [
        ("affected = affected + 1", "affected = affected - 1"),
        ("username = 'someone-else'", "username = 'admin-user'"),
        ("at = at - interval '1 hour'", "at = at + interval '1 hour'"),
        ("target = jsonb_set(target, '{msg_ids,0}', '99')", "target = jsonb_set(target, '{msg_ids,0}', '3')"),
        ("deleted_payloads = '[]'", None),
    ],
)
def test_a_record_changed_behind_a_disabled_trigger_is_named(admin_client, recorded, pgmq_sql, change, undo):
    changed = recorded[1]  # the delete of msg 3, which kept its payload
    tamper(pgmq_sql, change, changed)
    assert verify_audit() == (1, f"audit log: record #{changed} changed")
    line = page_line(admin_client)
    assert line.startswith(f"The audit log was tampered with: record #{changed} changed."), line
    if undo:  # the same content again: the same hash, the chain whole again
        tamper(pgmq_sql, undo, changed)
        assert verify_audit() == (0, f"audit log: intact through #{recorded[-1]} ({len(recorded)} records)")


def test_a_record_changed_with_its_hash_recomputed_still_breaks_the_chain(recorded, pgmq_sql):
    """Whoever also rewrites the changed record's hash (here with the chain's own function) leaves
    the next record chained to the hash it had: that one no longer verifies."""
    changed = recorded[2]
    tamper(pgmq_sql, "affected = 0", changed)
    tamper(
        pgmq_sql,
        "chain_hash = encode(sha256(convert_to(coalesce((SELECT chain_hash FROM "
        f"{ENTRIES} p WHERE p.id = queues_auditentry.chain_prev_id), '') || "
        "pgmq_dashboard.audit_chain_content(queues_auditentry), 'UTF8')), 'hex')",
        changed,
    )
    assert verify_audit() == (1, f"audit log: record #{recorded[3]} changed")


def test_a_record_deleted_with_triggers_skipped_is_named_missing(admin_client, recorded, pgmq_sql):
    with pgmq_sql.transaction():
        pgmq_sql.execute("SET LOCAL session_replication_role = replica")
        pgmq_sql.execute(f"DELETE FROM {ENTRIES} WHERE id = %s", [recorded[3]])
    expected = f"record #{recorded[3]} missing (#{recorded[4]} follows #{recorded[2]})"
    assert verify_audit() == (1, f"audit log: {expected}")
    assert page_line(admin_client).startswith(f"The audit log was tampered with: {expected}.")


def test_the_first_and_the_newest_records_deleted_are_named_missing(admin_client, recorded, pgmq_sql):
    with pgmq_sql.transaction():
        pgmq_sql.execute(f"ALTER TABLE {ENTRIES} DISABLE TRIGGER audit_log_is_append_only")
        pgmq_sql.execute(f"DELETE FROM {ENTRIES} WHERE id = %s", [recorded[-1]])
        pgmq_sql.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the jobs' foreign key checked now: ALTER waits for none
        pgmq_sql.execute(f"ALTER TABLE {ENTRIES} ENABLE TRIGGER audit_log_is_append_only")
    newest_gone = f"record #{recorded[-1]} missing (the chain's newest; the last record is #{recorded[-2]})"
    assert verify_audit() == (1, f"audit log: {newest_gone}")
    assert page_line(admin_client).startswith(f"The audit log was tampered with: {newest_gone}.")
    with pgmq_sql.transaction():
        pgmq_sql.execute("SET LOCAL session_replication_role = replica")
        pgmq_sql.execute(f"DELETE FROM {ENTRIES} WHERE id = %s", [recorded[0]])
    assert verify_audit() == (1, f"audit log: record #{recorded[0]} missing (#{recorded[1]} is the first record)")


def test_a_gap_in_the_ids_is_not_a_missing_record(admin_client, recorded):
    """A failed action's transaction takes an id and gives none back: the ids skip, nothing is missing."""
    with pytest.raises(RuntimeError), transaction.atomic():
        AuditEntry.objects.create(username="rolled-back", action="retry", queue_name="chained", target={}, requested=1)
        raise RuntimeError("undone")
    after = AuditEntry.objects.create(username="after", action="retry", queue_name="chained", target={}, requested=1)
    assert after.pk > recorded[-1] + 1
    assert verify_audit() == (0, f"audit log: intact through #{after.pk} ({len(recorded) + 1} records)")


def test_the_page_checks_only_the_newest_records(admin_client, recorded, pgmq_sql, monkeypatch):
    monkeypatch.setattr("queues.views.audit.PAGE_CHECKS_NEWEST", 3)
    assert page_line(admin_client) == (
        f"Hash chain intact through #{recorded[-1]} (the newest 3 records checked); "
        "manage.py verify_audit checks every record."
    )
    tamper(pgmq_sql, "affected = 42", recorded[0])
    assert page_line(admin_client).startswith("Hash chain intact")  # older than what the page checks
    assert verify_audit() == (1, f"audit log: record #{recorded[0]} changed")
    tamper(pgmq_sql, "affected = 42", recorded[-2])
    assert page_line(admin_client).startswith(f"The audit log was tampered with: record #{recorded[-2]} changed.")


def lock_waits(pgmq_sql) -> int:
    """Sessions of the test database waiting for a lock (asked on a connection of its own: within
    a transaction pg_stat_activity stays as it was at its first look)."""
    return pgmq_sql.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()[0]


def test_concurrent_inserts_take_turns_in_the_chain(empty_log, pgmq_database_url, pgmq_sql):
    """A record inserted while another transaction holds the chain waits for it, and comes after
    everything that transaction wrote, in the chain and in id order (its id is given once it has
    its turn, not when its INSERT began)."""
    with psycopg.connect(pgmq_database_url) as holding, psycopg.connect(pgmq_database_url) as waiting:
        first = holding.execute(INSERT_BY_HAND, ["holding"]).fetchone()[0]  # not committed yet
        inserted: list[int] = []
        thread = threading.Thread(
            target=lambda: (
                inserted.append(waiting.execute(INSERT_BY_HAND, ["waiting"]).fetchone()[0]),
                waiting.commit(),
            )
        )
        thread.start()
        wait_for(lambda: lock_waits(pgmq_sql), timeout=10, what="the second INSERT to wait for the chain's lock")
        second = holding.execute(INSERT_BY_HAND, ["holding again"]).fetchone()[0]
        holding.commit()
        thread.join(timeout=10)
    assert inserted and inserted[0] > second > first
    assert list(AuditEntry.objects.order_by("id").values_list("id", "chain_prev_id")) == [
        (first, None),
        (second, first),
        (inserted[0], second),
    ]
    assert verify_audit() == (0, f"audit log: intact through #{inserted[0]} (3 records)")


def test_two_connections_inserting_at_once_keep_one_chain(empty_log, pgmq_database_url):
    def insert(name: str) -> None:
        with psycopg.connect(pgmq_database_url, autocommit=True) as connection:
            for _ in range(100):
                connection.execute(INSERT_BY_HAND, [name])

    threads = [threading.Thread(target=insert, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert verify_audit() == (0, f"audit log: intact through #{max(record_ids())} (200 records)")


def test_a_job_ending_while_its_queue_is_dropped_does_not_deadlock(make_queue, pgmq_database_url, pgmq_sql, admin_user):
    """A drop locks the queue's jobs and then writes its record; a job ending locks its row before
    its record too, so neither waits for the other's lock while holding the one it needs."""
    make_queue("dropping", messages=1)
    job = jobs.create(
        user=admin_user,
        queue=Queue.objects.get(queue_name="dropping"),
        source="live",
        action="archive",
        parameters={},
        message_filter=MessageFilter(),
        expected=1,
    )
    with psycopg.connect(pgmq_database_url) as dropping:
        dropping.execute("UPDATE pgmq_dashboard.queues_bulkjob SET cancel_requested = true WHERE id = %s", [job.pk])
        errors: list[Exception] = []

        def end_job() -> None:
            try:
                with connection.cursor() as cursor:  # this thread's own connection
                    cursor.execute("SET lock_timeout = '10s'")  # the test, not the lock, decides how long
                jobs.end(job, BulkJob.CANCELLED)
            except Exception as error:  # noqa: BLE001 (reported below)
                errors.append(error)
            finally:
                connection.close()

        ender = threading.Thread(target=end_job)
        ender.start()
        wait_for(lambda: lock_waits(pgmq_sql), timeout=10, what="the job's end to wait for the drop's lock")
        dropping.execute(INSERT_BY_HAND, ["dropping"])  # the drop's own record
        dropping.commit()
        ender.join(timeout=10)
    assert not errors, errors
    assert BulkJob.objects.get(pk=job.pk).status == BulkJob.CANCELLED
    assert verify_audit()[0] == 0


def test_records_written_before_the_chain_are_chained_by_its_migration(pgmq_sql, pgmq_database_url):
    database = f"chain_{secrets.token_hex(4)}"
    pgmq_sql.execute(f'CREATE DATABASE "{database}"')
    url = with_database(pgmq_database_url, database)
    environment = {**os.environ, "PGMQ_DATABASE_URL": url}

    def manage(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *command], cwd=BASE_DIR, env=environment, capture_output=True, text=True
        )

    try:
        install_pgmq(url)
        assert manage("migrate", "queues", "0007").returncode == 0
        with psycopg.connect(url, autocommit=True) as before:
            for name in ("before-1", "before-2", "before-3"):
                before.execute(INSERT_BEFORE_THE_CHAIN, [name])
        migrated = manage("migrate")
        assert migrated.returncode == 0, migrated.stderr
        verified = manage("verify_audit")
        with psycopg.connect(url, autocommit=True) as after:
            links = after.execute(f"SELECT id, chain_prev_id, username FROM {ENTRIES} ORDER BY id").fetchall()
            # The three old records chained in their order, then the roles the migration made.
            assert links[:3] == [(1, None, "before-1"), (2, 1, "before-2"), (3, 2, "before-3")]
            assert (verified.returncode, verified.stdout.splitlines()[0]) == (
                0,
                f"audit log: intact through #{links[-1][0]} ({len(links)} records)",
            )
            newest = after.execute(INSERT_BY_HAND, ["after"]).fetchone()[0]
        verified = manage("verify_audit")
        assert verified.stdout.splitlines()[0] == f"audit log: intact through #{newest} ({len(links) + 1} records)", (
            verified.stderr
        )
    finally:
        pgmq_sql.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def audit_owned_apart(pgmq_database_url):
    """The README's set-up: a database with the operating role, migrated by it, then the audit
    table and its chain handed to a role of their own by the README's block. Made once for the
    module (a database and a migration: seconds): every tampering below is refused, so none
    changes what the next one finds."""
    server = psycopg.connect(pgmq_database_url, autocommit=True)
    database = database_with_role(server, pgmq_database_url, "operating-role")
    owner_url, role_url = next(database)
    owner_role = f"audit_owner_{secrets.token_hex(4)}"
    try:
        password = dashboard_login(role_url, "boss", "admin")
        template = readme_sql("audit-owner")
        readme_role = re.search(r"TO (dashboard_\w+);", template).group(1)
        role = psycopg.conninfo.conninfo_to_dict(role_url)["user"]
        with psycopg.connect(owner_url, autocommit=True) as superuser:
            superuser.execute(template.replace(readme_role, role).replace("audit_owner", owner_role))
        yield owner_url, role_url, password
    finally:
        next(database, None)  # drops the database and the dashboard's role
        server.execute(f'DROP ROLE IF EXISTS "{owner_role}"')
        server.close()


@pytest.mark.parametrize(
    "statement, refusal",
    [
        (f"UPDATE {ENTRIES} SET affected = 99", "permission denied"),
        (f"DELETE FROM {ENTRIES}", "permission denied"),
        (f"TRUNCATE {ENTRIES}", "permission denied"),
        (f"ALTER TABLE {ENTRIES} DISABLE TRIGGER audit_log_is_append_only", "must be owner"),
        (f"ALTER TABLE {ENTRIES} DISABLE TRIGGER audit_chain_link", "must be owner"),
        (f"DROP TABLE {ENTRIES} CASCADE", "must be owner"),
        ("DROP FUNCTION pgmq_dashboard.audit_chain_link() CASCADE", "must be owner"),
        (
            "CREATE OR REPLACE FUNCTION pgmq_dashboard.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RETURN NEW; END $$",
            "must be owner",
        ),
        ("UPDATE pgmq_dashboard.queues_auditchainhead SET last_id = 1", "permission denied"),
        ("SET session_replication_role = replica", "permission denied"),
    ],
)
@pytest.mark.xdist_group("audit_owned_apart")
def test_with_the_audit_log_owned_apart_the_dashboards_role_cannot_tamper(audit_owned_apart, statement, refusal):
    _, role_url, _ = audit_owned_apart
    with psycopg.connect(role_url, autocommit=True) as as_dashboard:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
            as_dashboard.execute(statement)


@pytest.mark.xdist_group("audit_owned_apart")
def test_with_the_audit_log_owned_apart_actions_are_still_recorded_and_chained(audit_owned_apart, tmp_path):
    owner_url, role_url, password = audit_owned_apart
    with gunicorn(role_url, tmp_path) as base_url:
        session = HttpSession(base_url)
        session.sign_in("boss", password)
        session.get("/queues/watched/messages/")
        for action, msg_id in (("archive", "1"), ("delete", "2")):
            response = session.post(
                "/queues/watched/act/",
                {"action": action, "source": "live", "scope": "selected", "msg_id": msg_id, "confirmed": "1"},
            )
            assert response.status == 200, (action, response.text[:500])
        line = " ".join(parse(session.get("/audit/").text).select_one("[data-audit-chain]").get_text().split())
    environment = {**os.environ, "PGMQ_DATABASE_URL": role_url}
    verified = subprocess.run(
        [sys.executable, "manage.py", "verify_audit"], cwd=BASE_DIR, env=environment, capture_output=True, text=True
    )
    with psycopg.connect(owner_url) as superuser:
        ids = [row[0] for row in superuser.execute(f"SELECT id FROM {ENTRIES} ORDER BY id")]
        actions = superuser.execute(f"SELECT action FROM {ENTRIES} WHERE database <> '' ORDER BY id").fetchall()
    assert actions == [("archive",), ("delete",)]  # and the records of making the account signed in
    assert line == f"Hash chain intact through #{ids[-1]} ({len(ids)} records)."
    assert (verified.returncode, verified.stdout.splitlines()[0]) == (
        0,
        f"audit log: intact through #{ids[-1]} ({len(ids)} records)",
    )
    # The next release's migrate, as the dashboard's role, still runs.
    migrated = subprocess.run(
        [sys.executable, "manage.py", "migrate"], cwd=BASE_DIR, env=environment, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr

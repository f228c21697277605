"""Exports cannot starve the pages: a streaming export holds a worker thread for as long as its
client takes to read it, so exports at once are capped per user and per worker process (429 with
Retry-After and a page saying why), the cap stays below the worker's threads, and a slot comes
back when the export is read, or closed unread."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from tests.conftest import gunicorn, uses_databases
from tests.http_client import HttpSession
from tests.pages import body, parse
from tests.test_configuration import print_setting

pytestmark = uses_databases

PASSWORD = "a-long-test-password-44"
EXPORT = "/queues/exported/messages/export.csv"


@pytest.fixture
def exported(make_queue) -> str:
    return make_queue("exported", messages=3)


def client_of(django_user_model, username: str) -> Client:
    """A signed-in viewer (a login without a role sees nothing)."""
    user = django_user_model.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get(name="Viewer"))
    client = Client()
    client.force_login(user)
    return client


def test_a_user_over_the_cap_gets_429_with_retry_after_and_a_page_saying_why(exported, django_user_model, settings):
    settings.EXPORTS_PER_USER, settings.EXPORTS_PER_WORKER = 2, 3
    client = client_of(django_user_model, "exporter")
    held = [client.get(EXPORT), client.get(EXPORT)]  # streaming, not read yet: each holds its slot
    assert [response.status_code for response in held] == [200, 200]
    refused = client.get(EXPORT)
    assert refused.status_code == 429 and refused["Retry-After"] == "5"
    assert "You have 2 exports running already" in parse(refused).get_text()
    assert client_of(django_user_model, "someone-else").get(EXPORT).status_code == 200  # the worker has room

    body(held[0])  # read to the end: Django's client closes the stream, and the slot comes back
    held.append(client.get(EXPORT))
    assert held[-1].status_code == 200
    held[1].close()  # closed without being read (a client that went away): its slot comes back too
    held.append(client.get(EXPORT))
    assert held[-1].status_code == 200
    assert client.get(EXPORT).status_code == 429  # two held again


def test_the_worker_cap_counts_everyones_exports(exported, django_user_model, settings):
    settings.EXPORTS_PER_USER, settings.EXPORTS_PER_WORKER = 2, 2
    first, second, third = (client_of(django_user_model, name) for name in ("first", "second", "third"))
    held = [first.get(EXPORT), second.get(EXPORT)]
    refused = third.get(EXPORT)
    assert refused.status_code == 429
    assert "Other exports are running" in parse(refused).get_text()
    body(held[0])
    assert third.get(EXPORT).status_code == 200


def test_the_cap_per_worker_stays_below_its_threads():
    result = print_setting(
        "EXPORTS_PER_WORKER", GUNICORN_THREADS="3", DASHBOARD_EXPORTS_PER_WORKER="10", DJANGO_DEBUG="1"
    )
    assert last_line(result.stdout) == "2", result.stderr
    result = print_setting("EXPORTS_PER_WORKER", GUNICORN_THREADS="1", DJANGO_DEBUG="1")
    assert last_line(result.stdout) == "1", result.stderr


def last_line(output: str) -> str:
    """The value printed (the shell may say first how many objects it imported)."""
    return output.strip().splitlines()[-1]


def open_unread_export(base_url: str, cookie: str) -> http.client.HTTPResponse:
    """An export asked for by a client that then reads nothing: its status and headers only."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", EXPORT, headers={"Cookie": cookie})
    response = connection.getresponse()  # the status line and headers; the body stays unread
    response.connection = connection  # kept open, so the server cannot finish writing
    return response


def test_twenty_exports_that_nobody_reads_leave_the_pages_to_everyone(
    make_queue, pgmq_sql, pgmq_database_url, tmp_path
):
    """The attack as reported: one viewer opens 20 exports at once (here each of 30 MB, read by
    nobody, so every one would hold its thread) while another user opens the overview."""
    from tests.test_least_privilege import dashboard_login

    make_queue("exported")
    pgmq_sql.execute(
        "SELECT pgmq.send_batch('exported', array_fill(jsonb_build_object('blob', repeat('e', 3000000)), ARRAY[10]))"
    )
    hog_password = dashboard_login(pgmq_database_url, "hog", "viewer")
    other_password = dashboard_login(pgmq_database_url, "other", "viewer")
    with gunicorn(pgmq_database_url, tmp_path, GUNICORN_THREADS="4") as base_url:
        hog = HttpSession(base_url)
        hog.sign_in("hog", hog_password)
        cookie = "; ".join(f"{c.name}={c.value}" for c in hog.cookies)
        exports = [open_unread_export(base_url, cookie) for _ in range(20)]
        try:
            statuses = [response.status for response in exports]
            assert statuses.count(200) == 2 and statuses.count(429) == 18, statuses
            refused = next(response for response in exports if response.status == 429)
            assert refused.getheader("Retry-After") == "5"

            other = HttpSession(base_url)  # waits at most 30 s for each answer (it took 25 s before)
            other.sign_in("other", other_password)
            overview = other.get("/")
            assert overview.status == 200 and "exported" in overview.text
            assert json.loads(other.get("/api/v1/queues/").text)["results"]
        finally:
            for response in exports:
                response.connection.sock.shutdown(socket.SHUT_RDWR)
                response.connection.close()

"""The load test: producers, consumers and 20 people using the dashboard at once, against gunicorn.

    make loadtest                                    # an embedded PostgreSQL of its own (var/loadtest)
    PGMQ_DATABASE_URL=... python -m perf.loadtest    # a database of yours: creates queues loadtest-*
                                                     # and logins loadtest-*, and drops them at the end
                                                     # (--keep-queues keeps the queues)

For --seconds (60) it runs, all at once:
- the dashboard under gunicorn as deployed (dashboard/gunicorn.conf.py, WEB_CONCURRENCY workers: 2
  unless set), the bulk job runner and the metric sampler, as `make run` starts them;
- producers sending through pgmq.send to two queues, and consumers reading them with a visibility
  timeout, archiving most, deleting some (logging each deletion) and failing the rest (they come
  back when their vt passes); a third queue nobody consumes takes the dashboard's moves;
- --users (20) people, each signed in through the login form in a session of their own, in turn a
  Viewer, two Operators and an Admin. Everyone reads: the overview, queue pages with their panels,
  the message browser (filters, paging), messages, the audit log, and the live regions refreshing
  as htmx asks for them. Operators and admins also act as the pages let them: tick messages, open
  the action's dialog, confirm it with the fields and the request token the dialog carries (now
  and then twice at once, as a double click does): retry, delay, archive, delete, move to another
  queue, requeue from the archive; and send messages. One of them moves every message a filter
  matches, as a job. A viewer now and then tries an action and must be refused (403).

Every request's kind, status and time is recorded; each gunicorn worker's RSS (VmRSS) is sampled
after the warm-up (--warmup seconds, and until every user has been through each of their pages
once: a warm-up that runs late lengthens the run by as much), every few seconds and at the end.
Then the ledger (perf/ledger.py): every msg_id ever sent (by the producers, or by the dashboard's
send, move and requeue, whose new msg_ids the audit log records) is exactly once in the live table,
the archive, the consumers' log of deletions, a dashboard deletion's audit record, or moved away (a
move that deleted its original, a requeue that removed the archived copy), with its message and
headers unchanged. Nothing is purged, so the ledger is exact.

Prints a table and the same figures as JSON (--json). Fails (exit status 1) on any 5xx or request
that got no answer, any answer a step does not expect (a 4xx other than a message gone meanwhile,
a refused viewer or a confirmation sent twice), a page a user could not act on as expected, a
producer or consumer error, a bulk job not done, a ledger break, a replaced worker, a warm-up that
never ended, or a worker whose RSS grew by more than --max-rss-growth-percent (20 %) after the
warm-up. A healthy worker starts at about 60 MB and settles within 3 MB (caches filling: the
per-queue model classes, templates, each thread's connections); 20 % (about 12 MB) is four times
that, yet a leak of 10 KB per request (a worker serves about 1,600 a minute here) reaches it in
about a minute.
"""

from __future__ import annotations

import argparse
import html
import http.cookiejar
import itertools
import json
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from psycopg.types.json import Jsonb

from dashboard.static_files import collect_static
from perf.ledger import check as check_ledger
from perf.measuring import BASE_DIR, DASHBOARD_APPLICATION, backend_cpu, gunicorn, percentile
from queues import vocabulary
from queues.management.commands.add_user import set_role
from queues.models import AuditEntry, BulkJob

WORKED_QUEUES = ["loadtest-orders", "loadtest-webhooks"]  # producers send here, consumers read here
DEAD_LETTERS = "loadtest-dlq"  # nobody consumes it: moves go here, requeues come back from it
ALL_QUEUES = [*WORKED_QUEUES, DEAD_LETTERS]
ROLES = ["viewer", "operator", "operator", "admin"]  # user n has ROLES[n % 4]
# What producers send; "bulk" messages are what the job moves by filter (rare: its audit record
# keeps up to DASHBOARD_AUDIT_PAYLOAD_LIMIT new msg_ids, which the ledger needs).
MESSAGE_KINDS = ["order_created"] * 10 + ["order_paid"] * 6 + ["order_shipped"] * 3 + ["bulk"]
CONSUMER_VT_S = 5
BULK_DELAYED = 5
REQUEST_TIMEOUT_S = 30
DOUBLE_CONFIRMATION_SHARE = 0.1  # of confirmations sent twice at once, as a double click does

# What each kind of request may answer besides 200 without anything being wrong.
GONE_MEANWHILE = (200, 404)  # a message a consumer (or another user) deleted since the list showed it


@dataclass
class Answer:
    status: int  # 0: no answer at all (refused, reset, timed out)
    text: str
    location: str | None = None


class Requests:
    """Every request of every user: kind, status, milliseconds, and whether the step expected it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, str, int, float, bool]] = []

    def add(self, kind: str, method: str, status: int, ms: float, expected: bool) -> None:
        with self.lock:
            self.rows.append((kind, method, status, ms, expected))


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as the answer (timed on its own), as the page after it is a request of its own."""

    def redirect_request(self, *args, **kwargs):
        return None


# Reading pages the way the scripts of the pages do: by their markup.
INPUT = re.compile(r"<input\b[^>]*>")
ATTRIBUTE = re.compile(r'([\w-]+)="([^"]*)"')


def attributes(tag: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in ATTRIBUTE.findall(tag)}


def form_html(page: str, marker: str) -> str:
    """The markup of the first <form> whose opening tag contains `marker`."""
    start = page.find(marker)
    if start < 0:
        return ""
    start = page.rfind("<form", 0, start)
    return page[start : page.find("</form>", start)]


def hidden_fields(form: str) -> list[tuple[str, str]]:
    return [
        (fields["name"], fields.get("value", ""))
        for fields in map(attributes, INPUT.findall(form))
        if fields.get("type") == "hidden" and "name" in fields
    ]


def csrf_token(page: str) -> str | None:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    return match.group(1) if match else None


def select_options(form: str, name: str) -> list[str]:
    start = form.find(f'<select name="{name}"')
    if start < 0:
        return []
    return [
        html.unescape(value)
        for value in re.findall(r'<option value="([^"]*)"', form[start : form.find("</select>", start)])
    ]


class Browser:
    """One person's browser: its own cookies (session, CSRF), every request timed and recorded."""

    def __init__(self, base: str, requests: Requests) -> None:
        self.base, self.requests = base, requests
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirects)

    def request(
        self,
        kind: str,
        path: str,
        *,
        data: list[tuple[str, str]] | None = None,
        htmx_target: str | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Answer:
        headers = {}
        if htmx_target is not None:
            # As htmx asks: HX-Target names the element to swap (when it has an id), and a POST
            # carries the CSRF token from <main hx-headers> besides the form's own field.
            headers["HX-Request"] = "true"
            if htmx_target:
                headers["HX-Target"] = htmx_target
            if data is not None:
                headers["X-CSRFToken"] = next(
                    (cookie.value for cookie in self.cookies if cookie.name == settings.CSRF_COOKIE_NAME), ""
                )
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=headers)
        started = time.perf_counter()
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                answer = Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, error.read().decode(errors="replace"), error.headers.get("Location"))
        except OSError as error:
            answer = Answer(0, str(error))
        self.requests.add(
            kind, request.get_method(), answer.status, (time.perf_counter() - started) * 1000, answer.status in expect
        )
        return answer

    def sign_in(self, username: str, password: str) -> bool:
        form = self.request("sign in: form", "/login/")
        signed_in = self.request(
            "sign in: post",
            "/login/",
            expect=(302,),
            data=[("csrfmiddlewaretoken", csrf_token(form.text) or ""), ("username", username), ("password", password)],
        )
        return signed_in.status == 302 and "/login/" not in (signed_in.location or "")


def queue_path(queue: str, *rest: str) -> str:
    return "/".join(["/queues", urllib.parse.quote(queue, safe=""), *rest, ""])


class Workload:
    """Producers and consumers, as an application runs them: plain psycopg, pgmq's functions.
    What they sent and what they deleted is kept for the ledger, by (queue, msg_id)."""

    def __init__(self, url: str, *, producers: int, consumers: int, rate: float) -> None:
        self.url, self.rate, self.producers, self.consumers = url, rate, producers, consumers
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent: dict[tuple[str, int], tuple] = {}
        self.consumer_deleted: dict[tuple[str, int], tuple] = {}
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.sequence = itertools.count(1)

    def payload(self, producer: str) -> tuple[dict, dict]:
        number = next(self.sequence)
        message = {
            "seq": number,
            "kind": random.choice(MESSAGE_KINDS),
            "producer": producer,
            "order_id": f"ord_{number:08d}",
            "total_cents": random.randint(100, 99_999),
            "note": "x" * random.randint(10, 200),
        }
        return message, {"trace_id": secrets.token_hex(8), "x-pgmq-group": f"tenant-{number % 7}"}

    def seed(self, queue: str, count: int, archived: int) -> None:
        """`count` messages in `queue`, the first `archived` of them archived: history to browse and requeue."""
        payloads = [self.payload("seed") for _ in range(count)]
        with psycopg.connect(self.url, autocommit=True) as connection:
            ids = [
                row[0]
                for row in connection.execute(
                    "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                    [queue, [Jsonb(message) for message, _ in payloads], [Jsonb(headers) for _, headers in payloads]],
                )
            ]
            if archived:
                connection.execute("SELECT count(*) FROM pgmq.archive(%s, %s::bigint[])", [queue, ids[:archived]])
        for msg_id, payload in zip(ids, payloads, strict=True):
            self.sent[(queue, msg_id)] = payload

    def seed_delayed_bulk(self, queue: str, count: int) -> None:
        """`count` "bulk" messages delayed past the run: the consumers never take them, so the job's
        filter always has something to move, however fast they drain the rest."""
        payloads = [self.payload("seed") for _ in range(count)]
        for message, _ in payloads:
            message["kind"] = "bulk"
        with psycopg.connect(self.url, autocommit=True) as connection:
            ids = [
                row[0]
                for row in connection.execute(
                    "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[], %s)",
                    [queue, [Jsonb(m) for m, _ in payloads], [Jsonb(h) for _, h in payloads], 24 * 3600],
                )
            ]
        for msg_id, payload in zip(ids, payloads, strict=True):
            self.sent[(queue, msg_id)] = payload

    def produce(self, number: int) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self.stopping.is_set():
                queue = random.choice(WORKED_QUEUES)
                message, headers = self.payload(f"producer-{number}")
                msg_id = connection.execute(
                    "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb)", [queue, Jsonb(message), Jsonb(headers)]
                ).fetchone()[0]
                with self.lock:
                    self.sent[(queue, msg_id)] = (message, headers)
                    self.counts["sent"] += 1
                self.stopping.wait(random.expovariate(self.rate / self.producers))

    def consume(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self.stopping.is_set():
                for queue in WORKED_QUEUES:
                    rows = connection.execute(
                        "SELECT msg_id, message, headers FROM pgmq.read(%s, %s, %s)", [queue, CONSUMER_VT_S, 5]
                    ).fetchall()
                    for msg_id, message, headers in rows:
                        roll = random.random()
                        if roll < 0.7:
                            done = connection.execute("SELECT pgmq.archive(%s, %s::bigint)", [queue, msg_id])
                            self.count("archived" if done.fetchone()[0] else "archive: already gone")
                        elif roll < 0.85:
                            # False: the dashboard deleted, archived or moved it first.
                            if connection.execute("SELECT pgmq.delete(%s, %s::bigint)", [queue, msg_id]).fetchone()[0]:
                                with self.lock:
                                    self.consumer_deleted[(queue, msg_id)] = (message, headers)
                                self.count("deleted")
                            else:
                                self.count("delete: already gone")
                        else:
                            self.count("failed")  # comes back when its vt passes
                    self.count("read", len(rows))
                self.stopping.wait(0.1)

    def count(self, what: str, how_many: int = 1) -> None:
        with self.lock:
            self.counts[what] += how_many

    def guarded(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except Exception as error:  # reported as a failure of the run
                self.errors.append(f"{type(error).__name__}: {error}")

        return run

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self.guarded(lambda n=n: self.produce(n)), name=f"producer-{n}")
            for n in range(self.producers)
        ]
        self.threads += [
            threading.Thread(target=self.guarded(self.consume), name=f"consumer-{n}") for n in range(self.consumers)
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)


class Run:
    """What the users share: where the dashboard is, the clock, what they did."""

    def __init__(self, base: str, *, warmup: float, think: float, jobs: bool) -> None:
        self.base, self.think, self.jobs = base, think, jobs
        self.requests = Requests()
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.warm_at = self.started + warmup
        # Memory is measured from when every user has been through each of their pages once, and
        # not before warm_at: under a loaded machine sign-ins alone outlasted a short warm-up, and
        # pages first served after it counted as growth.
        self.users_warming = 0
        self.everyone_warm = threading.Event()
        self.everyone_warm_since: float | None = None
        self.lock = threading.Lock()
        self.actions: dict[str, Counter[str]] = defaultdict(Counter)
        self.user_sends: list[tuple[str, int, tuple]] = []
        self.job_claimed = False
        self.job_id: int | None = None
        self.problems: list[str] = []  # answers that say something is wrong though their status is fine

    def tally(self, action: str, **counts: int) -> None:
        with self.lock:
            self.actions[action].update(counts)

    def problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < 50:
                self.problems.append(text)

    def user_warm(self) -> None:
        with self.lock:
            self.users_warming -= 1
            if self.users_warming == 0:
                self.everyone_warm_since = time.monotonic()
                self.everyone_warm.set()

    def make_up_for_a_late_warm_up(self, seconds: float) -> None:
        """Called at the run's end: a warm-up that ran past warm_at (sign-ins of seconds on a loaded
        machine) lengthens the run, up to `seconds` more, so that the part measured after it keeps
        its length."""
        self.everyone_warm.wait(timeout=seconds)
        if self.everyone_warm.is_set():
            late = self.everyone_warm_since - self.warm_at
            if late > 0:
                self.stopping.wait(max(0.0, self.started + seconds + min(late, seconds) - time.monotonic()))

    def warm(self) -> bool:
        return self.everyone_warm.is_set() and time.monotonic() >= self.warm_at

    def claim_job(self) -> bool:
        """The one bulk job of the run: for the first operator to ask after the warm-up."""
        with self.lock:
            if self.job_claimed or not self.jobs or time.monotonic() < self.warm_at:
                return False
            self.job_claimed = True
            return True


class User:
    """One person at the dashboard, in a role, doing one thing after another with pauses between."""

    def __init__(self, run: Run, username: str, role: str, password: str) -> None:
        self.run, self.username, self.role, self.password = run, username, role, password
        self.browser = Browser(run.base, run.requests)
        self.acts = role in ("operator", "admin")

    def __call__(self) -> None:
        warm = False
        try:
            # People arrive over the first half of the warm-up, not all in the same second.
            if self.run.stopping.wait(random.uniform(0, (self.run.warm_at - self.run.started) / 2)):
                return
            if not self.browser.sign_in(self.username, self.password):
                self.run.problem(f"{self.username} could not sign in")
                return
            steps: list[tuple[Callable[[], None], float]] = [
                (self.overview, 3),
                (self.queue_page, 3),
                (self.browse, 4),
                (self.audit_log, 1),
            ]
            if self.acts:
                steps += [(self.act, 4), (self.send, 1)]
            else:
                steps += [(self.try_to_act, 0.3)]
            do, weights = zip(*steps, strict=True)
            for step in do:  # each page once first, whatever the dice say later
                if self.run.stopping.is_set():
                    return
                step()
            self.run.user_warm()
            warm = True
            while not self.run.stopping.is_set():
                if self.acts and self.run.claim_job():
                    self.bulk_job()
                else:
                    random.choices(do, weights)[0]()
                self.run.stopping.wait(random.uniform(0, 2 * self.run.think))
        except Exception as error:  # a bug of the load test itself: say so, and end this user only
            self.run.problem(f"{self.username}: {type(error).__name__}: {error}")
        finally:
            if not warm:  # a user who stopped early (a problem said) must not hold up the others' warm-up
                self.run.user_warm()

    def get(self, kind: str, path: str, **options) -> Answer:
        return self.browser.request(kind, path, **options)

    # Reading

    def overview(self) -> None:
        query = random.choice(["", "", "?sort=-backlog", "?q=loadtest", "?sort=name"])
        self.get("overview", "/" + query)
        for _ in range(random.randint(0, 2)):  # the live region refreshing while the page is open
            self.get("overview: live refresh (htmx)", "/" + query, htmx_target="overview-live")

    def queue_page(self) -> None:
        queue = random.choice(ALL_QUEUES)
        self.get("queue page", queue_path(queue))
        # The panels the page loads by itself, then its live region refreshing.
        self.get("queue: poison panel (htmx)", queue_path(queue, "poison"), htmx_target="queue-poison")
        self.get(
            "queue: archive history panel (htmx)",
            queue_path(queue, "archive-history") + "?range=1h",
            htmx_target="queue-archive",
        )
        self.get("queue: diagnostics panel (htmx)", queue_path(queue, "diagnostics"), htmx_target="queue-diagnostics")
        for _ in range(random.randint(0, 2)):
            self.get("queue: live refresh (htmx)", queue_path(queue), htmx_target="queue-live")

    def browse(self) -> None:
        queue = random.choice(ALL_QUEUES)
        query = random.choice(
            [
                {},
                {},
                {"source": "archive"},
                {"source": "both"},
                {"state": "visible"},
                {"state": "in_flight"},
                {"read_ct_min": "1"},
                {"sort": "-enqueued_at"},
                {"sort": "read_ct"},
                {"q": "message.kind:order_paid"},
                {"message": '{"kind": "order_shipped"}'},
                {"q": "headers.x-pgmq-group:tenant-3"},
                {"last": "1"},
                {"source": "archive", "sort": "-archived_at"},
            ]
        )
        path = queue_path(queue, "messages") + ("?" + urllib.parse.urlencode(query) if query else "")
        page = self.get("message list", path)
        if page.status != 200:
            return
        if random.random() < 0.4:
            self.get("message list: live refresh (htmx)", path, htmx_target="messages-live")
        older = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        if older and random.random() < 0.5:
            page = self.get("message list: next page", queue_path(queue, "messages") + html.unescape(older.group(1)))
        links = re.findall(r'<a href="(/queues/[^"]+/messages/\d+/(?:\?source=archive)?)">', page.text)
        if links and random.random() < 0.7:
            self.get("message detail", html.unescape(random.choice(links)), expect=GONE_MEANWHILE)

    def audit_log(self) -> None:
        query = random.choice(
            [
                "",
                "",
                "?action=delete",
                "?action=move",
                f"?queue={random.choice(ALL_QUEUES)}",
                f"?user={self.username}",
                "?outcome=partial",
            ]
        )
        page = self.get("audit log", "/audit/" + query)
        entries = re.findall(r'href="(/audit/\d+/)"', page.text)
        if entries and random.random() < 0.5:
            self.get("audit entry", random.choice(entries))

    # Acting

    def act(self) -> None:
        action = random.choices(
            [
                vocabulary.RETRY,
                vocabulary.DELAY,
                vocabulary.ARCHIVE_ACTION,
                vocabulary.DELETE,
                vocabulary.MOVE,
                vocabulary.REQUEUE,
                vocabulary.DELETE_ARCHIVED,
            ],
            [3, 1, 3, 2, 3, 3, 1],
        )[0]
        on_archive = action in (vocabulary.REQUEUE, vocabulary.DELETE_ARCHIVED)
        # Mostly the worked queues; sometimes the dead-letter queue: the redrive back.
        queue = random.choice(WORKED_QUEUES * 3 + [DEAD_LETTERS])
        query = {
            "source": "archive" if on_archive else "live",
            **random.choice([{}, {}, {"state": "visible"}, {"read_ct_min": "1"}, {"sort": "msg_id"}]),
        }
        page = self.get("message list", queue_path(queue, "messages") + "?" + urllib.parse.urlencode(query))
        ids = re.findall(r'<input type="checkbox" name="msg_id" value="(\d+)"', page.text)
        if page.status != 200 or not ids:
            return
        chosen = random.sample(ids, min(len(ids), random.randint(1, 5)))
        fields = hidden_fields(form_html(page.text, 'id="action-form"'))
        if not fields:
            self.run.problem(f"{self.username} ({self.role}) sees no action form on {queue}")
            return
        dialog = self.get(
            f"{action}: dialog (htmx)",
            queue_path(queue, "act"),
            htmx_target="action-dialog-content",
            data=[*fields, ("action", action), *(("msg_id", msg_id) for msg_id in chosen)],
        )
        if dialog.status == 200:
            self.confirm(action, queue, dialog.text)

    def confirm(self, action: str, queue: str, dialog: str) -> None:
        """Confirm the dialog as the person would: the form's hidden fields (request token included)
        and the choices it asks for."""
        form = form_html(dialog, 'class="confirm-form"')
        if not form:
            self.run.problem(f"{action} on {queue}: the dialog has no confirmation form")
            return
        fields = hidden_fields(form)
        with_in_flight = re.search(r'data-with-in-flight="([\d,]+)"', form)
        if "data-include-in-flight" in form and random.random() < 0.3:
            # Ticking the box enables the button even when every message left is in flight.
            fields.append(("include_in_flight", "1"))
            if not with_in_flight or with_in_flight.group(1) == "0":
                self.run.tally(action, nothing_to_do=1)
                return
        elif re.search(r'<button type="submit"[^>]*\sdisabled[\s>]', form):
            self.run.tally(action, nothing_to_do=1)  # taken by consumers meanwhile, or in flight
            return
        if action in (vocabulary.MOVE, vocabulary.REQUEUE):
            destinations = select_options(form, "destination")
            if action == vocabulary.REQUEUE and queue == DEAD_LETTERS:  # back to where it failed
                destinations = [name for name in destinations if name != DEAD_LETTERS]
            fields.append(("destination", random.choice(destinations)))
        if action == vocabulary.MOVE:
            fields.append(("original", random.choice(["archive", "delete"])))
        if action == vocabulary.REQUEUE and random.random() < 0.5:
            fields.append(("remove_archived", "1"))
        if action == vocabulary.DELAY:
            until = datetime.now(UTC) + timedelta(seconds=random.randint(5, 60))
            fields.append(("until", until.strftime("%Y-%m-%dT%H:%M:%S")))
        path = queue_path(queue, "act")
        if random.random() < DOUBLE_CONFIRMATION_SHARE:
            answers = self.confirm_twice_at_once(action, path, fields)
        else:
            answers = [self.get(f"{action}: confirm (htmx)", path, htmx_target="", data=fields)]
        results = [answer for answer in answers if 'data-dialog-stage="result"' in answer.text]
        if len(results) != 1:
            self.run.problem(
                f"{action} on {queue}: {len(results)} results for one confirmation "
                f"(statuses {[answer.status for answer in answers]})"
            )
        for result in results:
            counts = {
                name: int(value.replace(",", ""))
                for name, value in re.findall(r"data-result-(affected|gone|skipped)>([\d,]+)<", result.text)
            }
            self.run.tally(
                action,
                confirmed=1,
                affected=counts.get("affected", 0),
                already_gone=counts.get("gone", 0),
                skipped=counts.get("skipped", 0),
            )

    def confirm_twice_at_once(self, action: str, path: str, fields: list[tuple[str, str]]) -> list[Answer]:
        answers: list[Answer] = []

        def send() -> None:
            answers.append(
                self.get(
                    f"{action}: confirmation sent twice (htmx)", path, htmx_target="", data=fields, expect=(200, 409)
                )
            )

        twice = [threading.Thread(target=send) for _ in range(2)]
        for thread in twice:
            thread.start()
        for thread in twice:
            thread.join()
        statuses = sorted(answer.status for answer in answers)
        self.run.tally("confirmation sent twice at once", times=1, **{"acted once": int(statuses == [200, 409])})
        return answers

    def send(self) -> None:
        queue = random.choice(ALL_QUEUES)
        form = self.get("send: form", queue_path(queue, "send"))
        token = re.search(r'name="request_token" value="([^"]+)"', form.text)
        if form.status != 200 or not token:
            return
        message = {
            "kind": "dashboard_send",
            "by": self.username,
            "nonce": secrets.token_hex(6),
            "amount": {"cents": random.randint(1, 10**6), "currency": "EUR"},
            "tags": ["load", "test"],
        }
        headers = {"sent_from": "dashboard", "trace_id": secrets.token_hex(8)}
        sent = self.get(
            "send: post",
            queue_path(queue, "send"),
            expect=(302,),
            data=[
                ("csrfmiddlewaretoken", csrf_token(form.text) or ""),
                ("request_token", token.group(1)),
                ("message", json.dumps(message, indent=2)),
                ("headers", json.dumps(headers)),
                ("delay_s", "0"),
            ],
        )
        new_id = re.search(r"/messages/(\d+)/$", sent.location or "")
        if sent.status != 302 or not new_id:
            return
        with self.run.lock:
            self.run.user_sends.append((queue, int(new_id.group(1)), (message, headers)))
        self.run.tally(vocabulary.SEND, confirmed=1, affected=1)
        self.get("message detail (after send)", sent.location, expect=GONE_MEANWHILE)

    def bulk_job(self) -> None:
        """Move every message of kind "bulk" to the dead-letter queue (originals archived), as a job."""
        queue = WORKED_QUEUES[0]
        query = urllib.parse.urlencode({"source": "live", "message": '{"kind": "bulk"}'})
        page = self.get("message list", queue_path(queue, "messages") + "?" + query)
        fields = [
            (name, value) for name, value in hidden_fields(form_html(page.text, 'id="action-form"')) if name != "scope"
        ]
        dialog = self.get(
            "move by filter: dialog (htmx)",
            queue_path(queue, "act"),
            htmx_target="action-dialog-content",
            data=[*fields, ("scope", "matching"), ("action", vocabulary.MOVE)],
        )
        confirm = hidden_fields(form_html(dialog.text, 'class="confirm-form"'))
        if not confirm:
            self.run.problem(f"the job's dialog has no confirmation form (status {dialog.status})")
            return
        started = self.get(
            "move by filter: confirm (htmx)",
            queue_path(queue, "act"),
            htmx_target="",
            data=[*confirm, ("destination", DEAD_LETTERS), ("original", "archive")],
        )
        job = re.search(r'href="/jobs/(\d+)/"', started.text)
        if not job:
            self.run.problem(f"confirming the job started none (status {started.status})")
            return
        self.run.job_id = int(job.group(1))
        self.get("job page", f"/jobs/{self.run.job_id}/")
        while not self.run.stopping.is_set():  # the page's live region, until the job has ended
            progress = self.get("job page: live refresh (htmx)", f"/jobs/{self.run.job_id}/", htmx_target="job-live")
            if re.search(r'data-job-status="(done|failed|cancelled)"', progress.text):
                break
            self.run.stopping.wait(1)

    def try_to_act(self) -> None:
        """A viewer sends an action anyway (a stale page, a crafted request): refused."""
        queue = random.choice(WORKED_QUEUES)
        page = self.get("message list", queue_path(queue, "messages"))
        ids = re.findall(r'data-msg-id="(\d+)"', page.text)
        if page.status == 200 and ids:
            self.get(
                "viewer acts: refused (htmx)",
                queue_path(queue, "act"),
                htmx_target="action-dialog-content",
                expect=(403,),
                data=[
                    ("csrfmiddlewaretoken", csrf_token(page.text) or ""),
                    ("source", "live"),
                    ("scope", "selected"),
                    ("action", vocabulary.DELETE),
                    ("msg_id", ids[0]),
                ],
            )


# Memory of gunicorn's workers


def gunicorn_workers(master: int) -> list[int]:
    """The processes gunicorn's master has forked: its workers."""
    workers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == master:
                workers.append(int(entry.name))
    return sorted(workers)


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else None


class Watch:
    """Each gunicorn worker's RSS: once the warm-up is over, then every `every` seconds, and at the
    end. And every second, the CPU each database backend has used: the dashboard's connections
    live at most CONN_MAX_AGE (60 s), so a backend is counted up to its last reading, not only if it
    is still there at the end."""

    def __init__(self, master: int, run: Run, url: str, every: float) -> None:
        self.master, self.run, self.url, self.every = master, run, url, every
        self.samples: list[dict] = []
        self.warmed = False  # a sample was taken once the warm-up was over (Run.warm)
        self.cpu_at_start: dict[int, float] | None = None
        self.cpu_seen: dict[int, tuple[str, float]] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="watch", daemon=True)

    def sample_memory(self) -> None:
        self.samples.append(
            {
                "at_s": round(time.monotonic() - self.run.started, 1),
                "rss_mb": {pid: rss_mb(pid) for pid in gunicorn_workers(self.master)},
            }
        )

    def sample_cpu(self, connection: psycopg.Connection) -> None:
        backends = backend_cpu(connection)
        if self.cpu_at_start is None:
            self.cpu_at_start = {pid: seconds for pid, (_, seconds) in backends.items()}
        self.cpu_seen.update(backends)

    def dashboard_cpu_seconds(self) -> float:
        return sum(
            seconds - (self.cpu_at_start or {}).get(pid, 0)
            for pid, (application, seconds) in self.cpu_seen.items()
            if application == DASHBOARD_APPLICATION
        )

    def watch(self) -> None:
        memory_due = None
        with psycopg.connect(self.url, autocommit=True) as connection:
            while True:
                self.sample_cpu(connection)
                if memory_due is None and self.run.warm():
                    memory_due = time.monotonic()
                    self.warmed = True
                if memory_due is not None and time.monotonic() >= memory_due:
                    self.sample_memory()
                    memory_due += self.every
                if self.stopped.wait(1):
                    self.sample_cpu(connection)
                    return

    def finish(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sample_memory()


class LoadTest:
    def run(
        self,
        *,
        seconds: float,
        users: int,
        workers: int,
        warmup: float,
        think: float,
        rate: float,
        messages: int,
        sample_every: float,
        max_rss_growth_percent: float,
        jobs: bool,
        keep_queues: bool,
        log: Path,
        json_path: Path | None,
    ) -> None:
        call_command("migrate", verbosity=0)
        collect_static()
        url = settings.PGMQ_DATABASE_URL
        workload = Workload(url, producers=2, consumers=2, rate=rate)
        self.create_queues(workload, messages)
        logins = self.create_users(users)
        first_entry = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        log.parent.mkdir(parents=True, exist_ok=True)
        threads = int(os.environ.get("GUNICORN_THREADS", "4"))
        print(
            f"load: {users} users, {workers} gunicorn workers x {threads} threads, producers at "
            f"{rate:g} messages/s, for {seconds:g} s (warm-up {warmup:g} s); server log: {log}"
        )
        with open(log, "w") as log_file:
            helpers = self.start_helpers(log_file, jobs)
            try:
                with gunicorn(workers=workers, log=log_file) as (base, server):
                    run = Run(base, warmup=warmup, think=think, jobs=jobs)
                    watch = Watch(server.pid, run, url, sample_every)
                    watch.thread.start()
                    workload.start()
                    # Daemons: should this thread fail, they do not keep the load test alive.
                    people = [
                        threading.Thread(target=User(run, username, role, password), name=username, daemon=True)
                        for username, role, password in logins
                    ]
                    run.users_warming = len(people)
                    for thread in people:
                        thread.start()
                    run.stopping.wait(seconds)
                    run.make_up_for_a_late_warm_up(seconds)
                    run.stopping.set()
                    for thread in people:
                        thread.join()
                    wall = time.monotonic() - run.started
                    watch.finish()
                    job = self.wait_for_job(run.job_id)
            finally:
                workload.stop()
                for helper in helpers:
                    helper.terminate()
                    helper.wait(timeout=30)
        results = {
            "setup": {
                "users": users,
                "roles": dict(Counter(role for _, role, _ in logins)),
                "workers": workers,
                "threads_per_worker": threads,
                "seconds": round(wall, 1),
                "warmup_s": warmup,
                "think_s": think,
                "producer_rate_per_s": rate,
                "messages_per_queue_at_start": messages,
                "job_runner": jobs,
                "cores": os.cpu_count(),
                "postgresql": self.scalar(url, "SHOW server_version"),
                "date": datetime.now(UTC).date().isoformat(),
            },
            "requests": self.request_figures(run.requests, wall),
            "actions": {action: dict(counts) for action, counts in sorted(run.actions.items())},
            "job": job,
            "workload": dict(workload.counts),
            "workload_errors": workload.errors,
            "problems": run.problems,
            "ledger": check_ledger(
                queues=ALL_QUEUES,
                sent=workload.sent,
                consumer_deleted=workload.consumer_deleted,
                after_entry=first_entry,
                dashboard_sends=run.user_sends,
            ).figures(),
            "memory": {**self.memory_figures(watch.samples, max_rss_growth_percent), "warmed": watch.warmed},
            "database_cpu": {
                "dashboard_seconds": round(watch.dashboard_cpu_seconds(), 2),
                "dashboard_share_of_one_core": round(watch.dashboard_cpu_seconds() / wall, 4),
            },
        }
        # The logins go (their records stay in the audit log); the queues too, unless asked.
        get_user_model().objects.filter(username__in=[username for username, _, _ in logins]).delete()
        if not keep_queues:
            self.drop_queues(url)
        failures = self.failures(results)
        results["failures"] = failures
        self.report(results)
        if json_path:
            json_path.write_text(json.dumps(results, indent=2, default=str))
        if failures:
            sys.exit("the load test failed: " + "; ".join(failures))

    @staticmethod
    def scalar(url: str, query: str):
        with psycopg.connect(url, autocommit=True) as connection:
            return connection.execute(query).fetchone()[0]

    # Setting up

    def create_queues(self, workload: Workload, messages: int) -> None:
        """The run's queues, new: the ledger counts every msg_id from 1."""
        self.drop_queues(workload.url)
        with psycopg.connect(workload.url, autocommit=True) as connection:
            for name in ALL_QUEUES:
                connection.execute("SELECT pgmq.create(%s)", [name])
        for name in WORKED_QUEUES:
            workload.seed(name, messages, archived=messages // 4)
        workload.seed_delayed_bulk(WORKED_QUEUES[0], BULK_DELAYED)
        workload.seed(DEAD_LETTERS, messages // 10, archived=messages // 40)

    def drop_queues(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            for name in ALL_QUEUES:
                if connection.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [name]).fetchone():
                    connection.execute("SELECT pgmq.drop_queue(%s)", [name])

    def create_users(self, count: int) -> list[tuple[str, str, str]]:
        """A login per user (loadtest-operator-03, ...), with a random password; deleted after the run."""
        password = secrets.token_urlsafe(16)
        logins = []
        for number in range(count):
            role = ROLES[number % len(ROLES)]
            user, _ = get_user_model().objects.get_or_create(username=f"loadtest-{role}-{number:02d}")
            user.set_password(password)
            set_role(user, role)
            logins.append((user.username, role, password))
        return logins

    def start_helpers(self, log: IO, jobs: bool) -> list[subprocess.Popen]:
        """The sampler, and the job runner unless --no-jobs: as `make run` starts them."""
        commands = [["sample_metrics"], *([["run_jobs", "--poll", "0.5"]] if jobs else [])]
        return [
            subprocess.Popen(
                [sys.executable, "manage.py", *command], cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT
            )
            for command in commands
        ]

    def wait_for_job(self, job_id: int | None) -> dict | None:
        """The bulk job's end (it may still be on its last batch when the users stop)."""
        if job_id is None:
            return None
        deadline = time.monotonic() + 120
        while True:
            job = BulkJob.objects.get(pk=job_id)
            if job.finished or time.monotonic() > deadline:
                return {
                    "id": job.pk,
                    "action": job.action,
                    "status": job.status,
                    "affected": job.affected,
                    "already_gone": job.already_gone,
                    "skipped": job.skipped,
                    "batches": job.batches,
                    "error": job.error,
                }
            time.sleep(0.5)

    # Figures

    def request_figures(self, requests: Requests, wall: float) -> dict:
        by_kind: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
        # Besides each kind: reading (every GET: pages, partials, panels), acting (every POST: dialogs,
        # confirmations, sends) and signing in (PBKDF2 on purpose: slow), each as one group.
        groups: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
        for kind, method, status, ms, expected in requests.rows:
            by_kind[kind].append((status, ms, expected))
            group = (
                "signing in" if kind.startswith("sign in") else "reading (GET)" if method == "GET" else "acting (POST)"
            )
            groups[group].append((status, ms, expected))

        def figures(rows: list[tuple[int, float, bool]]) -> dict:
            times = sorted(ms for _, ms, _ in rows)
            return {
                "requests": len(rows),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(percentile(times, 0.95), 1),
                "max_ms": round(times[-1], 1),
                "statuses": dict(sorted(Counter(status for status, _, _ in rows).items())),
            }

        everything = [row for rows in by_kind.values() for row in rows]
        unexpected = Counter(
            f"{status} {kind}" for kind, rows in by_kind.items() for status, _, expected in rows if not expected
        )
        return {
            "kinds": {kind: figures(rows) for kind, rows in sorted(by_kind.items())},
            "groups": {group: figures(rows) for group, rows in sorted(groups.items())},
            "all": {**figures(everything), "per_second": round(len(everything) / wall, 1)} if everything else {},
            "server_errors": sum(1 for status, _, _ in everything if status >= 500),
            "no_answer": sum(1 for status, _, _ in everything if status == 0),
            "unexpected": dict(unexpected.most_common()),
        }

    def memory_figures(self, samples: list[dict], bound_percent: float) -> dict:
        first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
        workers = {}
        for pid, start in first.items():
            series = [sample["rss_mb"].get(pid) for sample in samples]
            end = last.get(pid)
            workers[str(pid)] = {
                "after_warmup_mb": start,
                "end_mb": end,
                "max_mb": max((value for value in series if value is not None), default=None),
                "growth_mb": round(end - start, 1) if end is not None and start is not None else None,
                "growth_percent": round(100 * (end - start) / start, 1) if end and start else None,
                "samples_mb": series,
            }
        return {
            "workers": workers,
            "replaced": sorted(set(last) ^ set(first)),
            "bound_percent": bound_percent,
            "sample_times_s": [sample["at_s"] for sample in samples],
        }

    def failures(self, results: dict) -> list[str]:
        requests, memory = results["requests"], results["memory"]
        failures = []
        if requests["server_errors"]:
            failures.append(f"{requests['server_errors']} answers were 5xx")
        if requests["no_answer"]:
            failures.append(f"{requests['no_answer']} requests got no answer")
        unexpected = sum(count for key, count in requests["unexpected"].items() if not key.startswith(("0 ", "5")))
        if unexpected:
            failures.append(f"{unexpected} answers were not what the step expects")
        if results["problems"]:
            failures.append(f"{len(results['problems'])} problems seen by the users")
        if results["workload_errors"]:
            failures.append("a producer or consumer failed")
        if not results["ledger"]["holds"]:
            failures.append("the ledger does not hold")
        if results["job"] and results["job"]["status"] != BulkJob.DONE:
            failures.append(f"the bulk job ended {results['job']['status']}")
        if not memory["warmed"]:
            failures.append(
                "the warm-up never ended, so memory was not measured: the run ended before every user "
                "had been through each of their pages once (run longer)"
            )
        if memory["replaced"]:
            failures.append("gunicorn replaced a worker (a timeout or a crash)")
        grown = [
            pid
            for pid, worker in memory["workers"].items()
            if worker["growth_percent"] is not None and worker["growth_percent"] > memory["bound_percent"]
        ]
        if grown:
            failures.append(
                f"the RSS of worker {', '.join(grown)} grew by more than {memory['bound_percent']:g} % "
                "after the warm-up"
            )
        return failures

    # Report

    def report(self, results: dict) -> None:
        setup, requests = results["setup"], results["requests"]
        write = print
        write()
        write(
            f"{setup['users']} users ({', '.join(f'{n} {role}s' for role, n in setup['roles'].items())}) for "
            f"{setup['seconds']} s against gunicorn with {setup['workers']} workers x {setup['threads_per_worker']} "
            f"threads, PostgreSQL {setup['postgresql']}, {setup['cores']} cores, {setup['date']}"
        )
        write()
        write(f"{'request':46} {'count':>6} {'p50':>9} {'p95':>9} {'max':>9}   statuses")
        rows = [*requests["kinds"].items(), None, *requests["groups"].items(), ("all", requests["all"])]
        for row in rows:
            if row is None:
                write("-" * 100)
                continue
            kind, figures = row
            statuses = " ".join(f"{status}x{count}" for status, count in figures["statuses"].items())
            write(
                f"{kind:46} {figures['requests']:>6} {figures['p50_ms']:>7.1f}ms {figures['p95_ms']:>7.1f}ms "
                f"{figures['max_ms']:>7.1f}ms   {statuses}"
            )
        write(
            f"{requests['all']['requests']} requests, {requests['all']['per_second']}/s; 5xx: "
            f"{requests['server_errors']}; no answer: {requests['no_answer']}; not what the step expects: "
            + (", ".join(f"{key} x{count}" for key, count in requests["unexpected"].items()) or "none")
        )
        write()
        for action, counts in results["actions"].items():
            write(f"{action:32} " + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items()))
        if results["job"]:
            job = results["job"]
            write(
                f"{'job ' + str(job['id']) + ' (' + job['action'] + ' by filter)':32} {job['status']}: affected "
                f"{job['affected']}, already gone {job['already_gone']}, skipped {job['skipped']}, "
                f"{job['batches']} batches {job['error']}"
            )
        workload = results["workload"]
        write(
            f"{'producers and consumers':32} "
            + ", ".join(f"{name} {count}" for name, count in sorted(workload.items()))
            + (f"; errors: {results['workload_errors']}" if results["workload_errors"] else "")
        )
        for problem in results["problems"]:
            write(f"problem: {problem}")
        write()
        ledger = results["ledger"]
        write(
            f"ledger: {'holds' if ledger['holds'] else 'DOES NOT HOLD'}: {ledger['msg_ids']} msg_ids ("
            + ", ".join(f"{name} {count}" for name, count in ledger["created"].items())
            + "), each exactly once: "
            + ", ".join(f"{name} {count}" for name, count in ledger["found"].items())
            + ("; message and headers unchanged" if ledger["holds"] else f"; {ledger['problem_count']} problems")
        )
        for problem in ledger["problems"]:
            write(f"  {problem}")
        memory = results["memory"]
        write()
        times = memory["sample_times_s"]
        write(
            f"gunicorn worker RSS (VmRSS), {len(times)} samples from {times[0]:g} s (the warm-up's end) to "
            f"{times[-1]:g} s; bound: +{memory['bound_percent']:g} % after the warm-up:"
        )
        for pid, worker in memory["workers"].items():
            growth = (
                f"{worker['growth_mb']:+} MB, {worker['growth_percent']:+}%"
                if worker["growth_mb"] is not None
                else "gone"
            )
            write(
                f"  worker {pid}: {worker['after_warmup_mb']} -> {worker['end_mb']} MB ({growth}), "
                f"max {worker['max_mb']} MB; samples {' '.join(str(value) for value in worker['samples_mb'])}"
            )
        if memory["replaced"]:
            write(f"  workers replaced meanwhile: {memory['replaced']}")
        cpu = results["database_cpu"]
        write(
            f"database CPU for the dashboard (web, job runner, sampler): {cpu['dashboard_seconds']} s = "
            f"{cpu['dashboard_share_of_one_core']:.1%} of one core"
        )
        write()
        write("PASSED" if not results["failures"] else "FAILED: " + "; ".join(results["failures"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.loadtest",
        description="Drive producers, consumers and 20 dashboard users against gunicorn for a bounded time; report "
        "statuses, page times, the message ledger and the workers' memory.",
    )
    parser.add_argument("--seconds", type=float, default=60, help="how long the load runs, warm-up included")
    parser.add_argument("--users", type=int, default=20, help="people at the dashboard at once")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY", "2")),
        help="gunicorn worker processes (default: WEB_CONCURRENCY, else 2, as deployed)",
    )
    parser.add_argument(
        "--warmup", type=float, default=10, help="seconds before the first memory sample, at least (see above)"
    )
    parser.add_argument("--think", type=float, default=1.0, help="a user's mean pause between steps, in seconds")
    parser.add_argument("--rate", type=float, default=40, help="messages per second the producers send, together")
    parser.add_argument(
        "--messages", type=int, default=2000, help="messages in each queue at the start (a quarter of them archived)"
    )
    parser.add_argument("--sample-every", type=float, default=5, help="seconds between memory samples")
    parser.add_argument(
        "--max-rss-growth-percent",
        type=float,
        default=20,
        help="a worker whose RSS grows by more than this after the warm-up fails the run",
    )
    parser.add_argument("--no-jobs", action="store_false", dest="jobs", help="no job runner and no action by filter")
    parser.add_argument("--keep-queues", action="store_true", help="leave the loadtest-* queues for a look")
    parser.add_argument(
        "--log",
        type=Path,
        default=BASE_DIR / "var" / "loadtest-server.log",
        help="where gunicorn, the job runner and the sampler write",
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this file")
    options = parser.parse_args(argv)
    if options.warmup >= options.seconds:
        parser.error("--warmup must be shorter than --seconds")
    LoadTest().run(**vars(options))


if __name__ == "__main__":
    main()

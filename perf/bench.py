"""The benchmark: how fast each page is on big queues, against the SQL a pgweb user would run.

    make bench                                    # an embedded PostgreSQL of its own (var/bench)
    PGMQ_DATABASE_URL=... python -m perf.bench    # a database of yours: creates queues bench_00..

It seeds QUEUES queues x MESSAGES live messages and as many archived (realistic ~250-byte JSON
orders, through pgmq's own functions), unless they are there already; then times every page
server-side (Django's test client, in this process, median of --runs, nothing cached between
runs) next to the obvious SQL
(pgmq.metrics_all(), OFFSET paging with count(*), ...) measured in the same run; then drives 10
simulated browser tabs refreshing every 2 s against gunicorn and measures the share of the
database's CPU that went to the dashboard. Prints a table and the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from psycopg import sql

from dashboard.static_files import collect_static
from perf.measuring import database_cpu, gunicorn, percentile

BATCH = 10_000
# ~250 bytes of JSON per message, built by PostgreSQL itself so seeding stays fast.
PAYLOAD_SQL = """
    jsonb_build_object(
        'id', i, 'type', (ARRAY['order_created', 'order_paid', 'order_shipped', 'order_cancelled'])[1 + i % 4],
        'order_id', 'ord_' || left(md5(i::text), 12),
        'customer', jsonb_build_object('id', i % 5000, 'email', 'customer' || (i % 5000) || '@example.com',
                                       'country', (ARRAY['DE', 'FR', 'NL', 'US', 'GB'])[1 + i % 5]),
        'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (1000 + i % 97), 'qty', 1 + i % 4,
                                                      'price', round(((i % 10000) / 100.0)::numeric, 2))),
        'total', round(((i % 10000) / 25.0)::numeric, 2), 'currency', 'EUR')
"""
HEADERS_SQL = "jsonb_build_object('trace_id', md5(i::text), 'x-pgmq-group', 'tenant-' || (i % 12))"


def bench_user():
    """The login the pages are timed as: one who reads (a login without a role sees nothing)."""
    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="Viewer"))
    return user


def timed(work, runs: int) -> dict:
    work()  # warm up: plans cached, pages in memory
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(percentile(samples, 0.95), 2),
        "runs": runs,
    }


class Bench:
    """One run of the benchmark; bench_export borrows its seeding."""

    sql: psycopg.Connection | None = None

    def run(
        self, *, queues: int, messages: int, runs: int, tabs_seconds: int, many: int, bulk: int, json_path: Path | None
    ) -> None:
        call_command("migrate", verbosity=0)
        collect_static()
        names = self.bench_names = [f"bench_{n:02d}" for n in range(queues)]
        self.seed(names, messages)
        user = bench_user()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        call_command("sample_metrics", "--once")

        # Each page is timed computing everything, every time: no figures shared between requests.
        # The tabs below run as in production, sharing the overview's figures for 2 s.
        with override_settings(STATS_CACHE_SECONDS=0):
            results = self.measure(client, names[0], messages, runs)
            if many:
                results["many_queues"] = self.many_queues(client, many, runs)
        results["tabs"] = self.refreshing_tabs(names, tabs_seconds)
        if bulk:
            results["bulk"] = self.bulk(bulk, user)
        results["setup"] = {
            "queues": queues,
            "live_per_queue": messages,
            "archived_per_queue": messages,
            "postgresql": self.scalar("SHOW server_version"),
            "shared_buffers": self.scalar("SHOW shared_buffers"),
        }
        self.report(results)
        if json_path:
            json_path.write_text(json.dumps(results, indent=2))

    def scalar(self, query: str, params=None):
        with connections["pgmq"].cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchone()[0]

    # Seeding

    def seed(self, names: list[str], messages: int) -> None:
        url = settings.PGMQ_DATABASE_URL
        todo = []
        with psycopg.connect(url, autocommit=True) as connection:
            for name in names:
                exists = connection.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [name]).fetchone()
                sent = (
                    connection.execute(
                        "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'msg_id')::regclass)",
                        [f"pgmq.q_{name}"],
                    ).fetchone()[0]
                    if exists
                    else None
                )
                if sent == 2 * messages:
                    continue  # seeded by an earlier run with the same size
                if exists:  # half seeded, or another size: start again
                    connection.execute("SELECT pgmq.drop_queue(%s)", [name])
                todo.append(name)
        if not todo:
            print(f"{len(names)} bench queues already seeded; delete them to seed again")
            return
        print(f"seeding {len(todo)} queues x {messages:,} live + {messages:,} archived messages...")
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 2, 2)) as pool:
            list(pool.map(lambda name: self.seed_queue(url, name, messages), todo))
        with psycopg.connect(url, autocommit=True) as connection:
            for name in todo:
                for prefix in ("q_", "a_"):
                    connection.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("pgmq", prefix + name)))
        print(f"seeded in {time.monotonic() - started:.0f} s")

    def seed_queue(self, url: str, name: str, messages: int) -> None:
        # The payload SQL's % is modulo: doubled, since the statement has parameters.
        send = sql.SQL(f"""SELECT count(*) FROM pgmq.send_batch(%s,
            ARRAY(SELECT {PAYLOAD_SQL.replace("%", "%%")} FROM generate_series(%s::bigint, %s::bigint) i),
            ARRAY(SELECT {HEADERS_SQL.replace("%", "%%")} FROM generate_series(%s::bigint, %s::bigint) i))""")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("SELECT pgmq.create(%s)", [name])
            for start in range(1, 2 * messages + 1, BATCH):
                end = min(start + BATCH - 1, 2 * messages)
                connection.execute(send, [name, start, end, start, end])
                if start <= messages:  # the first half goes to the archive, through pgmq.archive
                    connection.execute(
                        "SELECT count(*) FROM pgmq.archive(%s, ARRAY(SELECT generate_series(%s::bigint, %s::bigint)))",
                        [name, start, min(end, messages)],
                    )
            connection.execute("SELECT count(*) FROM pgmq.read(%s, 3600, 1000)", [name])  # in flight for an hour
            for _ in range(6):  # 50 messages read six times: poison
                connection.execute("SELECT count(*) FROM pgmq.read(%s, 0, 50)", [name])

    # Page timings

    def measure(self, client: Client, queue: str, messages: int, runs: int) -> dict:
        middle = messages + messages // 2  # msg_ids 1..messages went to the archive
        table = sql.Identifier("pgmq", f"q_{queue}").as_string()
        pages = {
            "overview": ("/", "SELECT * FROM pgmq.metrics_all()"),
            "overview refresh (htmx)": (
                {"path": "/", "headers": {"HX-Request": "true", "HX-Target": "overview-live"}},
                None,
            ),
            "message browser, first page": (
                f"/queues/{queue}/messages/",
                f"SELECT count(*) FROM {table}; SELECT * FROM {table} ORDER BY msg_id DESC LIMIT 50",
            ),
            "message browser, middle page": (
                f"/queues/{queue}/messages/?from={middle}",
                f"SELECT count(*) FROM {table}; SELECT * FROM {table} "
                f"ORDER BY msg_id DESC LIMIT 50 OFFSET {messages // 2}",
            ),
            "message browser, last page": (
                f"/queues/{queue}/messages/?last=1",
                f"SELECT count(*) FROM {table}; SELECT * FROM {table} "
                f"ORDER BY msg_id DESC LIMIT 50 OFFSET {messages - 50}",
            ),
            "message detail": (f"/queues/{queue}/messages/{middle}/", f"SELECT * FROM {table} WHERE msg_id = {middle}"),
            "queue page with its charts' data": (f"/queues/{queue}/", f"SELECT * FROM pgmq.metrics('{queue}')"),
            "queue page refresh (htmx)": (
                {"path": f"/queues/{queue}/", "headers": {"HX-Request": "true", "HX-Target": "queue-live"}},
                None,
            ),
            "archive history panel, 1 h": (f"/queues/{queue}/archive-history/?range=1h", None),
            "diagnostics panel": (f"/queues/{queue}/diagnostics/", None),
            "poison panel (reads the table whole)": (
                f"/queues/{queue}/poison/",
                f"SELECT * FROM {table} ORDER BY read_ct DESC LIMIT 10",
            ),
            "search in payloads (bounded)": (f"/queues/{queue}/messages/?q=customer77%40", None),
        }
        results = {}
        for name, (request, baseline) in pages.items():
            request = request if isinstance(request, dict) else {"path": request}

            def page(request=request):
                # secure: as behind a TLS proxy (with DASHBOARD_HTTPS on, the default, http is redirected).
                response = client.get(request["path"], headers=request.get("headers", {}), secure=True)
                assert response.status_code == 200, (request, response.status_code)

            results[name] = {"dashboard": timed(page, runs)}
            if baseline:
                results[name]["baseline_sql"] = baseline
                results[name]["baseline"] = timed(lambda baseline=baseline: self.run_sql(baseline), max(runs // 3, 5))
                results[name]["ratio"] = round(
                    results[name]["baseline"]["median_ms"] / results[name]["dashboard"]["median_ms"], 1
                )
        return {"pages": results}

    def run_sql(self, statements: str) -> None:
        """The obvious SQL as a psql or pgweb user runs it: a connection of its own, without the
        dashboard's statement_timeout (pgmq.metrics_all() over 20M cold rows takes longer)."""
        if self.sql is None:
            self.sql = psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True)
        for statement in statements.split("; "):
            self.sql.execute(statement).fetchall()

    # Bulk actions by filter, against pgmq's functions called directly

    def fill(self, name: str, count: int) -> None:
        send = sql.SQL(f"""SELECT count(*) FROM pgmq.send_batch(%s,
            ARRAY(SELECT {PAYLOAD_SQL.replace("%", "%%")} FROM generate_series(%s::bigint, %s::bigint) i))""")
        with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
            if connection.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [name]).fetchone():
                connection.execute("SELECT pgmq.drop_queue(%s)", [name])
            connection.execute("SELECT pgmq.create(%s)", [name])
            for start in range(1, count + 1, BATCH):
                connection.execute(send, [name, start, min(start + BATCH - 1, count)])
            connection.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("pgmq", f"q_{name}")))

    def bulk(self, count: int, user) -> dict:
        """Archive and delete `count` messages by a filter every message matches, as a job; and the
        same with pgmq.archive / pgmq.delete called directly with arrays of 5,000 ids, in the same
        run. Both run beside a consumer reading and archiving from the same queue, whose slowest
        call says how long a batch held it up."""
        from queues import jobs, vocabulary
        from queues.filters import MessageFilter
        from queues.management.commands.run_jobs import run_pending_jobs
        from queues.models import BulkJob
        from queues.pgmq import Queue

        results = {}
        for action in (vocabulary.ARCHIVE_ACTION, vocabulary.DELETE):
            client_ids, server_ids, by_filter = (f"bulk_{how}_{action}" for how in ("client_ids", "server_ids", "job"))
            print(f"bulk {action}: filling three queues of {count:,} messages...")
            for name in (client_ids, server_ids, by_filter):
                self.fill(name, count)
            batches = [
                (start, min(start + settings.BULK_BATCH_SIZE - 1, count))
                for start in range(1, count + 1, settings.BULK_BATCH_SIZE)
            ]
            # Directly, as a program holding the ids calls pgmq: arrays of 5,000 ids as parameters...
            with (
                self.consumer(client_ids) as client_stalls,
                psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection,
            ):
                started = time.perf_counter()
                for first, last in batches:
                    connection.execute(
                        f"SELECT * FROM pgmq.{action}(%s, %s::bigint[])", [client_ids, list(range(first, last + 1))]
                    ).fetchall()
                client_ids_s = time.perf_counter() - started
            # ... and with the arrays made inside PostgreSQL: no ids on the wire at all, the floor.
            with self.consumer(server_ids), psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
                started = time.perf_counter()
                for first, last in batches:
                    connection.execute(
                        f"SELECT count(*) FROM pgmq.{action}(%s, ARRAY(SELECT generate_series("
                        "%s::bigint, %s::bigint)))",
                        [server_ids, first, last],
                    )
                server_ids_s = time.perf_counter() - started

            job = jobs.create(
                user=user,
                queue=Queue.objects.get(queue_name=by_filter),
                source="live",
                action=action,
                parameters={},
                message_filter=MessageFilter(message_contains={"currency": "EUR"}),
                expected=None,
            )
            with self.consumer(by_filter) as job_stalls:
                started = time.perf_counter()
                run_pending_jobs()
                job_s = time.perf_counter() - started
            job.refresh_from_db()
            job_per_s = (job.affected + job.already_gone) / job_s
            results[action] = {
                "messages": count,
                "job_per_s": round(job_per_s),
                "job_batches": job.batches,
                "direct_client_ids_per_s": round(count / client_ids_s),
                "direct_server_ids_per_s": round(count / server_ids_s),
                "ratio_to_client_ids": round(job_per_s / (count / client_ids_s), 2),
                "ratio_to_server_ids": round(job_per_s / (count / server_ids_s), 2),
                "taken_by_the_consumer_meanwhile": job.already_gone,
                "slowest_consumer_call_ms": round(max(job_stalls) * 1000, 1) if job_stalls else None,
                "slowest_consumer_call_beside_direct_calls_ms": round(max(client_stalls) * 1000, 1)
                if client_stalls
                else None,
                "job_status": job.status,
            }
            for name in (client_ids, server_ids, by_filter):
                with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
                    connection.execute("SELECT pgmq.drop_queue(%s)", [name])
            assert BulkJob.objects.filter(pk=job.pk, status=BulkJob.DONE).exists(), job.error
        return results

    @contextmanager
    def consumer(self, queue: str) -> Iterator[list[float]]:
        """A consumer reading 5 messages at a time from `queue` and archiving them, while the block
        runs; yields the list its calls' durations go into."""
        durations: list[float] = []
        stopping = threading.Event()

        def work() -> None:
            with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
                while not stopping.is_set():
                    began = time.perf_counter()
                    rows = connection.execute("SELECT msg_id FROM pgmq.read(%s, 30, 5)", [queue]).fetchall()
                    if rows:
                        connection.execute("SELECT pgmq.archive(%s, %s::bigint[])", [queue, [row[0] for row in rows]])
                    durations.append(time.perf_counter() - began)
                    stopping.wait(0.005)

        thread = threading.Thread(target=work)
        thread.start()
        try:
            yield durations
        finally:
            stopping.set()
            thread.join()

    # The overview with many queues

    def many_queues(self, client: Client, count: int, runs: int) -> dict:
        """Create `count` small queues (5 messages each), time the overview over all of them, drop them."""
        names = [f"many_{n:04d}" for n in range(count)]
        with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
            for name in names:
                connection.execute("SELECT pgmq.create(%s)", [name])
                connection.execute("SELECT pgmq.send_batch(%s, array_fill('{\"n\": 1}'::jsonb, ARRAY[5]))", [name])
        try:
            results = {}
            for label, path in (
                ("overview, first page", "/"),
                ("overview, sorted by backlog", "/?sort=-backlog"),
                ("overview, searched", "/?q=many_09"),
            ):

                def page(path=path):
                    assert client.get(path, secure=True).status_code == 200

                results[label] = timed(page, max(runs // 3, 5))
            results["queues"] = count + len(self.bench_names)
            return results
        finally:
            with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
                for name in names:
                    connection.execute("SELECT pgmq.drop_queue(%s)", [name])

    # Ten tabs refreshing every 2 s

    def refreshing_tabs(self, names: list[str], seconds: int) -> dict:
        with gunicorn(workers=2) as (base, _):
            cookie = self.session_cookie()
            # Five tabs on the overview, five on queue pages: every 2 s the live region, every
            # 6th refresh the heavier panels, as the page's own script does.
            tabs = [("/", "overview-live", [])] * 5 + [
                (
                    f"/queues/{name}/",
                    "queue-live",
                    [
                        f"/queues/{name}/archive-history/?range=1h",
                        f"/queues/{name}/diagnostics/",
                        f"/queues/{name}/poison/",
                    ],
                )
                for name in names[:5]
            ]
            stopping = threading.Event()
            timings: list[float] = []
            errors: list[str] = []

            def tab(path: str, target: str, panels: list[str]) -> None:
                tick = 0
                while not stopping.is_set():
                    started = time.monotonic()
                    requests = [(path, {"HX-Request": "true", "HX-Target": target})]
                    if tick % 6 == 0:
                        requests += [(panel, {"HX-Request": "true"}) for panel in panels]
                    for url, headers in requests:
                        request = urllib.request.Request(base + url, headers={**headers, "Cookie": cookie})
                        began = time.perf_counter()
                        try:
                            urllib.request.urlopen(request, timeout=30).read()
                            timings.append((time.perf_counter() - began) * 1000)
                        except OSError as error:
                            errors.append(f"{url}: {error}")
                    tick += 1
                    stopping.wait(max(2 - (time.monotonic() - started), 0))

            cpu_before, total_before = database_cpu(settings.PGMQ_DATABASE_URL)
            wall_started = time.monotonic()
            threads = [threading.Thread(target=tab, args=spec) for spec in tabs]
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            stopping.set()
            for thread in threads:
                thread.join()
            wall = time.monotonic() - wall_started
            cpu_after, total_after = database_cpu(settings.PGMQ_DATABASE_URL)
        cores = os.cpu_count() or 1
        dashboard_cpu = cpu_after - cpu_before
        timings.sort()
        return {
            "tabs": len(tabs),
            "seconds": round(wall, 1),
            "requests": len(timings),
            "errors": errors[:5],
            "request_median_ms": round(statistics.median(timings), 1) if timings else None,
            "request_p95_ms": round(percentile(timings, 0.95), 1) if timings else None,
            "dashboard_db_cpu_seconds": round(dashboard_cpu, 2),
            "dashboard_share_of_one_core": round(dashboard_cpu / wall, 4),
            "dashboard_share_of_machine": round(dashboard_cpu / (wall * cores), 4),
            "all_database_cpu_seconds": round(total_after - total_before, 2),
            "cores": cores,
        }

    def session_cookie(self) -> str:
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(get_user_model().objects.get(username="bench"))
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    # Report

    def report(self, results: dict) -> None:
        print()
        print(f"{'page':40} {'median':>9} {'p95':>9}   {'obvious SQL':>11}   ratio")
        for name, figures in results["pages"].items():
            dashboard = figures["dashboard"]
            baseline = figures.get("baseline")
            print(
                f"{name:40} {dashboard['median_ms']:>7.1f}ms {dashboard['p95_ms']:>7.1f}ms"
                + (f"   {baseline['median_ms']:>9.1f}ms   {figures['ratio']:>5.1f}x" if baseline else "")
            )
        if "many_queues" in results:
            many = results["many_queues"]
            print()
            for label, figures in many.items():
                if isinstance(figures, dict):
                    print(
                        f"{label + ', ' + str(many['queues']) + ' queues':40} "
                        f"{figures['median_ms']:>7.1f}ms {figures['p95_ms']:>7.1f}ms"
                    )
        for action, figures in results.get("bulk", {}).items():
            print(
                f"bulk {action} by filter: {figures['job_per_s']:,}/s as a job; calling pgmq.{action} directly "
                f"{figures['direct_client_ids_per_s']:,}/s with id arrays from the client "
                f"(ratio {figures['ratio_to_client_ids']:.2f}), {figures['direct_server_ids_per_s']:,}/s with the "
                f"arrays made in PostgreSQL (ratio {figures['ratio_to_server_ids']:.2f}); slowest call of a consumer "
                f"working the same queue meanwhile: {figures['slowest_consumer_call_ms']} ms (beside the direct "
                f"calls: {figures['slowest_consumer_call_beside_direct_calls_ms']} ms)"
            )
        tabs = results["tabs"]
        print()
        print(
            f"{tabs['tabs']} tabs refreshing every 2 s for {tabs['seconds']} s: {tabs['requests']} requests, "
            f"median {tabs['request_median_ms']} ms, p95 {tabs['request_p95_ms']} ms, errors {len(tabs['errors'])}; "
            f"database CPU for the dashboard {tabs['dashboard_db_cpu_seconds']} s = "
            f"{tabs['dashboard_share_of_one_core']:.1%} of one core, {tabs['dashboard_share_of_machine']:.1%} of "
            f"the machine's {tabs['cores']} cores"
        )
        print()
        print(json.dumps(results, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench",
        description="Seed big queues, time every page against the obvious SQL, and measure the dashboard's "
        "database CPU.",
    )
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--messages", type=int, default=500_000, help="live messages per queue; as many archived")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per page")
    parser.add_argument("--tabs-seconds", type=int, default=60, help="how long the 10 refreshing tabs run")
    parser.add_argument(
        "--many", type=int, default=1000, help="also time the overview with this many more (small) queues; 0 to skip"
    )
    parser.add_argument(
        "--bulk",
        type=int,
        default=200_000,
        help="messages archived and deleted by filter, against pgmq directly; 0 to skip",
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this file")
    Bench().run(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

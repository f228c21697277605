"""The scale benchmark: the dashboard at both ends, many small queues and one giant queue.

    make bench-scale                                    # on an embedded PostgreSQL of its own (var/bench-scale)
    PGMQ_DATABASE_URL=... python -m perf.bench_scale    # a database of yours: queues scale_00000.. and giant

Many queues: 1,000, 5,000 and 10,000 queues of 20 messages (made through pgmq.create and
pgmq.send_batch, a hundred per transaction), and at each size the overview (median of --runs, the
figures cache off), the API's queue list, /metrics, a round of the sampler and pgmq.metrics_all(),
all on 30 minutes of the sampler's history (its latest round copied back in time, as a sampler that
has run that long keeps: the rounds and the overview's sparklines and forecasts read it),
beside the page floor: one catalog query for every queue's row estimate plus index probes for the
50 queues a page shows, in one connection, in the same run.

One giant queue: --giant live messages (50 million by default), --not-visible of them in flight or
delayed, inserted with generate_series straight into pgmq's table so that seeding takes minutes;
then the overview, the queue page, the message browser's first, middle and last pages, a jump to
an id and the poison panel, each beside the SQL a pgweb user would run for it.

Prints a table and the same figures as JSON. Nothing is timed against a fixed number: each figure
is read against the floor measured beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from psycopg import sql

from dashboard.static_files import collect_static
from perf.bench import bench_user, timed
from queues.alerting import evaluate_alerts, readings_from
from queues.management.commands.sample_metrics import take_sample
from queues.models import QueueSample, SamplerRound
from queues.selectors.stats import queue_stats
from queues.tokens import issue_token

MESSAGES_PER_QUEUE = 20
QUEUES_PER_TRANSACTION = 100
PAGE_QUEUES = 50  # what the overview shows at once
GIANT = "giant"
METRICS_TOKEN = "bench-scale-metrics-token"
INSERT_CHUNK = 1_000_000
# What a sampler that has run for half an hour has kept: the longest window a round reads (the
# sparklines' 30 minutes; the consumer-silence lookback is 15, the rates' 5).
HISTORY_MINUTES = 30


def scale_name(number: int) -> str:
    return f"scale_{number:05d}"


class ScaleBench:
    def __init__(self, runs: int):
        self.runs = runs
        self.url = settings.PGMQ_DATABASE_URL
        self.sql = psycopg.connect(self.url, autocommit=True)
        self.client = Client(HTTP_HOST="127.0.0.1")
        self.user = bench_user()
        self.client.force_login(self.user)
        self.api_headers = {"Authorization": f"Token {issue_token(self.user)[1]}"}

    def get(self, path: str, **headers) -> None:
        response = self.client.get(path, headers=headers, secure=True)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])

    # Many queues

    def existing_scale_queues(self) -> int:
        return self.sql.execute("SELECT count(*) FROM pgmq.meta WHERE queue_name LIKE 'scale\\_%'").fetchone()[0]

    def grow_to(self, count: int) -> None:
        have = self.existing_scale_queues()
        if have >= count:
            return
        print(f"creating queues {have:,} to {count:,} of {MESSAGES_PER_QUEUE} messages each...", flush=True)
        started = time.monotonic()
        for first in range(have, count, QUEUES_PER_TRANSACTION):
            names = [scale_name(n) for n in range(first, min(first + QUEUES_PER_TRANSACTION, count))]
            with self.sql.transaction():
                for name in names:
                    self.sql.execute("SELECT pgmq.create(%s)", [name])
                    self.sql.execute(
                        "SELECT pgmq.send_batch(%s, ARRAY(SELECT jsonb_build_object('n', i) "
                        "FROM generate_series(1, %s) i))",
                        [name, MESSAGES_PER_QUEUE],
                    )
        self.sql.execute("ANALYZE pgmq.meta")
        print(f"  made in {time.monotonic() - started:.0f} s", flush=True)

    def page_floor(self) -> None:
        """One catalog query for every queue's row estimate, and index probes for one page of queues."""
        with psycopg.connect(self.url, autocommit=True) as connection:
            names = [
                row[0]
                for row in connection.execute(
                    "SELECT queue_name FROM pgmq.meta ORDER BY queue_name LIMIT %s", [PAGE_QUEUES]
                ).fetchall()
            ]
            probes = sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "SELECT {name}, (SELECT count(*) FROM {table} WHERE vt > now()), "
                    "(SELECT enqueued_at FROM {table} ORDER BY msg_id LIMIT 1)"
                ).format(name=sql.Literal(name), table=sql.Identifier("pgmq", f"q_{name}"))
                for name in names
            )

            def floor() -> None:
                connection.execute(
                    "SELECT c.relname, c.reltuples, pg_stat_get_live_tuples(c.oid) FROM pg_class c "
                    "WHERE c.relnamespace = 'pgmq'::regnamespace AND c.relkind IN ('r', 'p')"
                ).fetchall()
                connection.execute(probes).fetchall()

            return timed(floor, self.runs)

    def metrics_all(self) -> dict:
        try:
            return timed(lambda: self.sql.execute("SELECT * FROM pgmq.metrics_all()").fetchall(), 3)
        except psycopg.Error as error:
            return {"failed": str(error).strip().splitlines()[0]}

    def many_queues(self, sizes: list[int]) -> dict:
        results = {}
        for size in sizes:
            self.grow_to(size)
            queues = self.sql.execute("SELECT count(*) FROM pgmq.meta").fetchone()[0]
            print(f"measuring at {queues:,} queues...", flush=True)
            take_sample(count_poison_everywhere=False)
            self.fill_history(HISTORY_MINUTES)
            sampler = timed(lambda: take_sample(count_poison_everywhere=False), 3)
            # Autovacuum analyzes the samples as they grow (10,000 a round here); a run minutes old
            # would otherwise plan against the statistics of an empty table.
            with connections["default"].cursor() as cursor:
                cursor.execute("ANALYZE queues_queuesample, queues_samplerround")
            stats = queue_stats()
            alerts = timed(lambda stats=stats: evaluate_alerts(readings_from(stats, {})), 3)
            with override_settings(STATS_CACHE_SECONDS=0, METRICS_TOKEN=METRICS_TOKEN):
                figures = {
                    "overview": timed(lambda: self.get("/"), self.runs),
                    "overview sorted by in flight": timed(lambda: self.get("/?sort=-in_flight"), self.runs),
                    "api queue list": timed(lambda: self.get("/api/v1/queues/", **self.api_headers), self.runs),
                    "/metrics": timed(
                        lambda: self.get("/metrics", Authorization=f"Bearer {METRICS_TOKEN}"), max(self.runs // 2, 3)
                    ),
                }
                with override_settings(OVERVIEW_PROBE_ALL_UP_TO=queues):
                    figures["overview probing every queue (as before)"] = timed(lambda: self.get("/"), 3)
            figures["sampler round"] = sampler
            figures["alert evaluation"] = alerts
            figures["page floor"] = self.page_floor()
            figures["pgmq.metrics_all()"] = self.metrics_all()
            floor = figures["page floor"]["median_ms"]
            figures["overview / page floor"] = round(figures["overview"]["median_ms"] / floor, 1)
            results[queues] = figures
        return results

    def fill_history(self, minutes: int) -> None:
        """The sampler's history as deep as `minutes` of rounds every SAMPLE_INTERVAL_SECONDS, copied
        from its latest round back in time: a round and the pages read that history, and a benchmark
        right after creating the queues would otherwise time them on a few rounds."""
        interval = settings.SAMPLE_INTERVAL_SECONDS
        latest = SamplerRound.objects.order_by("-finished_at").first()
        window = SamplerRound.objects.filter(
            database=latest.database, finished_at__gt=latest.finished_at - timedelta(minutes=minutes)
        )
        # Rounds of fewer queues (an earlier, smaller size of this run) make way for copies of this one.
        fewer = window.filter(queues__lt=latest.queues)
        QueueSample.objects.filter(round__in=fewer).delete()
        fewer.delete()
        kept = list(window.values_list("finished_at", flat=True))
        # A round every interval, where the sampler (or an earlier run of this) has left none.
        missing = [
            shift
            for shift in (timedelta(seconds=back * interval) for back in range(1, int(minutes * 60 / interval) + 1))
            if not any(abs(latest.finished_at - shift - at) < timedelta(seconds=interval / 2) for at in kept)
        ]
        if not missing:
            return
        print(
            f"filling the sampler's history to {minutes} min ({len(missing)} rounds of {latest.queues:,})...",
            flush=True,
        )
        started = time.monotonic()
        columns = [
            f.column for f in QueueSample._meta.concrete_fields if f.column not in ("id", "round_id", "sampled_at")
        ]
        for shift in missing:
            earlier = SamplerRound.objects.create(
                database=latest.database,
                started_at=latest.started_at - shift,
                finished_at=latest.finished_at - shift,
                queues=latest.queues,
                seconds=latest.seconds,
            )
            with connections["default"].cursor() as cursor:
                cursor.execute(
                    sql.SQL(
                        "INSERT INTO {table} (round_id, sampled_at, {columns}) "
                        "SELECT %s, sampled_at - %s, {columns} FROM {table} WHERE round_id = %s"
                    )
                    .format(
                        table=sql.Identifier(QueueSample._meta.db_table),
                        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
                    )
                    .as_string(),
                    [earlier.pk, shift, latest.pk],
                )
        # Vacuumed too, as autovacuum keeps a table written a round at a time: after a bulk fill it
        # would otherwise run during the timings.
        with connections["default"].cursor() as cursor:
            cursor.execute("VACUUM ANALYZE queues_queuesample, queues_samplerround")
        print(f"  filled in {time.monotonic() - started:.0f} s", flush=True)

    def drop_giant(self) -> None:
        if self.sql.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [GIANT]).fetchone():
            print(f"dropping the queue {GIANT} an earlier run kept (it would be on the overview's first page)...")
            self.sql.execute("SELECT pgmq.drop_queue(%s)", [GIANT])

    def drop_scale_queues(self) -> None:
        names = [
            row[0]
            for row in self.sql.execute("SELECT queue_name FROM pgmq.meta WHERE queue_name LIKE 'scale\\_%'").fetchall()
        ]
        for first in range(0, len(names), QUEUES_PER_TRANSACTION):
            with self.sql.transaction():
                for name in names[first : first + QUEUES_PER_TRANSACTION]:
                    self.sql.execute("SELECT pgmq.drop_queue(%s)", [name])

    # One giant queue

    def seed_giant(self, rows: int, not_visible: int) -> None:
        """`rows` live messages; the oldest not_visible/2 in flight (consumers read the oldest
        first), as many more delayed among the rest; 1,000 read six times (poison), visible."""
        table = sql.Identifier("pgmq", f"q_{GIANT}")
        if self.sql.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [GIANT]).fetchone():
            sent = self.sql.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'msg_id')::regclass)", [f"pgmq.q_{GIANT}"]
            ).fetchone()[0]
            if sent == rows:
                return
            self.sql.execute("SELECT pgmq.drop_queue(%s)", [GIANT])
        print(f"seeding queue {GIANT}: {rows:,} messages, {not_visible:,} of them in flight or delayed...", flush=True)
        started = time.monotonic()
        self.sql.execute("SELECT pgmq.create(%s)", [GIANT])
        in_flight = not_visible // 2
        delayed_every = max((rows - in_flight) // max(not_visible - in_flight, 1), 1)
        poison_every = max(rows // 1000, 1)
        insert = sql.SQL("""
            INSERT INTO {table} (msg_id, read_ct, enqueued_at, vt, message) OVERRIDING SYSTEM VALUE
            SELECT i,
                   CASE WHEN i <= %(in_flight)s THEN 1 + i %% 3 WHEN i %% %(poison_every)s = 7 THEN 6 ELSE 0 END,
                   now() - make_interval(secs => (%(rows)s - i) / 1000.0),
                   -- pgmq's read and send take clock_timestamp() per row: no two vt alike.
                   CASE WHEN i <= %(in_flight)s THEN now() + interval '1 hour' + make_interval(secs => i / 1e6)
                        WHEN i %% %(delayed_every)s = 0 AND i %% %(poison_every)s <> 7
                        THEN now() + interval '2 hours' + make_interval(secs => i / 1e6)
                        ELSE now() - make_interval(secs => (%(rows)s - i) / 1000.0) END,
                   jsonb_build_object('order', i, 'customer', 'customer' || (i %% 5000), 'amount', i %% 997)
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) i
        """).format(table=table)
        for first in range(1, rows + 1, INSERT_CHUNK):
            last = min(first + INSERT_CHUNK - 1, rows)
            self.sql.execute(
                insert,
                {
                    "in_flight": in_flight,
                    "poison_every": poison_every,
                    "delayed_every": delayed_every,
                    "rows": rows,
                    "first": first,
                    "last": last,
                },
            )
            print(f"  {last:,} rows ({time.monotonic() - started:.0f} s)", flush=True)
        self.sql.execute("SELECT setval(pg_get_serial_sequence(%s, 'msg_id'), %s)", [f"pgmq.q_{GIANT}", rows])
        self.sql.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        print(f"  seeded in {time.monotonic() - started:.0f} s", flush=True)

    def giant_queue(self, rows: int, not_visible: int) -> dict:
        self.seed_giant(rows, not_visible)
        take_sample(count_poison_everywhere=False)
        table = sql.Identifier("pgmq", f"q_{GIANT}").as_string()
        middle = rows // 2
        pages = {
            "overview": ("/", f"SELECT count(*) FROM {table} WHERE vt > now()"),
            "queue page": (f"/queues/{GIANT}/", f"SELECT * FROM pgmq.metrics('{GIANT}')"),
            "message browser, first page": (
                f"/queues/{GIANT}/messages/",
                f"SELECT * FROM {table} ORDER BY msg_id DESC LIMIT 50",
            ),
            "message browser, middle page": (
                f"/queues/{GIANT}/messages/?from={middle}",
                f"SELECT * FROM {table} WHERE msg_id <= {middle} ORDER BY msg_id DESC LIMIT 50",
            ),
            "message browser, last page": (
                f"/queues/{GIANT}/messages/?last=1",
                f"SELECT * FROM {table} ORDER BY msg_id LIMIT 50",
            ),
            "message browser, jump to an id": (
                f"/queues/{GIANT}/messages/?from={rows - 12345}",
                f"SELECT * FROM {table} WHERE msg_id <= {rows - 12345} ORDER BY msg_id DESC LIMIT 50",
            ),
            "message browser, in flight": (
                f"/queues/{GIANT}/messages/?state=in_flight",
                f"SELECT * FROM {table} WHERE vt > now() AND read_ct > 0 ORDER BY msg_id DESC LIMIT 50",
            ),
            # The same filter where pgmq's vt index serves it (README: sort=vt).
            "message browser, in flight, by vt": (
                f"/queues/{GIANT}/messages/?state=in_flight&sort=vt",
                f"SELECT * FROM {table} WHERE vt > now() AND read_ct > 0 ORDER BY vt LIMIT 50",
            ),
            "poison panel": (
                f"/queues/{GIANT}/poison/",
                f"SELECT * FROM {table} WHERE read_ct >= 5 ORDER BY read_ct DESC LIMIT 10",
            ),
        }
        results = {}
        with override_settings(STATS_CACHE_SECONDS=0):
            for name, (path, baseline) in pages.items():
                results[name] = {
                    "dashboard": timed(lambda path=path: self.get(path), self.runs),
                    "baseline_sql": baseline,
                    "baseline": timed(lambda baseline=baseline: self.sql.execute(baseline).fetchall(), 3),
                }
        return results

    # Report

    def report(self, results: dict) -> None:
        print()
        if "many_queues" in results:
            print(
                f"{'queues':>7} {'overview':>10} {'floor':>8} {'ratio':>6} {'api list':>9} {'/metrics':>9} "
                f"{'sampler':>9} {'alerts':>8}   pgmq.metrics_all()"
            )
            for queues, figures in results["many_queues"].items():
                metrics_all = figures["pgmq.metrics_all()"]
                overview, floor = figures["overview"]["median_ms"], figures["page floor"]["median_ms"]
                print(
                    f"{queues:>7,} {overview:>8.1f}ms {floor:>6.1f}ms "
                    f"{figures['overview / page floor']:>5.1f}x {figures['api queue list']['median_ms']:>7.1f}ms "
                    f"{figures['/metrics']['median_ms']:>7.0f}ms {figures['sampler round']['median_ms']:>7.0f}ms "
                    f"{figures['alert evaluation']['median_ms']:>6.0f}ms   "
                    + (f"{metrics_all['median_ms']:.0f} ms" if "median_ms" in metrics_all else metrics_all["failed"])
                )
        if "giant_queue" in results:
            print()
            print(f"{'giant queue: page':40} {'median':>9} {'p95':>9}   {'obvious SQL':>11}")
            for name, figures in results["giant_queue"].items():
                print(
                    f"{name:40} {figures['dashboard']['median_ms']:>7.1f}ms {figures['dashboard']['p95_ms']:>7.1f}ms"
                    f"   {figures['baseline']['median_ms']:>9.1f}ms"
                )
        print()
        print(json.dumps(results, indent=2, default=str))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench_scale", description="Time the dashboard with many queues and with one giant queue."
    )
    parser.add_argument("--queues", default="1000,5000,10000", help="queue counts to measure at, comma-separated")
    parser.add_argument("--giant", type=int, default=50_000_000, help="live messages of the giant queue; 0 to skip")
    parser.add_argument("--not-visible", type=int, default=10_000_000, help="of them in flight or delayed")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per page")
    parser.add_argument("--keep", action="store_true", help="keep the many queues after the run")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this file")
    arguments = parser.parse_args(argv)
    call_command("migrate", verbosity=0)
    collect_static()
    bench = ScaleBench(arguments.runs)
    results = {
        "setup": {
            "postgresql": bench.sql.execute("SHOW server_version").fetchone()[0],
            "max_locks_per_transaction": bench.sql.execute("SHOW max_locks_per_transaction").fetchone()[0],
            "sample_interval_s": settings.SAMPLE_INTERVAL_SECONDS,
        }
    }
    sizes = [int(size) for size in arguments.queues.split(",") if size.strip() and int(size) > 0]
    if sizes:
        bench.drop_giant()
        results["many_queues"] = bench.many_queues(sorted(sizes))
        if not arguments.keep:
            bench.drop_scale_queues()
    if arguments.giant:
        results["giant_queue"] = bench.giant_queue(arguments.giant, arguments.not_visible)
    bench.report(results)
    if arguments.json_path:
        arguments.json_path.write_text(json.dumps(results, indent=2, default=str))
    connections.close_all()


if __name__ == "__main__":
    main()

"""The memory benchmark: a worker's peak memory when eight people read one huge message at once.

    make bench-memory                                    # an embedded PostgreSQL of its own (var/bench)
    PGMQ_DATABASE_URL=... python -m perf.bench_memory    # a database of yours: queue bench_memory

Puts a 50 MB message (an array of 200,000 small objects: the shape that costs most to pretty-print)
and a 40 MB one (one long string) into the queue bench_memory, then for each endpoint that shows or
sends a payload starts a gunicorn of its own (one worker, the production configuration: 4 threads)
and has 8 clients read it at once, to the last byte, each of the two messages by half of them.
An export refused by its cap (429) is asked again after its Retry-After, so every reader is served
in the end. Prints, per endpoint, the worker's peak RSS (VmHWM) against its floor: the same
worker's RSS once warmed up on small pages, before the readers came.
"""

from __future__ import annotations

import argparse
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from dashboard.static_files import collect_static
from perf.measuring import gunicorn

QUEUE = "bench_memory"
READERS = 8
MESSAGES_SQL = {
    "50 MB array": "SELECT pgmq.send(%s, (SELECT jsonb_agg(jsonb_build_object('id', i, 'sku', 'SKU-' || i, "
    "'note', repeat('n', 200))) FROM generate_series(1, 200000) i))",
    "40 MB string": "SELECT pgmq.send(%s, jsonb_build_object('blob', repeat('x', 40000000)))",
}


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def worker_of(master_pid: int) -> int:
    """The one worker gunicorn forked, once it has."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker within 30 s")


class BenchMemory:
    def run(self, *, json_path: Path | None) -> None:
        call_command("migrate", verbosity=0)
        collect_static()
        ids = self.seed()
        cookie = self.session_cookie()
        small = f"/queues/{QUEUE}/messages/"
        endpoints = {
            "message page": [f"/queues/{QUEUE}/messages/{msg_id}/" for msg_id in ids],
            "raw download": [f"/queues/{QUEUE}/messages/{msg_id}/raw/" for msg_id in ids],
            "API list": [f"/api/v1/queues/{QUEUE}/messages/"],
            "API message": [f"/api/v1/queues/{QUEUE}/messages/{msg_id}/" for msg_id in ids],
            "CSV export": [f"/queues/{QUEUE}/messages/export.csv"],
            "NDJSON export": [f"/queues/{QUEUE}/messages/export.ndjson"],
        }
        results = []
        for name, paths in endpoints.items():
            results.append({"endpoint": name, **self.measure(paths, small, cookie)})
            print(self.line(results[-1]))
        print()
        print(
            f"payloads: {', '.join(MESSAGES_SQL)} (message::text {self.sizes()}), {READERS} readers "
            f"at once per endpoint, one gunicorn worker with {settings.WORKER_THREADS} threads"
        )
        print(
            f"{'endpoint':15} {'floor':>8} {'peak':>8} {'peak/floor':>10} {'served':>7} "
            f"{'MB sent':>8} {'429s':>5} {'seconds':>8}"
        )
        for result in results:
            print(self.line(result))
        print()
        print(json.dumps(results, indent=2))
        if json_path:
            json_path.write_text(json.dumps(results, indent=2))

    @staticmethod
    def line(result: dict) -> str:
        return (
            f"{result['endpoint']:15} {result['floor_mb']:>6.0f}MB {result['peak_mb']:>6.0f}MB "
            f"{result['peak_over_floor']:>9.2f}x {result['served']:>4}/{READERS} {result['mb_sent']:>8.0f} "
            f"{result['refused_then_retried']:>5} {result['seconds']:>8.1f}"
        )

    def seed(self) -> list[int]:
        with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
            if connection.execute("SELECT 1 FROM pgmq.meta WHERE queue_name = %s", [QUEUE]).fetchone():
                connection.execute("SELECT pgmq.drop_queue(%s)", [QUEUE])
            connection.execute("SELECT pgmq.create(%s)", [QUEUE])
            return [connection.execute(statement, [QUEUE]).fetchone()[0] for statement in MESSAGES_SQL.values()]

    def sizes(self) -> str:
        with psycopg.connect(settings.PGMQ_DATABASE_URL, autocommit=True) as connection:
            rows = connection.execute(f"SELECT octet_length(message::text) FROM pgmq.q_{QUEUE} ORDER BY msg_id")
            return " and ".join(f"{size / 1e6:.0f} MB" for (size,) in rows)

    def session_cookie(self) -> str:
        user, _ = get_user_model().objects.get_or_create(username="bench-memory")
        user.groups.add(Group.objects.get(name="Viewer"))
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    def measure(self, paths: list[str], warm_up: str, cookie: str) -> dict:
        with gunicorn(workers=1) as (base, master):
            worker = worker_of(master.pid)
            for _ in range(3):  # imports, templates, connections: what every worker holds once it has served
                self.read(base, warm_up, cookie)
                self.read(base, "/", cookie)
            floor = memory_kb(worker, "VmRSS")
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=READERS) as pool:
                answers = list(pool.map(lambda n: self.read(base, paths[n % len(paths)], cookie), range(READERS)))
            seconds = time.monotonic() - started
            peak = memory_kb(worker, "VmHWM")
        return {
            "floor_mb": floor / 1024,
            "peak_mb": peak / 1024,
            "peak_over_floor": round(peak / floor, 2),
            "served": sum(status == 200 for status, _, _ in answers),
            "statuses": sorted({status for status, _, _ in answers}),
            "mb_sent": sum(size for _, size, _ in answers) / 1e6,
            "refused_then_retried": sum(retries for _, _, retries in answers),
            "seconds": round(seconds, 1),
        }

    @staticmethod
    def read(base: str, path: str, cookie: str) -> tuple[int, int, int]:
        """GET path and read the answer to its end in 1 MiB pieces: status, bytes, 429s waited out."""
        parts = urlsplit(base)
        retries = 0
        while True:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
            try:
                connection.request("GET", path, headers={"Cookie": cookie})
                response = connection.getresponse()
                size = 0
                while piece := response.read(1 << 20):
                    size += len(piece)
                if response.status == 429 and retries < 60:
                    retries += 1
                    time.sleep(float(response.getheader("Retry-After", "5")))  # as the server asks
                    continue
                return response.status, size, retries
            finally:
                connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench_memory",
        description="Measure a worker's peak memory with 8 readers at once of each endpoint on a 50 MB and a 40 MB "
        "message.",
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this file")
    BenchMemory().run(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

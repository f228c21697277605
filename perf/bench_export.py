"""The export benchmark: a million-row export streams with flat memory.

    make bench-export                                    # an embedded PostgreSQL of its own (var/bench)
    PGMQ_DATABASE_URL=... python -m perf.bench_export    # a database of yours: queues bench_export_*

Seeds two queues with bench's ~250-byte order JSON, half of each archived (bench_export_100k:
50,000 live + 50,000 archived; bench_export_1m: 500,000 + 500,000), then exports each whole
(source=both, so live and archive merged) as CSV and as NDJSON through Django's test client in this
process, reading the stream as a client would, while a thread samples this process's RSS every
10 ms. Prints rows, bytes, seconds, rows/s and the RSS growth over the export (peak minus the RSS
just before it): flat memory means the 1M export grows no more than the 100k one.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from perf.bench import Bench, bench_user

QUEUES = {"bench_export_100k": 50_000, "bench_export_1m": 500_000}  # live per queue; as many archived


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class BenchExport:
    def run(self, *, scale: float, json_path: Path | None) -> None:
        call_command("migrate", verbosity=0)
        sizes = {name: max(int(live * scale), 1) for name, live in QUEUES.items()}
        bench = Bench()
        for name, live in sizes.items():
            bench.seed([name], live)
        user = bench_user()
        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        self.measure(client, next(iter(sizes)), "ndjson")  # warm up: imports, plans, the connection
        results = [self.measure(client, name, export_format) for name in sizes for export_format in ("csv", "ndjson")]
        print()
        print(f"{'export':32} {'rows':>10} {'MB':>8} {'s':>7} {'rows/s':>9} {'RSS before':>11} {'peak growth':>12}")
        for result in results:
            print(
                f"{result['queue'] + '.' + result['format']:32} {result['rows']:>10,} "
                f"{result['bytes'] / 1e6:>8.1f} {result['seconds']:>7.1f} {result['rows_per_s']:>9,} "
                f"{result['rss_before_mb']:>9.1f}MB {result['rss_peak_growth_mb']:>10.1f}MB"
            )
        print()
        print(json.dumps(results, indent=2))
        if json_path:
            json_path.write_text(json.dumps(results, indent=2))

    def measure(self, client: Client, queue: str, export_format: str) -> dict:
        before = rss_bytes()
        peak = before
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        response = client.get(
            reverse(f"messages-export-{export_format}", args=[queue]) + "?source=both", secure=True
        )  # as behind a TLS proxy (http is redirected)
        assert response.status_code == 200 and response.streaming, response
        size = lines = 0
        for chunk in response.streaming_content:
            size += len(chunk)
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        response.close()
        rows = lines - (1 if export_format == "csv" else 0)  # the CSV's header line (payloads hold no newline)
        return {
            "queue": queue,
            "format": export_format,
            "rows": rows,
            "bytes": size,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
            "rss_before_mb": round(before / 2**20, 1),
            "rss_peak_growth_mb": round((peak - before) / 2**20, 1),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench_export",
        description="Seed 100k and 1M messages and measure their exports' speed and memory.",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the queues' sizes (0.1: a quick run)")
    parser.add_argument("--json", type=Path, dest="json_path", help="also write the figures to this file")
    BenchExport().run(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

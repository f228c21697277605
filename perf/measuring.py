"""What the benchmarks (perf/bench.py, bench_memory.py) and the load test (perf/loadtest.py) share:
the dashboard under a gunicorn of their own, percentiles, and the database's CPU per client."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import psycopg

BASE_DIR = Path(__file__).resolve().parents[1]
DASHBOARD_APPLICATION = "pgmq-dashboard"  # the application_name of every dashboard connection


def percentile(sorted_samples: list[float], fraction: float) -> float:
    """The sample `fraction` of the way up an already sorted list (nearest rank, no interpolation)."""
    return sorted_samples[min(len(sorted_samples) - 1, int(len(sorted_samples) * fraction))]


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A port free now, for a server a test starts. Not one the kernel hands out itself (bind to port
    0 does): an outgoing connection, to PostgreSQL say, could take such a port before the server
    binds it. Picked at random below that range, so test processes side by side rarely meet: from
    the system's randomness, since a test that seeds `random` (for repeatable data) would otherwise
    give every process that ran it the same ports, and one test's requests could reach another's."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in range(10_000, 30_000) if port not in ephemeral]
    for port in random.SystemRandom().sample(candidates, 50):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 10000 and 30000")


@contextmanager
def gunicorn(
    *,
    workers: int,
    log: IO | None = None,
    environment: dict[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The dashboard served as in production (dashboard/gunicorn.conf.py, `workers` processes) on
    plain http at 127.0.0.1, against the databases of this process's environment. Yields the base
    URL once /healthz answers, and the master process; stops it after the block."""
    port = free_port()
    # Plain http: secure cookies and the redirect to https would lock every client out.
    environment = {**os.environ, "WEB_CONCURRENCY": str(workers), "DASHBOARD_HTTPS": "0", **(environment or {})}
    output = log if log is not None else subprocess.DEVNULL
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "dashboard/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "dashboard.wsgi",
        ],
        cwd=BASE_DIR,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start with status {server.returncode}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2):
                    break
            except urllib.error.HTTPError as error:
                raise RuntimeError(f"gunicorn answers /healthz with {error.code}") from error
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not answer /healthz within 60 s") from None
                time.sleep(0.2)
        yield base, server
    finally:
        server.terminate()
        server.wait(timeout=20)


def backend_cpu(connection: psycopg.Connection) -> dict[int, tuple[str, float]]:
    """CPU seconds each backend of the database has used so far, by pid, with its application_name.

    Read from /proc: the database must run on this machine (make bench's and make loadtest's do).
    """
    rows = connection.execute("SELECT pid, application_name FROM pg_stat_activity").fetchall()
    ticks = os.sysconf("SC_CLK_TCK")
    backends = {}
    for pid, application in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        backends[pid] = (application, (int(fields[11]) + int(fields[12])) / ticks)
    return backends


def database_cpu(url: str) -> tuple[float, float]:
    """CPU seconds used so far by the backends serving the dashboard, and by every backend.

    Backends that ended are not counted: over a run shorter than the dashboard's CONN_MAX_AGE
    (60 s) its connections persist, and the difference of two readings is what they used.
    """
    with psycopg.connect(url, autocommit=True) as connection:
        backends = backend_cpu(connection)
    return (
        sum(seconds for application, seconds in backends.values() if application == DASHBOARD_APPLICATION),
        sum(seconds for _, seconds in backends.values()),
    )

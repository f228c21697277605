"""A real Prometheus scrapes /metrics from a real gunicorn while the demo workload runs: what it
stored is what the tables held and what the overview shows.

Prometheus is Debian's (`make prometheus`), scraping every second with deploy/prometheus/scrape.yml's
own job (only its address, timings and token file changed) and evaluating deploy/prometheus/alerts.yml.
Everything is read back through its HTTP API, as Grafana would:

- while producers and consumers work, each counter it stored lies between the table's value just
  before and just after that scrape;
- once the workload has stopped and its last visibility timeout has passed, nothing moves: every
  queue's figures in Prometheus equal the overview's and SQL's, exactly.

Series are told apart by their `queue` label only: Prometheus adds `job` and `instance`, and the
dashboard may add more (the database a queue lives in).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg
import pytest
import yaml
from django.conf import settings
from psycopg import sql

from dashboard import demo
from tests.conftest import BASE_DIR, free_port, gunicorn, http_status, prometheus_tool, uses_databases, wait_for
from tests.pages import number, overview_rows, parse
from tests.test_metrics import COLUMNS, TOKEN

pytestmark = uses_databases
DEPLOY = BASE_DIR / "deploy" / "prometheus"
# The dashboard's default: a scrape may get figures computed up to this long before it.
STATS_CACHE_SECONDS = 2
# The demo's consumers hold a message for 20 s; 3 s here, so that failed messages come back, and
# become poison, within the test's seconds, and the last one held is free soon after the stop.
VISIBILITY_TIMEOUT_S = 3
# Once the workload has stopped, the test's own slow consumer takes a message from each of these
# for 10 minutes, so that the settled queues have messages in flight that stay in flight.
SLOWLY_CONSUMED = [demo.ORDERS, demo.WEBHOOKS, demo.NOTIFICATIONS]


class Prometheus:
    """A Prometheus server of the test's own, read through its HTTP API."""

    def __init__(self, base_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path

    def get(self, path: str, **params: str) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}?{urlencode(params)}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str, at: str | None = None) -> list[dict]:
        """An instant query's vector (at a time given as Prometheus wrote it, else now)."""
        return self.get("/api/v1/query", query=expression, **({"time": at} if at else {}))["result"]

    def per_queue(self, metric: str, at: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for series in self.query(metric, at):
            queue = series["metric"]["queue"]
            assert queue not in found, f"two {metric} series for queue {queue!r}: label sets differ beyond queue"
            found[queue] = float(series["value"][1])
        return found

    def last_scrape(self) -> str | None:
        """The timestamp of the latest scrape that reached pgmq, as Prometheus wrote it. (timestamp()
        of a bare selector: of an expression such as `pgmq_up == 1` it is the query's own time.)"""
        stamps = [series["value"][1] for series in self.query("timestamp(pgmq_up) and pgmq_up == 1")]
        return max(stamps, key=float) if stamps else None

    def scrape_after(self, moment: float) -> str:
        """Wait for a scrape that began after `moment` (time.time()) plus the dashboard's figure
        sharing: its figures were computed after `moment`."""
        threshold = moment + STATS_CACHE_SECONDS + 0.5
        return wait_for(
            lambda: (stamp := self.last_scrape()) and float(stamp) >= threshold and stamp,
            timeout=STATS_CACHE_SECONDS + 15,
            what=self.describe_targets,
        )

    def describe_targets(self) -> str:
        targets = self.get("/api/v1/targets")["activeTargets"]
        return (
            f"a scrape of the dashboard; targets: {[(t['health'], t['lastError']) for t in targets]}; "
            f"log:\n{self.log_path.read_text()[-2000:]}"
        )


@pytest.fixture
def metrics_server(pgmq_database_url: str, tmp_path: Path) -> Iterator[str]:
    """The dashboard under gunicorn with /metrics on and figure sharing as in production."""
    with gunicorn(
        pgmq_database_url,
        tmp_path,
        DASHBOARD_METRICS_TOKEN=TOKEN,
        DASHBOARD_STATS_CACHE_SECONDS=str(STATS_CACHE_SECONDS),
    ) as base_url:
        yield base_url


@pytest.fixture
def prometheus(metrics_server: str, tmp_path: Path) -> Iterator[Prometheus]:
    binary = prometheus_tool("prometheus")
    (tmp_path / "token").write_text(TOKEN)
    shutil.copy(DEPLOY / "alerts.yml", tmp_path)
    shipped = yaml.safe_load((DEPLOY / "scrape.yml").read_text())
    (job,) = shipped["scrape_configs"]
    job.update(
        scheme="http",
        scrape_interval="1s",
        scrape_timeout="1s",
        static_configs=[{"targets": [urlsplit(metrics_server).netloc]}],
    )
    job["authorization"]["credentials_file"] = str(tmp_path / "token")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [job],
        "rule_files": [str(tmp_path / "alerts.yml")],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for(
            lambda: process.poll() is not None or http_status(server.base_url + "/-/ready") == 200,
            timeout=30,
            what="Prometheus to be ready",
        )
        assert process.poll() is None, f"Prometheus exited at start:\n{log_path.read_text()}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class DemoWorkload:
    """`make run`'s demo workload (dashboard/demo.py), in this process's threads."""

    def __init__(self, database_url: str) -> None:
        self.workload = demo.Workload(database_url)
        self.threads = self.workload.threads()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        # A thread that died of an error would have stopped producing or consuming unnoticed.
        dead = [thread.name for thread in self.threads if not thread.is_alive()]
        self.workload.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)
        assert not dead, f"demo workload threads died (their traceback is in the output): {dead}"
        assert not [thread.name for thread in self.threads if thread.is_alive()], "the workload did not stop"


@pytest.fixture
def demo_workload(
    pgmq_database_url: str, pgmq_sql: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DemoWorkload]:
    monkeypatch.setattr(demo, "VISIBILITY_TIMEOUT_S", VISIBILITY_TIMEOUT_S)
    demo.set_up_demo_queues(pgmq_database_url)
    workload = DemoWorkload(pgmq_database_url)
    try:
        yield workload
    finally:
        workload.workload.stopping.set()
        for thread in workload.threads:
            if thread.is_alive():
                thread.join(timeout=10)
        for queue in demo.DEMO_QUEUES:
            pgmq_sql.execute("SELECT pgmq.drop_queue(%s)", [queue])


def live_table(queue: str) -> sql.Identifier:
    return sql.Identifier("pgmq", "q_" + queue.lower())  # pgmq's own rule: lower('q_' || name)


def sent_and_archived(pgmq_sql: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Each demo queue's counters that only grow: its msg_id sequence and its archive's rows."""
    counters = {}
    for queue in demo.DEMO_QUEUES:
        counters[queue] = pgmq_sql.execute(
            sql.SQL(
                "SELECT coalesce(pg_sequence_last_value("
                "           pg_get_serial_sequence(format('pgmq.%I', {table}::text), 'msg_id')::regclass), 0),"
                "       (SELECT count(*) FROM {archive})"
            ).format(table=sql.Literal("q_" + queue.lower()), archive=sql.Identifier("pgmq", "a_" + queue.lower()))
        ).fetchone()
    return counters


def figures_in_sql(pgmq_sql: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Each demo queue's figures counted from its tables, keyed as COLUMNS (metric -> queue -> value)."""
    figures: dict[str, dict[str, int]] = {metric: {} for metric in COLUMNS}
    counters = sent_and_archived(pgmq_sql)
    for queue in demo.DEMO_QUEUES:
        backlog, visible, in_flight, delayed, poison = pgmq_sql.execute(
            sql.SQL(
                "SELECT count(*), count(*) FILTER (WHERE vt <= now()),"
                "       count(*) FILTER (WHERE vt > now() AND read_ct > 0),"
                "       count(*) FILTER (WHERE vt > now() AND read_ct = 0), count(*) FILTER (WHERE read_ct >= {poison})"
                "  FROM {live}"
            ).format(live=live_table(queue), poison=sql.Literal(settings.POISON_READ_COUNT))
        ).fetchone()
        sent, archived = counters[queue]
        for metric, value in zip(COLUMNS, (backlog, visible, in_flight, delayed, poison, sent, archived), strict=True):
            figures[metric][queue] = value
    return figures


def poison_anywhere(pgmq_sql: psycopg.Connection) -> bool:
    return any(figures_in_sql(pgmq_sql)["pgmq_queue_poison"].values())


def held_by_the_workload(pgmq_sql: psycopg.Connection) -> int:
    """Messages the workload's consumers still hold (read, visibility timeout not yet passed)."""
    return sum(
        pgmq_sql.execute(
            sql.SQL("SELECT count(*) FROM {live} WHERE read_ct > 0 AND vt > now()").format(live=live_table(queue))
        ).fetchone()[0]
        for queue in demo.DEMO_QUEUES
    )


def test_prometheus_scrapes_what_the_tables_hold_during_the_demo_and_what_the_overview_shows_after(
    prometheus, demo_workload, pgmq_sql, signed_in_client
):
    wait_for(lambda: prometheus.last_scrape(), timeout=30, what=prometheus.describe_targets)
    demo_workload.start()

    # While it runs: every scrape's counters between the tables' values before and after it. Until
    # some message has failed often enough to be poison, so that every figure has something to show.
    rounds = 0
    deadline = time.monotonic() + 90
    while rounds < 5 or not poison_anywhere(pgmq_sql):
        assert time.monotonic() < deadline, "no poison message in 90 s of the demo workload"
        before, moment = sent_and_archived(pgmq_sql), time.time()
        scrape = prometheus.scrape_after(moment)
        after = sent_and_archived(pgmq_sql)
        sent = prometheus.per_queue("pgmq_queue_messages_sent_total", scrape)
        archived = prometheus.per_queue("pgmq_queue_archived", scrape)
        backlog = prometheus.per_queue("pgmq_queue_backlog", scrape)
        for queue in demo.DEMO_QUEUES:
            assert before[queue][0] <= sent[queue] <= after[queue][0], (queue, before, sent, after)
            assert before[queue][1] <= archived[queue] <= after[queue][1], (queue, before, archived, after)
            # The sequence is read after the counts' snapshot; deletes make the sum fall short.
            assert backlog[queue] + archived[queue] <= sent[queue], queue
        states = [
            prometheus.per_queue(metric, scrape)
            for metric in ("pgmq_queue_visible", "pgmq_queue_in_flight", "pgmq_queue_delayed")
        ]
        for queue in demo.DEMO_QUEUES:  # one snapshot per queue: its states add up to its backlog
            assert sum(state[queue] for state in states) == backlog[queue], (queue, [s[queue] for s in states])
        rounds += 1

    # Stopped, and once the last message a consumer held is back, nothing moves (the delayed
    # reminders are due in minutes at the earliest): a slow consumer takes some for 10 minutes.
    demo_workload.stop()
    wait_for(
        lambda: held_by_the_workload(pgmq_sql) == 0,
        timeout=VISIBILITY_TIMEOUT_S + 10,
        what="the workload's last visibility timeouts to pass",
    )
    held = {
        queue: len(pgmq_sql.execute("SELECT msg_id FROM pgmq.read(%s, 600, 1)", [queue]).fetchall())
        for queue in SLOWLY_CONSUMED
    }
    settled = time.time()
    scrape = prometheus.scrape_after(settled)

    scraped = {metric: prometheus.per_queue(metric, scrape) for metric in COLUMNS}
    truth = figures_in_sql(pgmq_sql)
    rows = overview_rows(parse(signed_in_client.get("/")))
    shown = {
        metric: {queue: number(rows[queue][column]) for queue in demo.DEMO_QUEUES} for metric, column in COLUMNS.items()
    }
    for metric in COLUMNS:
        assert {queue: scraped[metric].get(queue) for queue in demo.DEMO_QUEUES} == truth[metric] == shown[metric], (
            metric
        )
    # The demo made every figure move somewhere.
    assert all(any(values.values()) for values in truth.values()), truth
    assert {queue: truth["pgmq_queue_in_flight"][queue] for queue in SLOWLY_CONSUMED} == held
    assert truth["pgmq_queue_delayed"]["orders"] >= 2  # set_up_demo_queues' reminders, hours away
    estimated = prometheus.query("pgmq_queue_estimated", scrape)
    assert estimated and all(series["value"][1] == "0" for series in estimated)  # small tables: counted

    # Prometheus took the sequence for the counter it is: it rose over the workload.
    (increase,) = prometheus.query('increase(pgmq_queue_messages_sent_total{queue="orders"}[1m])', scrape)
    assert float(increase["value"][1]) > 0

    # The shipped alert rules evaluate on these series without an error, and the poison alert is
    # pending (it fires after its `for`) for exactly the queues with poison, dead-letter queues aside.
    def rules_evaluated() -> list[dict]:
        rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
        return rules if all(epoch(rule["lastEvaluation"]) > float(scrape) for rule in rules) else []

    rules = wait_for(rules_evaluated, timeout=15, what="the alert rules to evaluate after the last scrape")
    assert [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    poisoned = {queue for queue, count in truth["pgmq_queue_poison"].items() if count and not queue.endswith("-dlq")}
    alerting = {series["metric"]["queue"] for series in prometheus.query('ALERTS{alertname="PgmqPoisonMessages"}')}
    assert alerting == poisoned != set()


def epoch(rfc3339: str) -> float:
    """The rules API's times (nanoseconds, which fromisoformat cuts to microseconds) as Unix time."""
    return datetime.fromisoformat(rfc3339).timestamp()

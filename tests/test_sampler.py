"""The metric sampler: what it stores, what it prunes, and the process that runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import psycopg
from django.test import override_settings

from queues.management.commands.sample_metrics import prune_samples, take_sample
from queues.models import QueueSample
from queues.selectors.stats import poison_counts, queue_stats
from tests.conftest import BASE_DIR, uses_databases, wait_for

pytestmark = uses_databases


def test_a_sample_stores_each_queues_figures(make_queue, pgmq_sql):
    make_queue("sampled", messages=12)
    pgmq_sql.execute("SELECT * FROM pgmq.read('sampled', 60, 2)")
    pgmq_sql.execute("SELECT pgmq.archive('sampled', ARRAY[11, 12]::bigint[])")
    take_sample(count_poison_everywhere=False)

    sample = QueueSample.objects.get(queue_name="sampled")
    truth = pgmq_sql.execute("""
        SELECT count(*), count(*) FILTER (WHERE vt <= now()), count(*) FILTER (WHERE vt > now()),
               (SELECT count(*) FROM pgmq.a_sampled), (SELECT last_value FROM pgmq.q_sampled_msg_id_seq)
        FROM pgmq.q_sampled""").fetchone()
    assert (sample.backlog, sample.visible, sample.in_flight, sample.archived, sample.sent_total) == truth
    assert sample.backlog_exact and sample.poison == 0


def test_big_tables_are_counted_for_poison_only_on_the_slow_round(make_queue, pgmq_sql):
    make_queue("big_poison", messages=300)
    for _ in range(5):
        pgmq_sql.execute("SELECT * FROM pgmq.read('big_poison', 0, 1)")
    pgmq_sql.execute("ANALYZE pgmq.q_big_poison")
    with override_settings(EXACT_COUNT_LIMIT=100):
        take_sample(count_poison_everywhere=False)
        take_sample(count_poison_everywhere=True)
    fast, slow = QueueSample.objects.filter(queue_name="big_poison").order_by("id")
    assert not fast.backlog_exact and fast.poison is None
    assert slow.poison == 1


def test_pruning_removes_only_samples_past_retention(make_queue):
    make_queue("pruned", messages=1)
    for _ in range(3):
        take_sample(count_poison_everywhere=False)
    old = list(QueueSample.objects.filter(queue_name="pruned").order_by("id")[:2])
    for sample in old:
        sample.sampled_at -= timedelta(days=8)
        sample.save()
    assert prune_samples(older_than=timedelta(days=7)) == 2
    assert QueueSample.objects.filter(queue_name="pruned").count() == 1


def test_the_sampler_process_samples_until_stopped(make_queue, pgmq_database_url):
    make_queue("ticking", messages=3)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sample_metrics", "--interval", "0.3"],
        cwd=BASE_DIR,
        env={**os.environ, "PGMQ_DATABASE_URL": pgmq_database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: QueueSample.objects.filter(queue_name="ticking").count() >= 3,
            timeout=30,
            what="three samples of the queue",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "sampling every 0.3 s" in output


def test_a_poison_count_that_cannot_finish_loses_only_that_figure(make_queue, pgmq_sql, pgmq_database_url):
    make_queue("blocked_count", messages=3)
    make_queue("free_count", messages=3)
    for _ in range(5):
        pgmq_sql.execute("SELECT * FROM pgmq.read('free_count', 0, 1)")
    stats = [queue for queue in queue_stats() if queue.name in {"blocked_count", "free_count"}]
    with psycopg.connect(pgmq_database_url) as blocker:  # e.g. a migration holding the table
        blocker.execute("LOCK TABLE pgmq.q_blocked_count IN ACCESS EXCLUSIVE MODE")
        counts = poison_counts(stats)
    assert counts == {"free_count": 1}

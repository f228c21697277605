"""A tiny Celery app for tests/test_celery.py, on kombu's pgmq transport.

The worker (`celery -A tests.celery_app worker`) and the test that sends tasks both configure it
from the environment: CELERY_TEST_DATABASE_URL (the test database, pgmq installed as SQL, not as an
extension) and CELERY_TEST_RUNS (a file each task appends one JSON line to, for the test to wait on).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery import Celery
from psycopg import conninfo

QUEUE = "celery_tasks"

app = Celery("tests.celery_app")


def configure(database_url: str) -> None:
    app.conf.update(
        broker_url="pgmq://",
        broker_transport_options={
            # In libpq's key=value form: the pgmq client reads no query string in a URL, so would miss
            # the host of a Unix socket (the embedded server's).
            "conn_string": conninfo.make_conninfo("", **conninfo.conninfo_to_dict(database_url)),
            "init_extension": False,  # the test database has pgmq's SQL installed, not the extension
            "pool_size": 2,
            "wait_time_seconds": 1,
            "polling_interval": 0.2,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # No pidbox queue: the worker leaves no queue behind but the one the test made.
        worker_enable_remote_control=False,
    )


if os.environ.get("CELERY_TEST_DATABASE_URL"):
    configure(os.environ["CELERY_TEST_DATABASE_URL"])


def record(**what) -> None:
    with open(os.environ["CELERY_TEST_RUNS"], "a") as runs:
        runs.write(json.dumps(what) + "\n")


@app.task
def add(x, y):
    record(task="add", args=[x, y], result=x + y)
    return x + y


@app.task
def divide(a, b):
    try:
        result = a / b
    except ZeroDivisionError:
        record(task="divide", args=[a, b], failed="ZeroDivisionError")
        raise
    record(task="divide", args=[a, b], result=result)
    return result


@app.task(bind=True, max_retries=3)
def flaky(self, label, *, countdown=1):
    """Fails its first run and retries `countdown` seconds later."""
    record(task="flaky", label=label, retries=self.request.retries)
    if self.request.retries == 0:
        raise self.retry(countdown=countdown, exc=RuntimeError("first run fails"))
    return label


@app.task(acks_late=True)
def hold(label):
    """Runs until the file next to the runs file named `release` exists (at most a minute): a
    worker killed meanwhile leaves its message in flight (acks_late: acknowledged when done)."""
    record(task="hold", label=label, started=True)
    release = Path(os.environ["CELERY_TEST_RUNS"]).with_name("release")
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    record(task="hold", label=label, finished=True)
    return label

"""The demo workload `make run` runs beside the dashboard (python -m dashboard.demo, once per demo
database; --setup-only creates the queues): producers and consumers like a real system.

- orders: order events at 2-10 per second, the rate drifting over minutes. Two consumers read with
  a 20 s visibility timeout, archive most, delete cancelled ones, and fail a few (the message comes
  back when its vt passes: a retry). Their capacity drifts too, on another period, so the backlog
  builds up and drains. Now and then a consumer "crashes" holding a batch.
  A few orders name an unknown SKU: they fail every time (poison), and after 25 attempts the
  consumer moves them to orders-dlq (a send and an archive in one transaction).
- webhooks: deliveries with headers (trace id, pgmq's FIFO group header per tenant), consumed in
  order per tenant with pgmq.read_grouped. The endpoint of tenant-7 is down: the head of its group
  keeps failing, holding the group back, until it is given up on (archived) at 10 attempts.
- notifications: produced, never consumed: its backlog and oldest message age grow.
- a reminder sent with a delay now and then, so some messages are delayed.

Every write is one of pgmq's own functions, called the way an application would.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import django
import psycopg
from django.conf import settings
from psycopg.types.json import Jsonb

logger = logging.getLogger("demo")

ORDERS, DEAD_LETTERS, WEBHOOKS, NOTIFICATIONS = "orders", "orders-dlq", "webhooks", "notifications"
DEMO_QUEUES = [ORDERS, DEAD_LETTERS, WEBHOOKS, NOTIFICATIONS]
VISIBILITY_TIMEOUT_S = 20
ORDER_GIVE_UP_AT = 25
WEBHOOK_GIVE_UP_AT = 10
BROKEN_TENANT = "tenant-7"
SKUS = ["SKU-1001", "SKU-1002", "SKU-2040", "SKU-3300", "SKU-4711", "SKU-5150"]
COUNTRIES = ["DE", "FR", "NL", "US", "GB", "ES", "PL"]


def wave(elapsed: float, period_s: float, phase: float = 0.0) -> float:
    """A factor between 0.4 and 1.6 drifting with the given period: steady, but not flat."""
    return 1 + 0.6 * math.sin(2 * math.pi * elapsed / period_s + phase)


def how_many(rate_per_s: float, interval_s: float) -> int:
    expected = max(rate_per_s * interval_s, 0)
    return int(expected) + (random.random() < expected - int(expected))


def order_event(event_id: int) -> dict:
    quantity = random.randint(1, 4)
    price = round(random.uniform(4, 120), 2)
    poison = random.random() < 0.004
    return {
        "id": event_id,
        "type": random.choice(["order_created", "order_created", "order_paid", "order_shipped", "order_cancelled"]),
        "order_id": f"ord_{uuid.uuid4().hex[:12]}",
        "customer": {
            "id": random.randint(1, 5000),
            "email": f"customer{random.randint(1, 5000)}@example.com",
            "country": random.choice(COUNTRIES),
        },
        "items": [{"sku": "SKU-UNKNOWN" if poison else random.choice(SKUS), "qty": quantity, "price": price}],
        "total": round(quantity * price, 2),
        "currency": "EUR",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def webhook_event(event_id: int) -> tuple[dict, dict]:
    tenant = f"tenant-{random.randint(1, 12)}"
    message = {
        "id": event_id,
        "type": random.choice(["invoice.paid", "invoice.created", "customer.updated", "subscription.renewed"]),
        "endpoint": f"https://hooks.{tenant}.example.com/pgmq",
        "attempt_budget": WEBHOOK_GIVE_UP_AT,
        "data": {"object_id": uuid.uuid4().hex[:16], "amount": random.randint(100, 90000)},
    }
    headers = {"x-pgmq-group": tenant, "trace_id": uuid.uuid4().hex, "content-type": "application/json"}
    return message, headers


class Workload:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.event_ids = itertools.count(int(time.time() * 10) % 10_000_000)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def connect(self, role: str) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True, application_name=f"pgmq-demo-{role}")

    def run_forever(self, role: str, step: Callable[[psycopg.Connection], None], interval_s: float) -> None:
        """Call step every interval_s with a connection of its own; ride out database restarts."""
        while not self.stopping.is_set():
            try:
                with self.connect(role) as connection:
                    while not self.stopping.wait(interval_s):
                        step(connection)
            except psycopg.OperationalError as error:
                logger.warning("demo %s: %s; reconnecting in 2 s", role, str(error).strip().splitlines()[0])
                self.stopping.wait(2)

    # Producers

    def produce_orders(self, connection: psycopg.Connection) -> None:
        count = how_many(6 * wave(self.elapsed(), 240), 0.5)
        if count:
            events = [Jsonb(order_event(next(self.event_ids))) for _ in range(count)]
            connection.execute("SELECT pgmq.send_batch(%s, %s::jsonb[])", [ORDERS, events])
        if random.random() < 0.003:  # a reminder, due in 2 to 10 minutes: delayed until then
            reminder = {
                "id": next(self.event_ids),
                "type": "order_reminder",
                "order_id": f"ord_{uuid.uuid4().hex[:12]}",
            }
            connection.execute(
                "SELECT pgmq.send(%s, %s, %s::integer)", [ORDERS, Jsonb(reminder), random.randint(120, 600)]
            )

    def produce_webhooks(self, connection: psycopg.Connection) -> None:
        count = how_many(3 * wave(self.elapsed(), 180, 1.0), 0.5)
        if count:
            messages, headers = zip(*(webhook_event(next(self.event_ids)) for _ in range(count)), strict=True)
            connection.execute(
                "SELECT pgmq.send_batch(%s, %s::jsonb[], %s::jsonb[])",
                [WEBHOOKS, [Jsonb(m) for m in messages], [Jsonb(h) for h in headers]],
            )

    def produce_notifications(self, connection: psycopg.Connection) -> None:
        if random.random() < 0.3:
            notification = {
                "id": next(self.event_ids),
                "type": "email",
                "template": "weekly_digest",
                "to": f"user{random.randint(1, 900)}@example.com",
            }
            connection.execute("SELECT pgmq.send(%s, %s)", [NOTIFICATIONS, Jsonb(notification)])

    # Consumers

    def read(
        self, connection: psycopg.Connection, queue: str, capacity_per_s: float, *, grouped: bool = False
    ) -> list[tuple]:
        count = how_many(capacity_per_s, 1.0)
        if not count:
            return []
        function = "pgmq.read_grouped" if grouped else "pgmq.read"
        return connection.execute(
            f"SELECT msg_id, read_ct, message, headers FROM {function}(%s, %s, %s)",
            [queue, VISIBILITY_TIMEOUT_S, count],
        ).fetchall()

    def consume_orders(self, connection: psycopg.Connection) -> None:
        # Two consumers of 4/s on average: headroom over the 6/s sent plus retries, except when
        # their capacity dips as the send rate peaks.
        batch = self.read(connection, ORDERS, 4 * wave(self.elapsed(), 300, 2.0))
        if random.random() < 0.005:
            return  # the consumer "crashed" holding the batch: every message comes back after its vt
        to_archive, to_delete = [], []
        for msg_id, read_ct, message, headers in batch:
            if any(item.get("sku") == "SKU-UNKNOWN" for item in message.get("items", [])):
                if read_ct >= ORDER_GIVE_UP_AT:
                    self.dead_letter(connection, msg_id, message, headers, reason="unknown SKU")
                continue  # poison: fails again, comes back after its vt
            if random.random() < 0.05:
                continue  # a transient failure: retried after its vt
            (to_delete if message.get("type") == "order_cancelled" else to_archive).append(msg_id)
        if to_archive:
            connection.execute("SELECT pgmq.archive(%s, %s::bigint[])", [ORDERS, to_archive])
        if to_delete:
            connection.execute("SELECT pgmq.delete(%s, %s::bigint[])", [ORDERS, to_delete])

    def dead_letter(
        self, connection: psycopg.Connection, msg_id: int, message: dict, headers: dict | None, *, reason: str
    ) -> None:
        dead_letter_headers = {**(headers or {}), "x-dead-letter-reason": reason, "x-original-msg-id": msg_id}
        with connection.transaction():
            connection.execute(
                "SELECT pgmq.send(%s, %s, %s)", [DEAD_LETTERS, Jsonb(message), Jsonb(dead_letter_headers)]
            )
            connection.execute("SELECT pgmq.archive(%s, %s::bigint)", [ORDERS, msg_id])

    def consume_webhooks(self, connection: psycopg.Connection) -> None:
        delivered, failed_groups = [], set()
        # 5/s on average for 3/s sent: the endpoint that is down costs up to ten reads per delivery.
        batch = self.read(connection, WEBHOOKS, 5 * wave(self.elapsed(), 200, 3.0), grouped=True)
        for msg_id, read_ct, _message, headers in batch:
            group = (headers or {}).get("x-pgmq-group")
            if group in failed_groups:
                continue  # in order per group: nothing after a failure is delivered this round
            endpoint_down = group == BROKEN_TENANT
            if (endpoint_down and read_ct < WEBHOOK_GIVE_UP_AT) or random.random() < 0.04:
                failed_groups.add(group)  # delivery failed: retried after its vt
                continue
            delivered.append(msg_id)  # delivered, or given up on: kept in the archive either way
        if delivered:
            connection.execute("SELECT pgmq.archive(%s, %s::bigint[])", [WEBHOOKS, delivered])

    def threads(self) -> list[threading.Thread]:
        roles = [
            ("orders-producer", self.produce_orders, 0.5),
            ("orders-consumer-1", self.consume_orders, 1.0),
            ("orders-consumer-2", self.consume_orders, 1.0),
            ("webhooks-producer", self.produce_webhooks, 0.5),
            ("webhooks-consumer", self.consume_webhooks, 1.0),
            ("notifications-producer", self.produce_notifications, 1.0),
        ]
        return [threading.Thread(target=self.run_forever, args=role, name=role[0], daemon=True) for role in roles]


def set_up_demo_queues(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        existing = {row[0] for row in connection.execute("SELECT queue_name FROM pgmq.meta")}
        for queue in DEMO_QUEUES:
            if queue not in existing:
                connection.execute("SELECT pgmq.create(%s)", [queue])
        if ORDERS not in existing:  # two reminders far in the future: delayed from the start
            for hours in (1, 6):
                reminder = {"id": hours, "type": "order_reminder", "order_id": f"ord_{uuid.uuid4().hex[:12]}"}
                connection.execute("SELECT pgmq.send(%s, %s, %s::integer)", [ORDERS, Jsonb(reminder), hours * 3600])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard.demo",
        description="Create the demo queues and run producers and consumers against them until stopped.",
    )
    parser.add_argument("--setup-only", action="store_true", help="create the demo queues, then exit")
    setup_only = parser.parse_args(argv).setup_only
    # The database from the settings, and their logging, as the dashboard's own processes have them.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    django.setup()
    set_up_demo_queues(settings.PGMQ_DATABASE_URL)
    if setup_only:
        return
    workload = Workload(settings.PGMQ_DATABASE_URL)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: workload.stopping.set())
    threads = workload.threads()
    for thread in threads:
        thread.start()
    print(f"demo workload running on {', '.join(DEMO_QUEUES)}")
    while not workload.stopping.wait(1):
        pass
    for thread in threads:
        thread.join(timeout=5)


if __name__ == "__main__":
    main()

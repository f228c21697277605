"""The dashboard's own tables (schema pgmq_dashboard). pgmq's tables are unmanaged models in pgmq.py."""

from django.conf import settings
from django.db import models

from queues.filters import MessageFilter
from queues.pgmq import Queue
from queues.watched import watched_name

__all__ = [
    "AlertEpisode",
    "AlertNotification",
    "ApiToken",
    "AuditChainHead",
    "AuditEntry",
    "BulkJob",
    "MessageCopy",
    "Queue",
    "QueueSample",
    "SamplerRound",
    "SignInFailures",
]


class QueueSample(models.Model):
    """One queue's figures at one moment, written by `manage.py sample_metrics`.

    pgmq keeps no history of backlog or throughput; these rows are it. Rates come from the
    difference between two samples of the cumulative counters (sent_total, removed_total).
    """

    database = models.CharField(
        max_length=40, default=watched_name, help_text="the watched database's name (settings.WATCHED_DATABASES)"
    )
    queue_name = models.CharField(max_length=255)
    sampled_at = models.DateTimeField(help_text="the pgmq database's clock when sampled")
    backlog = models.BigIntegerField()
    backlog_exact = models.BooleanField()
    visible = models.BigIntegerField()
    in_flight = models.BigIntegerField()
    delayed = models.BigIntegerField()
    oldest_age_s = models.FloatField(null=True, help_text="age of the oldest message; null when empty")
    sent_total = models.BigIntegerField(help_text="the queue's msg_id sequence: messages ever sent")
    removed_total = models.BigIntegerField(
        null=True, help_text="rows ever deleted from the live table (archived or deleted), from pg_stat"
    )
    archived = models.BigIntegerField(null=True)
    archived_exact = models.BooleanField(null=True)
    poison = models.BigIntegerField(null=True, help_text="messages read at least POISON_READ_COUNT times")
    # What the overview sorts and counts by when it probes only the queues it shows (many queues):
    oldest_visible_age_s = models.FloatField(null=True, help_text="age of the oldest message a consumer could take")
    newest_age_s = models.FloatField(null=True)
    enqueue_rate = models.FloatField(null=True, help_text="messages sent per second, last 5 min")
    processing_rate = models.FloatField(null=True, help_text="messages archived or deleted per second, last 5 min")
    enqueue_rate_1m = models.FloatField(null=True, help_text="messages sent per second, last minute")
    processing_rate_1m = models.FloatField(null=True, help_text="messages archived or deleted per second, last minute")
    health = models.CharField(max_length=10, blank=True, help_text="ok, warning or critical; empty in older samples")
    not_visible_exact = models.BooleanField(default=True, help_text="false: in flight and delayed are estimates")
    drain_eta_s = models.FloatField(
        null=True, help_text="seconds until the backlog is gone at the 5-minute rates; Infinity: it will not drain"
    )
    # Pruned before its round (prune_samples), so the constraint holds without a cascade in Python.
    round = models.ForeignKey("SamplerRound", null=True, on_delete=models.DO_NOTHING, related_name="samples")

    class Meta:
        indexes = [
            # Covering what the sparklines, forecasts, rates and consumer silences read of a queue's
            # history: an index-only scan reads a queue's samples from a few index pages, where a
            # round at a time puts each of them on a heap page of its own (migration 0017).
            models.Index(
                fields=["database", "queue_name", "sampled_at"],
                include=["backlog", "sent_total", "removed_total", "in_flight"],
                name="sample_history_idx",
            ),
            models.Index(fields=["sampled_at"], name="sample_time_idx"),
        ]
        ordering = ["queue_name", "sampled_at"]

    def __str__(self) -> str:
        return f"{self.queue_name} at {self.sampled_at:%Y-%m-%d %H:%M:%S}"


class SamplerRound(models.Model):
    """One round of the sampler in one database, written with its samples in one transaction;
    started_at and finished_at are its first and last sample's time (the pgmq database's clock)."""

    database = models.CharField(max_length=40)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    queues = models.IntegerField(help_text="queues sampled")
    seconds = models.FloatField(help_text="how long the round took, alert evaluation included")

    class Meta:
        indexes = [models.Index(fields=["database", "-finished_at"], name="round_db_finished_idx")]

    def __str__(self) -> str:
        return f"{self.database} at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class AuditEntry(models.Model):
    """One action someone took, as it happened. Written once, never changed: database triggers
    (migration 0004) refuse UPDATE, DELETE and TRUNCATE; only the table's owner could take them
    off. And tamper-evident: a trigger (migration 0008) gives each record its id and chains it to
    the one before by a hash, which queues/selectors/audit_chain.py checks."""

    DONE, PARTIAL, FAILED, CANCELLED = "done", "partial", "failed", "cancelled"
    REFUSED = "refused"  # the user's role does not allow the action (a 403): nothing was done

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The user by id and name, not a foreign key: deleting a user must not touch the record.
    user_id = models.IntegerField(null=True)
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=40, db_index=True)
    database = models.CharField(
        max_length=40,
        default=watched_name,
        db_index=True,
        help_text="the watched database's name (settings.WATCHED_DATABASES)",
    )
    queue_name = models.CharField(max_length=255, db_index=True)
    target = models.JSONField(help_text="the msg_ids acted on, or the filter in words and as data")
    requested = models.IntegerField(help_text="messages the action was asked to handle")
    affected = models.IntegerField(default=0)
    already_gone = models.IntegerField(default=0, help_text="deleted or archived by a consumer meanwhile")
    skipped = models.IntegerField(default=0, help_text="left alone on purpose (a message in flight, say)")
    outcome = models.CharField(max_length=20)
    details = models.JSONField(default=dict, help_text="new msg_ids, destinations, errors")
    deleted_payloads = models.JSONField(null=True, help_text="what a delete or purge removed, up to a limit")
    deleted_count = models.IntegerField(null=True)
    request_token = models.UUIDField(
        null=True, unique=True, help_text="from the confirmation that asked: the same action is never done twice"
    )
    # Set by the database as the record is inserted, whatever Django sends.
    chain_prev_id = models.BigIntegerField(null=True, editable=False, help_text="the record chained before this one")
    chain_hash = models.CharField(
        max_length=64,
        default="",
        editable=False,
        help_text="sha256 over the previous record's hash and this record's content",
    )

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("operate_messages", "Can act on messages: retry, delay, archive, delete, move, requeue, send"),
            ("administer_queues", "Can purge, create and drop queues"),
            ("view_unredacted", "Can see the payload values DASHBOARD_REDACT hides"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.queue_name}"


class AuditChainHead(models.Model):
    """The audit chain's newest link, in one row: its row lock puts appends in one line, and a
    record missing from the end of the log shows against it."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    last_id = models.BigIntegerField(null=True)
    last_hash = models.CharField(max_length=64, null=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="one_audit_chain_head")]

    def __str__(self) -> str:
        return f"audit chain head at #{self.last_id}"


class BulkJob(models.Model):
    """An action on every message matching a filter, done in batches by `manage.py run_jobs`.

    `cursor` is the last msg_id handled: after a crash the runner goes on from there. Every action
    takes the messages it handles out of what the filter matches next time (or, for a retry, does
    the same thing twice harmlessly), so a batch repeated after a crash handles nothing twice.
    """

    PENDING, RUNNING, DONE, CANCELLED, FAILED = "pending", "running", "done", "cancelled", "failed"

    created_at = models.DateTimeField(auto_now_add=True)
    user_id = models.IntegerField(null=True)
    username = models.CharField(max_length=150)
    database = models.CharField(
        max_length=40, default=watched_name, help_text="the watched database's name (settings.WATCHED_DATABASES)"
    )
    queue_name = models.CharField(max_length=255)
    source = models.CharField(max_length=10)  # live or archive
    action = models.CharField(max_length=40)
    parameters = models.JSONField(default=dict)  # destination, delay, include_in_flight...
    filter = models.JSONField()  # the MessageFilter, as data
    filter_words = models.TextField()
    expected = models.BigIntegerField(null=True, help_text="matching when confirmed; None if counting took too long")
    status = models.CharField(max_length=20, default=PENDING, db_index=True)
    cursor = models.BigIntegerField(default=0)
    affected = models.BigIntegerField(default=0)
    already_gone = models.BigIntegerField(default=0)
    skipped = models.BigIntegerField(default=0)
    batches = models.IntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    cancelled_by = models.CharField(max_length=150, blank=True)
    deleted_payloads = models.JSONField(null=True, help_text="collected for the audit record, up to its limit")
    payload_bytes = models.BigIntegerField(default=0, help_text="size of deleted_payloads as text")
    new_ids = models.JSONField(
        null=True, default=dict, help_text="original msg_id -> msg_id of the copy (moves, requeues), up to its limit"
    )
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)
    audit_entry = models.OneToOneField(AuditEntry, null=True, on_delete=models.PROTECT, related_name="job")
    request_token = models.UUIDField(
        null=True, unique=True, help_text="from the confirmation that asked: the same job is never started twice"
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"job {self.pk}: {self.action} on {self.queue_name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.DONE, self.CANCELLED, self.FAILED)

    @property
    def took_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def message_filter(self) -> MessageFilter:
        return MessageFilter.from_data(self.filter)


class AlertEpisode(models.Model):
    """One alert rule breached on one queue of one database, from pending to resolved.

    Written by the sampler (queues/alerting.py). At most one episode per (database, rule, queue) is
    open (pending or firing); a pending one that clears before its `for` duration is deleted, so
    the history holds only alerts that fired.
    """

    PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"

    database = models.CharField(max_length=40, help_text="the watched database's name, as in WATCHED_DATABASES")
    rule = models.CharField(max_length=100)
    queue_name = models.CharField(max_length=255)
    measure = models.CharField(max_length=20)
    threshold = models.FloatField()
    state = models.CharField(max_length=10, default=PENDING)
    value = models.FloatField(null=True, help_text="the measure at the latest evaluation")
    peak_value = models.FloatField(null=True)
    pending_since = models.DateTimeField()
    fired_at = models.DateTimeField(null=True)
    resolved_at = models.DateTimeField(null=True)
    resolved_because = models.CharField(max_length=100, blank=True)
    last_notified_at = models.DateTimeField(null=True, help_text="the last firing notification (repeats count)")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["database", "rule", "queue_name"],
                condition=models.Q(state__in=["pending", "firing"]),
                name="one_open_alert_per_rule_and_queue",
            )
        ]
        indexes = [
            models.Index(fields=["database", "queue_name", "-id"], name="alert_queue_idx"),
            models.Index(fields=["database", "state"], name="alert_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} on {self.queue_name} ({self.database}): {self.state}"


class AlertNotification(models.Model):
    """One message about an episode (firing or resolved) to one webhook or e-mail address, sent by
    the sampler and tried again each round until delivered. A webhook is stored as its label and a
    hash of its URL, never the URL itself (it carries the receiver's secret)."""

    WEBHOOK, EMAIL = "webhook", "email"

    episode = models.ForeignKey(AlertEpisode, on_delete=models.CASCADE, related_name="notifications")
    status = models.CharField(max_length=10, help_text="what it announces: firing or resolved")
    channel = models.CharField(max_length=10)
    destination = models.CharField(max_length=255, help_text="shown on pages: the webhook's host, or the address")
    destination_key = models.CharField(max_length=320, help_text="sha256 of the webhook URL, or the address")
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.IntegerField(default=0)
    delivered_at = models.DateTimeField(null=True)
    abandoned = models.BooleanField(default=False, help_text="given up: too old, or no longer configured")
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["delivered_at", "abandoned"], name="alert_notification_due_idx")]

    def __str__(self) -> str:
        return f"{self.status} of {self.episode} to {self.destination}"


def delete_tokens(collector, field, sub_objs, using):
    """CASCADE, through the alias of the dashboard's tables: mounted in another project (its
    own alias), the project's connection deleting a user would not find them. There the tokens go
    at once, in a transaction of their own, before the user."""
    own = settings.DASHBOARD_DATABASE_ALIAS
    if using == own:
        models.CASCADE(collector, field, sub_objs, using)
    else:
        sub_objs.using(own).delete()


delete_tokens.lazy_sub_objs = True  # not fetched through the project's connection first


class ApiToken(models.Model):
    """A key for the API (`Authorization: Token <key>`), acting as its account. Only a hash of the
    key is kept: the key itself is shown once, when it is made (queues/tokens.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=delete_tokens, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, help_text="what it is for, e.g. the CI job using it")
    prefix = models.CharField(max_length=16, help_text="the key's first characters, to tell tokens apart")
    key_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of the key, hex")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user} ({self.name})" if self.name else f"{self.prefix}… of {self.user}"


class MessageCopy(models.Model):
    """A copy of a message the dashboard sent (move, requeue, edit and resend): from which message to
    which. Written in the transaction that sent it, so an archived message requeued once is known to
    be, and the same requeue asked twice at once makes one copy."""

    database = models.CharField(
        max_length=40, default=watched_name, help_text="the watched database's name (settings.WATCHED_DATABASES)"
    )
    queue_name = models.CharField(max_length=255, help_text="the original's queue")
    msg_id = models.BigIntegerField(help_text="the original's msg_id")
    source = models.CharField(max_length=10, help_text="live or archive: where the original was")
    copy_queue = models.CharField(max_length=255)
    copy_msg_id = models.BigIntegerField()
    action = models.CharField(max_length=40)
    username = models.CharField(max_length=150)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["database", "queue_name", "msg_id"], name="copy_original_idx"),
            models.Index(fields=["database", "copy_queue", "copy_msg_id"], name="copy_copy_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.queue_name} #{self.msg_id} → {self.copy_queue} #{self.copy_msg_id} ({self.action})"


class SignInFailures(models.Model):
    """Recent failed sign-ins from one address, for one name or (username null) for every name:
    what queues/sign_in_limits.py slows down. A row without a failure for the failure window is
    forgotten (deleted); deleting one by hand lifts its wait at once."""

    address = models.TextField(help_text="an IPv4 address, or an IPv6 /64 network")
    username = models.TextField(null=True, blank=True, help_text="null: every name from this address")
    failures = models.PositiveIntegerField()
    last_failed_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = verbose_name_plural = "sign-in failures"
        constraints = [
            models.UniqueConstraint(
                fields=["address", "username"],
                condition=models.Q(username__isnull=False),
                name="sign_in_failures_per_name",
            ),
            models.UniqueConstraint(
                fields=["address"], condition=models.Q(username__isnull=True), name="sign_in_failures_per_address"
            ),
        ]

    def __str__(self) -> str:
        who = "every name" if self.username is None else repr(self.username)
        return f"{self.failures} failed sign-ins for {who} from {self.address}"

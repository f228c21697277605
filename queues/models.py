"""The dashboard's own tables (schema pgmq_dashboard). pgmq's tables are unmanaged models in pgmq.py."""
from django.db import models

from queues.pgmq import Queue

__all__ = ["Queue", "QueueSample"]


class QueueSample(models.Model):
    """One queue's figures at one moment, written by `manage.py sample_metrics`.

    pgmq keeps no history of backlog or throughput; these rows are it. Rates come from the
    difference between two samples of the cumulative counters (sent_total, removed_total).
    """

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
        null=True, help_text="rows ever deleted from the live table (archived or deleted), from pg_stat")
    archived = models.BigIntegerField(null=True)
    poison = models.BigIntegerField(null=True, help_text="messages read at least POISON_READ_COUNT times")

    class Meta:
        indexes = [models.Index(fields=["queue_name", "sampled_at"], name="sample_queue_time_idx"),
                   models.Index(fields=["sampled_at"], name="sample_time_idx")]
        ordering = ["queue_name", "sampled_at"]

    def __str__(self) -> str:
        return f"{self.queue_name} at {self.sampled_at:%Y-%m-%d %H:%M:%S}"

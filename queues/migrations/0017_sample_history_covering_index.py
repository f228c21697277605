"""The samples' history index covers what is read of it (QueueSample.Meta), built concurrently so
the sampler keeps writing while it is made; and autovacuum visits the table every 100,000 samples
written (10 rounds at 10,000 queues) rather than at a fifth of its size (days of history), so the
latest rounds are marked all-visible, which index-only scans need."""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

TABLE = "queues_queuesample"


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("queues", "0016_api_token_deleted_with_its_user"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="queuesample",
            index=models.Index(
                fields=["database", "queue_name", "sampled_at"],
                include=["backlog", "sent_total", "removed_total", "in_flight"],
                name="sample_history_idx",
            ),
        ),
        RemoveIndexConcurrently(model_name="queuesample", name="sample_db_queue_time_idx"),
        migrations.RunSQL(
            f"ALTER TABLE {TABLE} SET (autovacuum_vacuum_insert_scale_factor = 0, "
            "autovacuum_vacuum_insert_threshold = 100000)",
            reverse_sql=f"ALTER TABLE {TABLE} RESET (autovacuum_vacuum_insert_scale_factor, "
            "autovacuum_vacuum_insert_threshold)",
        ),
    ]

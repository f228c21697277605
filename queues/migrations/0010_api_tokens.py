"""API tokens kept as hashes (queues.models.ApiToken), in place of Django REST framework's authtoken
table, which kept each key in plain text. Its keys are carried over as hashes, so tokens in use go
on working; the old table is left for the operator to drop (README, "Upgrading")."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

CARRY_OVER = """
DO $$
BEGIN
    IF to_regclass('authtoken_token') IS NOT NULL THEN
        INSERT INTO queues_apitoken (user_id, name, prefix, key_hash, created_at)
        SELECT user_id, 'carried over from authtoken', left(key, 12),
               encode(sha256(convert_to(key, 'UTF8')), 'hex'), created
        FROM authtoken_token
        ON CONFLICT (key_hash) DO NOTHING;
    END IF;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0009_signin_attempts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.CharField(blank=True, help_text="what it is for, e.g. the CI job using it", max_length=100),
                ),
                (
                    "prefix",
                    models.CharField(help_text="the key's first characters, to tell tokens apart", max_length=16),
                ),
                ("key_hash", models.CharField(help_text="sha256 of the key, hex", max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("last_used_at", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="api_tokens",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"ordering": ["-id"]},
        ),
        migrations.RunSQL(CARRY_OVER, migrations.RunSQL.noop),
    ]

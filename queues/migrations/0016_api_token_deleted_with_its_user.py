"""A user's API tokens are deleted with the user through the alias of the dashboard's tables
(queues.models.delete_tokens): mounted in another project, whose connection does not find them.
Nothing changes in the database."""

from django.conf import settings
from django.db import migrations, models

import queues.models


class Migration(migrations.Migration):
    dependencies = [
        ("queues", "0015_sample_drain_eta"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="apitoken",
            name="user",
            field=models.ForeignKey(
                on_delete=queues.models.delete_tokens, related_name="api_tokens", to=settings.AUTH_USER_MODEL
            ),
        ),
    ]

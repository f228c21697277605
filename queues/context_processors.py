from django.conf import settings
from django.http import HttpRequest

from dashboard.databases import database_label, database_short_label
from queues.pgmq import PGMQ_DATABASE


def watched_database(request: HttpRequest) -> dict[str, str]:
    """Every page says which database it shows: on call, the wrong tab is a real risk."""
    return {
        "watched_database": database_short_label(PGMQ_DATABASE),
        "watched_database_full": database_label(PGMQ_DATABASE),
    }


def refresh_interval(request: HttpRequest) -> dict[str, int]:
    return {"refresh_seconds": settings.REFRESH_SECONDS}

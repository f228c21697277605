from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from dashboard.databases import database_label, database_short_label
from queues.access import can_watch
from queues.pgmq import watched_alias


@dataclass(frozen=True)
class WatchedDatabase:
    name: str
    where: str  # name@host, without user or password
    overview_url: str


def other_databases(request: HttpRequest, alias: str) -> list[WatchedDatabase]:
    """The watched databases besides this one that the user has a role in."""
    if len(settings.WATCHED_DATABASES) < 2 or not hasattr(request, "user"):
        return []
    script_prefix = getattr(request, "dashboard_script_prefix", "/")
    try:
        return [WatchedDatabase(name=name, where=database_short_label(other),
                                overview_url=script_prefix if index == 0 else f"{script_prefix}db/{name}/")
                for index, (name, other) in enumerate(settings.WATCHED_DATABASES.items())
                if other != alias and can_watch(request.user, name)]
    except DatabaseError:
        return []  # the dashboard's own database is down: the 503 page is being shown


def watched_database(request: HttpRequest) -> dict[str, object]:
    """Every page says which database it shows (on call, the wrong tab is a real risk) and, with
    several, offers the others the user has a role in (looked up only if the page shows them)."""
    alias = watched_alias()
    return {
        "watched_database_name": getattr(request, "watched_database", ""),
        "watched_database": database_short_label(alias),
        "watched_database_full": database_label(alias),
        "several_databases": len(settings.WATCHED_DATABASES) > 1,
        "other_databases": SimpleLazyObject(lambda: other_databases(request, alias)),
    }


def refresh_interval(request: HttpRequest) -> dict[str, int]:
    return {"refresh_seconds": settings.REFRESH_SECONDS}

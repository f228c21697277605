from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest
from django.urls import NoReverseMatch, get_resolver, get_script_prefix, reverse
from django.utils.functional import SimpleLazyObject

from dashboard import __version__
from dashboard.databases import database_label, database_short_label
from queues.access import can_watch
from queues.models import AlertEpisode
from queues.pgmq import has_topics
from queues.selectors.switching import has_queue
from queues.watched import database_path_prefix, watched_alias, watched_name


@dataclass(frozen=True)
class WatchedDatabase:
    name: str
    where: str  # name@host, without user or password
    overview_url: str
    url: str  # the page shown now, in that database, when it exists there; else its overview
    tag: DatabaseTag | None = None


@dataclass(frozen=True)
class DatabaseTag:
    label: str
    colour: str  # one of env.DATABASE_COLOURS: a class of the stylesheet (no inline styles under the CSP)


def database_tag(name: str) -> DatabaseTag | None:
    found = settings.DATABASE_TAGS.get(name)
    return DatabaseTag(*found) if found else None


def other_databases(request: HttpRequest, alias: str) -> list[WatchedDatabase]:
    """The watched databases besides this one that the user has a role in."""
    if len(settings.WATCHED_DATABASES) < 2 or not hasattr(request, "user"):
        return []
    script_prefix = getattr(request, "dashboard_script_prefix", "/").rstrip("/")
    try:
        theirs = [
            (name, other)
            for name, other in settings.WATCHED_DATABASES.items()
            if other != alias and can_watch(request.user, name)
        ]
    except DatabaseError:
        return []  # the dashboard's own database is down: the 503 page is being shown
    found = []
    for name, other in theirs:
        prefix = f"{script_prefix}{database_path_prefix(name)}"
        page = same_page(request, other)
        found.append(
            WatchedDatabase(
                name=name,
                where=database_short_label(other),
                overview_url=f"{prefix}/",
                url=f"{prefix}{page}" if page else f"{prefix}/",
                tag=database_tag(name),
            )
        )
    return found


# Pages of one row of the dashboard's own tables, which belong to one database: the list instead.
ROW_PAGES = {"audit-entry": "audit", "job": "overview", "cancel-job": "overview"}


def same_page(request: HttpRequest, alias: str) -> str:
    """The path (and query string) of this page in the watched database `alias`, or "" when it has
    none: a queue's pages only if that database has the queue."""
    match = getattr(request, "resolver_match", None)
    if match is None or request.method != "GET":
        return ""
    if match.url_name in ROW_PAGES:
        return "/" + get_resolver().reverse(ROW_PAGES[match.url_name])
    queue_name = match.kwargs.get("queue_name")
    if queue_name is not None and not has_queue(alias, queue_name):
        return ""
    query = request.META.get("QUERY_STRING", "")
    return request.path_info + (f"?{query}" if query else "")


def may_see(request: HttpRequest) -> bool:
    """Whether the signed-in user has a role in the database this page is of (a 403 page for one
    they have none in shows nothing of it)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    try:
        return can_watch(user, getattr(request, "watched_database", "") or watched_name())
    except DatabaseError:
        return False  # the dashboard's own database is down: the 503 page is being shown


def firing_alerts(request: HttpRequest) -> int:
    """How many alerts fire in this database now, for the header (0 on pages of a signed-out user,
    of a database the user may not see, or while the dashboard's own database is down)."""
    if not may_see(request):
        return 0
    try:
        return AlertEpisode.objects.filter(database=watched_name(), state=AlertEpisode.FIRING).count()
    except DatabaseError:
        return 0


def topics_available(request: HttpRequest) -> bool:
    """Whether the header links to the topics page: the database's pgmq has topics (1.11+)."""
    if not may_see(request):
        return False
    try:
        return has_topics()
    except DatabaseError:
        return False  # the pgmq database is down: the page says so, the header need not


def watched_database(request: HttpRequest) -> dict[str, object]:
    """Every page says which database it shows (on call, the wrong tab is a real risk) and, with
    several, offers the others the user has a role in (looked up only if the page shows them)."""
    alias = watched_alias()
    try:
        signed_out = not getattr(request, "user", None) or not request.user.is_authenticated
    except DatabaseError:
        signed_out = True  # the dashboard's own database is down: the 503 page is being shown
    shown = signed_out or may_see(request)
    return {
        "watched_database_name": getattr(request, "watched_database", ""),
        "watched_database_tag": database_tag(getattr(request, "watched_database", "") or watched_name())
        if shown
        else None,
        "watched_database": database_short_label(alias) if shown else "",
        "watched_database_full": database_label(alias) if shown else "",
        "several_databases": len(settings.WATCHED_DATABASES) > 1,
        "other_databases": SimpleLazyObject(lambda: other_databases(request, alias)),
        "firing_alerts": SimpleLazyObject(lambda: firing_alerts(request)),
        "topics_available": SimpleLazyObject(lambda: topics_available(request)),
        "admin_url": admin_url(request),
    }


def admin_url(request: HttpRequest) -> str:
    """Django's admin, which exists once, outside every database's prefix ("" where the project has none)."""
    try:
        path = reverse("admin:index")
    except NoReverseMatch:
        return ""
    return getattr(request, "dashboard_script_prefix", "/") + path.removeprefix(get_script_prefix())


def version(request: HttpRequest) -> dict[str, str]:
    return {"dashboard_version": __version__}


def refresh_interval(request: HttpRequest) -> dict[str, int]:
    return {"refresh_seconds": settings.REFRESH_SECONDS}

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import psycopg
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import get_script_prefix, set_script_prefix

from dashboard import __version__
from dashboard.databases import (
    database_label,
    first_line,
    is_connection_failure,
    took_too_long,
    unreachable_databases,
)
from queues.access import can_watch
from queues.errors import error_answer
from queues.pgmq import PGMQ_SCHEMA, QueueTableMissing
from queues.watched import PGMQ_DATABASE, database_path_prefix, watched_alias, watching

logger = logging.getLogger(__name__)


def pgmq_is_missing() -> bool:
    with connections[watched_alias()].cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NULL", [f"{PGMQ_SCHEMA}.meta"])
        return cursor.fetchone()[0]


def watched_database_problems(alias: str) -> list[str]:
    """Why the watched database `alias` cannot be shown: unreachable, or without pgmq."""
    problems = unreachable_databases([alias])
    if not problems:
        with watching(alias):
            if pgmq_is_missing():
                problems = [f"pgmq is not installed in {settings.DATABASE_SOURCES[alias]} ({database_label(alias)})"]
    return problems


MISSING_RELATION = re.compile(r'relation "(?P<name>[^"]+)" does not exist')


def missing_own_table(error: DatabaseError) -> str | None:
    """The name of the dashboard's own table (users, sessions, audit log, ...) the statement did not
    find, if that is what failed: its schema is not migrated, or not on the search_path (a pooler
    that drops the connection's settings), and no queue has anything to do with it."""
    if not isinstance(error.__cause__, psycopg.errors.UndefinedTable):
        return None
    match = MISSING_RELATION.search(error.__cause__.diag.message_primary or "")
    if match is None:
        return None
    schema, _, table = match["name"].rpartition(".")
    own_tables = {model._meta.db_table for model in apps.get_models(include_auto_created=True) if model._meta.managed}
    return match["name"] if schema == settings.DASHBOARD_SCHEMA or (not schema and table in own_tables) else None


def own_table_missing(request: HttpRequest, table: str) -> HttpResponse:
    logger.error("the dashboard's own table %s is missing", table)
    source = settings.DATABASE_SOURCES[settings.DASHBOARD_DATABASE_ALIAS]
    return error_answer(
        request,
        503,
        f"the dashboard's own table {table} is missing: its schema {settings.DASHBOARD_SCHEMA} in "
        f"{source} is not migrated (run `manage.py migrate`) or not on the "
        "connection's search_path (behind PgBouncer or another pooler, set DASHBOARD_POOLER=on); "
        "nothing was changed",
        "queues/own_table_missing.html",
        {
            "table": table,
            "schema": settings.DASHBOARD_SCHEMA,
            "source": source,
        },
    )


class HealthEndpointMiddleware:
    """GET /healthz: 200 when the dashboard's own database and at least one watched database
    answer with pgmq in it (saying which others do not), else 503 naming what failed; with the
    dashboard's version either way. No login.

    Answered before Django validates the Host header: load balancers, Docker and Kubernetes
    probe by IP address, which is never in DJANGO_ALLOWED_HOSTS.
    """

    path = "/healthz"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != self.path or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        own = unreachable_databases([settings.DASHBOARD_DATABASE_ALIAS])
        watched = {alias: watched_database_problems(alias) for alias in settings.WATCHED_DATABASES.values()}
        problems = [*own, *(problem for found in watched.values() for problem in found if problem not in own)]
        # One watched database away out of several leaves the others to show: still ready.
        if own or all(watched.values()):
            return JsonResponse({"status": "unavailable", "problems": problems, "version": __version__}, status=503)
        if problems:
            return JsonResponse({"status": "degraded", "problems": problems, "version": __version__})
        return JsonResponse({"status": "ok", "version": __version__})


DATABASE_PREFIX = re.compile(r"/db/(?P<name>[^/]+)(?P<rest>/.*)", re.DOTALL)
ENCODED_SLASH = re.compile("%2f", re.IGNORECASE)


def keep_encoded_slashes(request: HttpRequest) -> None:
    """A queue name with a slash, a%2Fb in the path, stays one path segment.

    The server decodes %2F into a slash before Django routes the request, so /queues/a%2Fb/ would
    be /queues/a/b/. Where the server passes the path as it came (gunicorn's RAW_URI), it is
    decoded again here but for %2F, which the queue-name converter then decodes (queues/converters.py).
    """
    raw = request.META.get("RAW_URI", "")
    if not ENCODED_SLASH.search(raw):
        return
    path = "%2F".join(unquote(part) for part in ENCODED_SLASH.split(urlsplit(raw).path))
    script_name = request.META.get("SCRIPT_NAME", "").rstrip("/")
    if script_name and path.startswith(script_name + "/"):
        path = path[len(script_name) :]
    request.path_info = path
    request.path = script_name + path


class WatchedDatabaseMiddleware:
    """/db/<name>/... shows the watched database <name>; any other path the first one, so with a
    single database no address changes. The prefix is taken off before the URL is resolved and
    becomes the script prefix: every link a page makes (reverse, redirects) stays in that database.

    Runs before CommonMiddleware (which reads path_info) and checks, once the user is known, that
    they may see this database (queues.access).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.dashboard_script_prefix = get_script_prefix()
        keep_encoded_slashes(request)
        match = DATABASE_PREFIX.fullmatch(request.path_info)
        if match is None:
            request.watched_database = next(iter(settings.WATCHED_DATABASES))
            alias = PGMQ_DATABASE
        else:
            request.watched_database = match["name"]
            request.path_info = match["rest"]
            alias = settings.WATCHED_DATABASES.get(match["name"])
            if alias is None:
                with watching(PGMQ_DATABASE):
                    return error_answer(request, 404, "There is no watched database of that name.", "queues/404.html")
            if match["rest"] == "/admin" or match["rest"].startswith("/admin/"):
                # One admin site, outside every prefix: under one, a role scoped to that database
                # would count on the dashboard's own tables (users, groups, the audit log).
                with watching(PGMQ_DATABASE):
                    return error_answer(
                        request,
                        404,
                        "Users and roles are managed at /admin/ only, outside every database's address.",
                        "queues/404.html",
                    )
            set_script_prefix(f"{request.dashboard_script_prefix}db/{match['name']}/")
        with watching(alias):
            return self.get_response(request)

    def process_view(self, request: HttpRequest, view: Callable, args: object, kwargs: object) -> HttpResponse | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or can_watch(user, request.watched_database):
            return None
        # Straight after signing in (or at the bare address) someone with a role elsewhere only is
        # taken to a database of theirs; a link to a page of this database says why it is refused.
        theirs = [name for name in settings.WATCHED_DATABASES if can_watch(user, name)]
        if request.path_info == "/" and theirs:
            return redirect(f"{request.dashboard_script_prefix.rstrip('/')}{database_path_prefix(theirs[0])}/")
        return error_answer(
            request, 403, f"Your account has no role in the database {request.watched_database!r}.", "queues/403.html"
        )


class DatabaseUnavailableMiddleware:
    """Turn "the database is not there" into a clear 503 page instead of a server error.

    Sits after AuthenticationMiddleware and loads the user itself: that session lookup is the
    first query of most requests, and an error raised inside another middleware never reaches
    process_exception. Nothing is retried here: the next request reconnects by itself
    (CONN_HEALTH_CHECKS), so the dashboard recovers without a restart once the database is back.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            request.user.is_authenticated  # noqa: B018 (evaluated for its session query)
        except DatabaseError as error:
            if table := missing_own_table(error):
                return own_table_missing(request, table)
            if not is_connection_failure(error):
                raise
            return self.unavailable(request)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, QueueTableMissing):
            return self.queue_gone(request, str(exception))
        if not isinstance(exception, DatabaseError):
            return None
        if is_connection_failure(exception):
            return self.unavailable(request)
        if took_too_long(exception):
            logger.warning("%s took too long: %s", request.path, str(exception).strip())
            timeout_s = settings.STATEMENT_TIMEOUT_MS / 1000
            return error_answer(
                request,
                503,
                f"the query took longer than the statement timeout ({timeout_s:g} s) and "
                "was stopped; try again, or narrow it",
                "queues/slow_query.html",
                {"timeout_s": timeout_s},
            )
        if table := missing_own_table(exception):
            return own_table_missing(request, table)
        if isinstance(exception.__cause__, psycopg.errors.UndefinedTable):
            if pgmq_is_missing():
                database = database_label(watched_alias())
                return error_answer(
                    request,
                    503,
                    f"pgmq is not installed in {database}",
                    "queues/pgmq_missing.html",
                    {"database": database},
                )
            # A queue's table went between finding the queue and reading it: dropped meanwhile.
            return self.queue_gone(request, first_line(exception))
        if isinstance(exception.__cause__, psycopg.errors.InsufficientPrivilege):
            # The dashboard's user may act, but the database role it connects as may not (a read-only role).
            database = database_label(watched_alias())
            return error_answer(
                request,
                403,
                f"the database {database} refused it: {first_line(exception)}; nothing was changed",
                "queues/403.html",
                {"database_refused": first_line(exception), "database": database},
            )
        return None

    def queue_gone(self, request: HttpRequest, detail: str) -> HttpResponse:
        return error_answer(
            request,
            404,
            f"This queue's table is gone: the queue was probably dropped a moment ago ({detail}).",
            "queues/404.html",
        )

    def unavailable(self, request: HttpRequest) -> HttpResponse:
        problems = unreachable_databases([settings.DASHBOARD_DATABASE_ALIAS, watched_alias()]) or [
            "the database connection was lost; retrying on the next request"
        ]
        logger.warning("database unavailable: %s", "; ".join(problems))
        # A page opened during the outage loads itself again until the database is back; only a
        # plain GET, so a form is never sent twice (htmx refreshes retry on their own timer).
        retries = request.method == "GET" and not getattr(request, "htmx", False)
        response = error_answer(
            request,
            503,
            "the database is not reachable: " + "; ".join(problems),
            "queues/503.html",
            {"problems": problems, "retry_seconds": settings.REFRESH_SECONDS if retries else None},
            problems=problems,
        )
        response["Retry-After"] = str(settings.REFRESH_SECONDS)
        return response


class NotCachedMiddleware:
    """Pages, API answers and downloads carry payloads and who did what: never kept by a browser's
    or a proxy's cache (static files, answered earlier by whitenoise, keep theirs)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Cache-Control" not in response:
            response["Cache-Control"] = "no-store, private"
        return response

"""Who may see and do what in which watched database.

The roles are Django groups (Viewer, Operator, Admin: see apps.py). With several databases each
role also exists per database, as a group named "<database>: <role>" ("production: Operator"):
such a group counts only while that database is being watched, a plain role group counts in
all of them, and a scoped group only ever grants acting in its database (DATABASE_PERMISSIONS),
never a permission on the dashboard's own tables (users, groups, tokens, the audit log, jobs,
sign-in attempts), whatever was given to it by hand. A user whose only groups are scoped to other
databases does not see this one at all.

DASHBOARD_READ_ONLY turns every write off for everyone, superusers included: `may` answers no for
the writing permissions, `guarded_routes` wraps the app's routes so no unsafe request reaches a
view, and the job runner claims nothing. Django's admin (logins, groups, API tokens) stays.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.context_processors import PermLookupDict, PermWrapper
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern

from queues.watched import watched_name

# The permissions the roles grant (codenames of the app "queues": see apps.py).
OPERATE = "queues.operate_messages"
ADMINISTER = "queues.administer_queues"

SCOPE_SEPARATOR = ": "
# The permissions a group scoped to one database can grant there (codenames of the app "queues").
DATABASE_PERMISSIONS = frozenset({"operate_messages", "administer_queues", "view_unredacted"})


# The permissions that change something in a queue (or start a job that will): off when read-only.
WRITING_PERMISSIONS = frozenset({OPERATE, ADMINISTER})
READ_ONLY_REASON = "the dashboard is read-only (DASHBOARD_READ_ONLY): nothing can be changed here, by anyone"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only() -> bool:
    return getattr(settings, "READ_ONLY", False)


def may(user: AbstractBaseUser, permission: str) -> bool:
    """Whether `user` may do what `permission` allows now: never a write while read-only."""
    if permission in WRITING_PERMISSIONS and read_only():
        return False
    return bool(user and user.has_perm(permission))


class _ReadOnlyPermLookup(PermLookupDict):
    def __getitem__(self, perm_name: str) -> bool:
        return may(self.user, f"{self.app_label}.{perm_name}")


class ReadOnlyPerms(PermWrapper):
    """Templates' `perms` while read-only: `perms.queues.operate_messages` asks `may`, so whatever a
    template offers by permission is hidden from superusers too."""

    def __getitem__(self, app_label: str) -> PermLookupDict:
        return _ReadOnlyPermLookup(self.user, app_label)

    def __contains__(self, perm_name: str) -> bool:
        if "." not in perm_name:
            return self[perm_name]
        return may(self.user, perm_name)


def read_only_context(request: HttpRequest) -> dict[str, object]:
    """For templates: `read_only` (the header says so) and, while it is, `perms` that refuse writes."""
    if not read_only():
        return {"read_only": False}
    return {"read_only": True, "perms": ReadOnlyPerms(getattr(request, "user", None))}


def _guarded(view: Callable, *, api: bool) -> Callable:
    if not api and getattr(view, "login_required", True):
        # Where a project mounts the app without LoginRequiredMiddleware, its pages still need a sign-in.
        view = login_required(view)

    @functools.wraps(view)
    def refusing_writes(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.method not in SAFE_METHODS and read_only():
            if api:
                return JsonResponse({"detail": READ_ONLY_REASON}, status=403)
            raise PermissionDenied(READ_ONLY_REASON)
        return view(request, *args, **kwargs)

    return refusing_writes


def guarded_routes(urlpatterns: list, *, api: bool = False) -> list:
    """The app's routes as this layer guards them: a page needs a sign-in (the API's own
    authentication answers for it), and every unsafe request (POST, PUT, PATCH, DELETE) is refused
    while read-only, so a write path added later is refused without being listed anywhere. An
    included URL conf guards its own routes."""
    for entry in urlpatterns:
        if isinstance(entry, URLPattern):
            entry.callback = _guarded(entry.callback, api=api)
    return urlpatterns


def scoped_group_name(database: str, role: str) -> str:
    return f"{database}{SCOPE_SEPARATOR}{role}"


def _group_names(user: AbstractBaseUser) -> list[str]:
    # Looked up once per request (the user object lives as long as the request).
    if not hasattr(user, "_group_names"):
        user._group_names = list(user.groups.values_list("name", flat=True))
    return user._group_names


def can_watch(user: AbstractBaseUser, database: str) -> bool:
    """Whether `user` may see the watched database named `database` at all."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    names = _group_names(user)
    scoped = [name for name in names if SCOPE_SEPARATOR in name]
    if len(scoped) < len(names):
        return True
    # No group at all sees nothing: taking away someone's last scoped role must not widen what they see.
    return any(name.startswith(database + SCOPE_SEPARATOR) for name in scoped)


class DatabaseScopedPermissions:
    """Mixed into ModelBackend (and the proxy sign-in backend): a group's permissions count in the
    database being watched when the group is plain or scoped to it. ModelBackend keeps its cache
    on the user object; here it is kept per database, so switching cannot carry permissions over."""

    def _get_group_permissions(self, user_obj: AbstractBaseUser) -> QuerySet[Permission]:
        plain = user_obj.groups.exclude(name__contains=SCOPE_SEPARATOR)
        scoped = user_obj.groups.filter(name__startswith=watched_name() + SCOPE_SEPARATOR)
        return Permission.objects.filter(
            Q(group__in=plain)
            | Q(group__in=scoped, content_type__app_label="queues", codename__in=DATABASE_PERMISSIONS)
        ).distinct()

    def get_all_permissions(self, user_obj: AbstractBaseUser, obj: object = None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        by_database = user_obj.__dict__.setdefault("_perm_cache_by_database", {})
        database = watched_name()
        if database not in by_database:
            for attribute in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
                user_obj.__dict__.pop(attribute, None)
            by_database[database] = super().get_all_permissions(user_obj, obj)
        return by_database[database]


class DatabaseScopedModelBackend(DatabaseScopedPermissions, ModelBackend):
    """Django's sign-in by username and password, with permissions per watched database."""

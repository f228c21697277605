"""Changes of who may do what, in the audit log: an account's groups, permissions, superuser, staff
and active flags and password, a group's permissions, accounts created and deleted, API tokens
created and deleted. Taken from Django's signals, so every way in (the admin, `manage.py add_user`,
a shell) is recorded, in the transaction of the change itself.

Such a record belongs to no watched database (`database` and `queue_name` empty) and shows in the
audit log of every one. Who made the change comes from the request being served (ActingUserMiddleware),
else it is "(command line)".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest, HttpResponse

CHANGE_ACCOUNT, CREATE_ACCOUNT, DELETE_ACCOUNT = "change_account", "create_account", "delete_account"
CHANGE_GROUP = "change_group"
CREATE_TOKEN, DELETE_TOKEN = "create_token", "delete_token"
FLAGS = ("is_superuser", "is_staff", "is_active")
NOBODY = "(command line)"

_actor: ContextVar[AbstractBaseUser | None] = ContextVar("acting_user", default=None)
# While one form is saved (the admin's user page), its changes are kept here and recorded once.
_pending: ContextVar[dict[tuple[str, int], dict] | None] = ContextVar("pending_account_changes", default=None)


class ActingUserMiddleware:
    """Remembers who is signed in for the length of the request, for the records made meanwhile."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _actor.set(getattr(request, "user", None))
        try:
            return self.get_response(request)
        finally:
            _actor.reset(token)


@contextmanager
def one_record() -> Iterator[None]:
    """Record what changes inside as one entry per account or group (a form changes several things)."""
    token = _pending.set({})
    try:
        yield
        for (kind, _pk), change in _pending.get().items():
            _write(kind, change["subject"], change["changes"])
    finally:
        _pending.reset(token)


def _write(action: str, subject: dict, changes: dict) -> None:
    from queues.models import AuditEntry

    actor = _actor.get()
    signed_in = actor is not None and actor.is_authenticated
    AuditEntry.objects.create(
        user_id=actor.pk if signed_in else None,
        username=actor.get_username() if signed_in else NOBODY,
        action=action,
        database="",
        queue_name="",
        target=subject,
        requested=1,
        affected=1,
        outcome=AuditEntry.DONE,
        details={"changes": changes},
    )


def record(action: str, subject: dict, changes: dict) -> None:
    pending = _pending.get()
    if pending is None or action not in (CHANGE_ACCOUNT, CHANGE_GROUP):
        _write(action, subject, changes)
        return
    key = (action, subject.get("account_id") or subject.get("group_id"))
    kept = pending.setdefault(key, {"subject": subject, "changes": {}})
    for name, (before, after) in changes.items():
        earlier = kept["changes"].get(name)
        kept["changes"][name] = (earlier[0] if earlier else before, after)


def account(user: AbstractBaseUser) -> dict:
    return {"account": user.get_username(), "account_id": user.pk}


def _names(relation) -> list[str]:
    if relation.model is Group:
        return sorted(relation.values_list("name", flat=True))
    return sorted(
        f"{app_label}.{codename}" for app_label, codename in relation.values_list("content_type__app_label", "codename")
    )


# Accounts: flags and password compared with what the database held before the save.


def _remember_before(sender, instance: User, **kwargs) -> None:
    instance._audit_before = (
        User.objects.filter(pk=instance.pk).values(*FLAGS, "password").first() if instance.pk else None
    )


def _record_saved(sender, instance: User, created: bool, **kwargs) -> None:
    if created:
        record(CREATE_ACCOUNT, account(instance), {flag: (None, getattr(instance, flag)) for flag in FLAGS})
        return
    before = getattr(instance, "_audit_before", None)
    if before is None:
        return
    changes = {
        flag: (before[flag], getattr(instance, flag)) for flag in FLAGS if before[flag] != getattr(instance, flag)
    }
    # Django re-hashing the same password at sign-in (stronger settings) saves only the password,
    # with the raw one already forgotten: not a change of password.
    rehashed = kwargs.get("update_fields") == {"password"} and instance._password is None
    if before["password"] != instance.password and not rehashed:
        changes["password"] = ("(set)", "(changed)")  # never the hash
    if changes:
        record(CHANGE_ACCOUNT, account(instance), changes)


def _record_deleted(sender, instance: User, **kwargs) -> None:
    record(DELETE_ACCOUNT, account(instance), {})


# Groups of an account, permissions of an account or of a group: the whole set before and after.


def _record_relation(field: str, action_for: Callable[[object], tuple[str, dict]]):
    def changed(sender, instance, action: str, reverse: bool, model, pk_set, **kwargs) -> None:
        # Reverse: group.user_set.add(user) and the like; the accounts (or groups) touched are `model`'s.
        if not reverse:
            targets = [instance]
        elif action == "pre_clear":
            targets = instance._audit_clear_targets = list(model.objects.filter(**{field: instance}))
        elif action == "post_clear":
            targets = instance.__dict__.pop("_audit_clear_targets", [])
        else:
            targets = list(model.objects.filter(pk__in=pk_set or ()))
        snapshots = instance.__dict__.setdefault("_audit_relations", {})
        for target in targets:
            if action.startswith("pre_"):
                snapshots[(field, target.pk)] = _names(getattr(target, field))
            elif (before := snapshots.pop((field, target.pk), None)) is not None:
                after = _names(getattr(target, field))
                if before != after:
                    kind, subject = action_for(target)
                    record(kind, subject, {field: (before, after)})

    return changed


def _group_subject(group: Group) -> tuple[str, dict]:
    return CHANGE_GROUP, {"group": group.name, "group_id": group.pk}


def _account_subject(user: User) -> tuple[str, dict]:
    return CHANGE_ACCOUNT, account(user)


def _token_subject(token) -> dict:
    return {**account(token.user), "token": f"{token.prefix}…", "token_name": token.name}


def _record_token_saved(sender, instance, created: bool, **kwargs) -> None:
    if created:
        record(CREATE_TOKEN, _token_subject(instance), {})


def _record_token_deleted(sender, instance, **kwargs) -> None:
    record(DELETE_TOKEN, _token_subject(instance), {})


def connect() -> None:
    from queues.models import ApiToken

    post_save.connect(_record_token_saved, sender=ApiToken, dispatch_uid="audit-token-saved")
    post_delete.connect(_record_token_deleted, sender=ApiToken, dispatch_uid="audit-token-deleted")
    pre_save.connect(_remember_before, sender=User, dispatch_uid="audit-account-before")
    post_save.connect(_record_saved, sender=User, dispatch_uid="audit-account-saved")
    post_delete.connect(_record_deleted, sender=User, dispatch_uid="audit-account-deleted")
    m2m_changed.connect(
        _record_relation("groups", _account_subject),
        sender=User.groups.through,
        dispatch_uid="audit-account-groups",
        weak=False,
    )
    m2m_changed.connect(
        _record_relation("user_permissions", _account_subject),
        sender=User.user_permissions.through,
        dispatch_uid="audit-account-permissions",
        weak=False,
    )
    m2m_changed.connect(
        _record_relation("permissions", _group_subject),
        sender=Group.permissions.through,
        dispatch_uid="audit-group-permissions",
        weak=False,
    )

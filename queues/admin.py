"""Django's admin: users and their roles are managed here; the audit log and bulk jobs are shown
read-only (the database refuses changes to the log anyway); deleting sign-in failures lifts the
wait they impose.

Only a superuser makes superusers, gives raw permissions or changes what a group grants. Anyone
else with the Admin role gives roles (and roles scoped to one database) that hold nothing beyond
what it holds itself, in every watched database, and changes only accounts that hold no more than
it does: a password reset is a way into an account.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import AbstractBaseUser, Group, User
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Left
from django.utils.html import format_html

from queues import account_audit, redaction
from queues.access import DATABASE_PERMISSIONS, SCOPE_SEPARATOR
from queues.jsontext import pretty
from queues.models import ApiToken, AuditEntry, BulkJob, SignInFailures
from queues.tokens import issue_token
from queues.watched import watching

# A deleted payload in the audit log can be 16 MB: the admin shows its beginning.
SHOWN_JSON_CHARS = 100_000


def permissions_by_database(user: AbstractBaseUser) -> dict[str, set[str]]:
    """What `user` may do in each watched database (its groups scoped to a database count there)."""
    found = {}
    for name, alias in settings.WATCHED_DATABASES.items():
        with watching(alias):
            found[name] = set(user.get_all_permissions())
    return found


def group_grants(group: Group, database: str) -> set[str]:
    """What a member of `group` gets in `database` from it (see queues/access.py)."""
    dotted = {
        f"{app_label}.{codename}"
        for app_label, codename in group.permissions.values_list("content_type__app_label", "codename")
    }
    if SCOPE_SEPARATOR not in group.name:
        return dotted
    if not group.name.startswith(database + SCOPE_SEPARATOR):
        return set()
    return {name for name in dotted if name.removeprefix("queues.") in DATABASE_PERMISSIONS}


def within_reach(actor: AbstractBaseUser, held: dict[str, set[str]], *, superuser: bool = False) -> bool:
    """Whether `actor` holds, in every database, everything an account (or a group) with `held` does."""
    if actor.is_superuser:
        return True
    if superuser:
        return False
    own = permissions_by_database(actor)
    return all(permissions <= own[database] for database, permissions in held.items())


class RecordedOnce:
    """A form's changes (flags, groups, permissions) go into the audit log as one record, in the
    transaction that makes them."""

    def changeform_view(self, request, *args, **kwargs):
        with transaction.atomic(), account_audit.one_record():
            return super().changeform_view(request, *args, **kwargs)


class DashboardUserAdmin(RecordedOnce, UserAdmin):
    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        return [
            (
                title,
                {
                    **options,
                    "fields": [
                        field for field in options["fields"] if field not in ("is_superuser", "user_permissions")
                    ],
                },
            )
            for title, options in fieldsets
        ]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups" and not request.user.is_superuser:
            kwargs["queryset"] = Group.objects.filter(pk__in=self._grantable_groups(request.user))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    @staticmethod
    def _grantable_groups(actor: AbstractBaseUser) -> list[int]:
        own = permissions_by_database(actor)
        return [
            group.pk
            for group in Group.objects.prefetch_related("permissions")
            if all(group_grants(group, database) <= permissions for database, permissions in own.items())
        ]

    def _may_manage(self, request, obj: User | None) -> bool:
        return obj is None or within_reach(request.user, permissions_by_database(obj), superuser=obj.is_superuser)

    def has_change_permission(self, request, obj=None) -> bool:
        return super().has_change_permission(request, obj) and self._may_manage(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return super().has_delete_permission(request, obj) and self._may_manage(request, obj)


class SuperuserChangesGroupAdmin(RecordedOnce, GroupAdmin):
    """Admins see the roles; what a group grants is changed by superusers only."""

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made here (the key shown once, in the message after saving) and deleted; never
    changed. A token acts as its account, so one is made only for an account within reach."""

    list_display = ["prefix", "user", "name", "created_at", "last_used_at"]
    fields = ["user", "name"]
    search_fields = ["user__username", "name", "prefix"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return super().has_view_permission(request, obj) or super().has_add_permission(request)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = User.objects.filter(
                pk__in=[
                    user.pk
                    for user in User.objects.filter(is_superuser=False)
                    if within_reach(request.user, permissions_by_database(user))
                ]
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        token, key = issue_token(obj.user, name=obj.name)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = token.pk, token.prefix, token.key_hash, token.created_at
        messages.warning(request, f"The token's key, shown this once (only a hash of it is kept): {key}")

    def has_delete_permission(self, request, obj=None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and (
            obj is None
            or within_reach(request.user, permissions_by_database(obj.user), superuser=obj.user.is_superuser)
        )


admin.site.unregister(User)
admin.site.register(User, DashboardUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, SuperuserChangesGroupAdmin)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def shown_json(label: str, annotation: str):
    def show(self, entry: AuditEntry) -> str:
        text = getattr(entry, annotation) or ""
        return format_html("<pre>{}</pre>", text + ("…" if len(text) >= SHOWN_JSON_CHARS else ""))

    show.short_description = label
    return show


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The payloads a record keeps (a sent message, deleted ones) redacted as on /audit/, and cut."""

    list_display = ["id", "at", "username", "action", "queue_name", "requested", "affected", "already_gone", "outcome"]
    list_filter = ["action", "outcome"]
    search_fields = ["queue_name", "username"]
    exclude = ["target", "details", "deleted_payloads"]
    readonly_fields = ["target_shown", "details_shown", "deleted_payloads_shown"]

    def get_queryset(self, request):
        redacted = redaction.applies_to(request.user)

        def cut(column, *, many: bool = False):
            shown = redaction.RedactedRecord(column, many=many) if redacted else column
            return Left(pretty(shown), SHOWN_JSON_CHARS, output_field=TextField())

        return (
            super()
            .get_queryset(request)
            .defer("target", "details", "deleted_payloads")
            .annotate(
                target_text=cut("target"),
                details_text=Left(pretty("details"), SHOWN_JSON_CHARS),
                deleted_payloads_text=cut("deleted_payloads", many=True),
            )
        )

    target_shown = shown_json("target", "target_text")
    details_shown = shown_json("details", "details_text")
    deleted_payloads_shown = shown_json("deleted payloads", "deleted_payloads_text")


@admin.register(BulkJob)
class BulkJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "username", "action", "queue_name", "status", "affected", "already_gone"]
    list_filter = ["status", "action"]
    exclude = ["deleted_payloads"]


@admin.register(SignInFailures)
class SignInFailuresAdmin(admin.ModelAdmin):
    list_display = ["address", "username", "failures", "last_failed_at"]
    search_fields = ["address", "username"]
    ordering = ["-last_failed_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

"""Django's admin: users and roles (the Viewer, Operator and Admin groups) are managed here; the
audit log and bulk jobs are shown read-only (the database refuses changes to the log anyway);
deleting sign-in failures lifts the wait they impose."""
from django.contrib import admin

from queues.models import AuditEntry, BulkJob, SignInFailures


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "at", "username", "action", "queue_name", "requested", "affected", "already_gone", "outcome"]
    list_filter = ["action", "outcome"]
    search_fields = ["queue_name", "username"]


@admin.register(BulkJob)
class BulkJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "username", "action", "queue_name", "status", "affected", "already_gone"]
    list_filter = ["status", "action"]


@admin.register(SignInFailures)
class SignInFailuresAdmin(admin.ModelAdmin):
    list_display = ["address", "username", "failures", "last_failed_at"]
    search_fields = ["address", "username"]
    ordering = ["-last_failed_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

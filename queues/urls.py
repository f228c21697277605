from django.urls import path, register_converter

from queues.converters import QueueNameConverter
from queues.views import actions, alerts, audit, exports, metrics, pages

register_converter(QueueNameConverter, "queue")

urlpatterns = [
    # Reading
    path("", pages.overview_page, name="overview"),
    path("queues/<queue:queue_name>/", pages.queue_page, name="queue"),
    path("queues/<queue:queue_name>/poison/", pages.queue_poison, name="queue-poison"),
    path("queues/<queue:queue_name>/archive-history/", pages.queue_archive_history, name="queue-archive-history"),
    path("queues/<queue:queue_name>/diagnostics/", pages.queue_diagnostics, name="queue-diagnostics"),
    path("queues/<queue:queue_name>/alerts/", alerts.queue_alerts, name="queue-alerts"),
    path("queues/<queue:queue_name>/messages/", pages.message_list, name="messages"),
    path("queues/<queue:queue_name>/messages/<int:msg_id>/", pages.message_detail, name="message"),
    path("queues/<queue:queue_name>/messages/<int:msg_id>/raw/", pages.message_raw, name="message-raw"),
    path("queues/<queue:queue_name>/messages/export.csv", exports.message_export, {"export_format": "csv"},
         name="messages-export-csv"),
    path("queues/<queue:queue_name>/messages/export.ndjson", exports.message_export, {"export_format": "ndjson"},
         name="messages-export-ndjson"),
    # Acting
    path("new-queue/", actions.create_queue, name="create-queue"),
    path("queues/<queue:queue_name>/act/", actions.message_action, name="message-action"),
    path("queues/<queue:queue_name>/send/", actions.send_message, name="send-message"),
    path("queues/<queue:queue_name>/purge/", actions.purge_queue, name="purge-queue"),
    path("queues/<queue:queue_name>/drop/", actions.drop_queue, name="drop-queue"),
    path("queues/<queue:queue_name>/messages/<int:msg_id>/edit/", actions.edit_and_resend, name="edit-message"),
    path("jobs/<int:job_id>/cancel/", actions.cancel_job, name="cancel-job"),
    # Audit and jobs
    path("audit/", audit.audit_log, name="audit"),
    path("audit/export.csv", audit.audit_csv, name="audit-csv"),
    path("audit/<int:entry_id>/", audit.audit_entry, name="audit-entry"),
    path("jobs/<int:job_id>/", audit.job_detail, name="job"),
    # Alerts (evaluated and notified by the sampler)
    path("alerts/", alerts.alerts_page, name="alerts"),
    # Prometheus (off unless DASHBOARD_METRICS_TOKEN is set)
    path("metrics", metrics.metrics, name="metrics"),
]

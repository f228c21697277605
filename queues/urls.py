from django.urls import include, path, register_converter

from queues.access import guarded_routes
from queues.converters import QueueNameConverter
from queues.views import actions, alerts, audit, exports, jobs, metrics, reading, topics

register_converter(QueueNameConverter, "queue")

urlpatterns = [
    # The API inside the app's address, so that one include() mounts both.
    path("api/v1/", include("queues.api.urls")),
    *guarded_routes(
        [
            # Reading
            path("", reading.overview_page, name="overview"),
            path("queues/<queue:queue_name>/", reading.queue_page, name="queue"),
            path("queues/<queue:queue_name>/poison/", reading.queue_poison, name="queue-poison"),
            path(
                "queues/<queue:queue_name>/archive-history/",
                reading.queue_archive_history,
                name="queue-archive-history",
            ),
            path("queues/<queue:queue_name>/diagnostics/", reading.queue_diagnostics, name="queue-diagnostics"),
            path("queues/<queue:queue_name>/alerts/", alerts.queue_alerts, name="queue-alerts"),
            path("queues/<queue:queue_name>/messages/", reading.message_list, name="messages"),
            path("queues/<queue:queue_name>/messages/<int:msg_id>/", reading.message_detail, name="message"),
            path("queues/<queue:queue_name>/messages/<int:msg_id>/raw/", reading.message_raw, name="message-raw"),
            path(
                "queues/<queue:queue_name>/messages/<int:msg_id>/copies/", reading.message_copies, name="message-copies"
            ),
            path("topics/", topics.topics_page, name="topics"),
            path(
                "queues/<queue:queue_name>/messages/export.csv",
                exports.message_export,
                {"export_format": "csv"},
                name="messages-export-csv",
            ),
            path(
                "queues/<queue:queue_name>/messages/export.ndjson",
                exports.message_export,
                {"export_format": "ndjson"},
                name="messages-export-ndjson",
            ),
            # Acting
            path("new-queue/", actions.create_queue, name="create-queue"),
            path("queues/<queue:queue_name>/act/", actions.message_action, name="message-action"),
            path("queues/<queue:queue_name>/send/", actions.send_message, name="send-message"),
            path("queues/<queue:queue_name>/purge/", actions.purge_queue, name="purge-queue"),
            path("queues/<queue:queue_name>/drop/", actions.drop_queue, name="drop-queue"),
            path("queues/<queue:queue_name>/messages/<int:msg_id>/edit/", actions.edit_and_resend, name="edit-message"),
            path("jobs/<int:job_id>/cancel/", jobs.cancel_job, name="cancel-job"),
            # Audit and jobs
            path("audit/", audit.audit_log, name="audit"),
            path("audit/export.csv", audit.audit_csv, name="audit-csv"),
            path("audit/<int:entry_id>/", audit.audit_entry, name="audit-entry"),
            path("jobs/<int:job_id>/", jobs.job_detail, name="job"),
            # Alerts (evaluated and notified by the sampler)
            path("alerts/", alerts.alerts_page, name="alerts"),
            # Prometheus (off unless DASHBOARD_METRICS_TOKEN is set)
            path("metrics", metrics.metrics, name="metrics"),
        ]
    ),
]

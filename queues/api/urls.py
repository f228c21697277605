from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

import queues.urls  # noqa: F401  registers the "queue" converter (any queue name as one path segment)
from queues.access import guarded_routes
from queues.api import views

urlpatterns = guarded_routes(
    [
        path("schema/", login_not_required(SpectacularAPIView.as_view()), name="api-schema"),
        path("queues/", views.queue_list, name="api-queues"),
        path("queues/<queue:queue_name>/", views.queue_detail, name="api-queue"),
        path("queues/<queue:queue_name>/history/", views.queue_history, name="api-queue-history"),
        path("queues/<queue:queue_name>/messages/", views.message_list, name="api-messages"),
        path("queues/<queue:queue_name>/messages/<int:msg_id>/", views.message_detail, name="api-message"),
        path("queues/<queue:queue_name>/actions/", views.message_action, name="api-message-action"),
        path("queues/<queue:queue_name>/send/", views.send_message, name="api-send"),
        path("queues/<queue:queue_name>/messages/<int:msg_id>/resend/", views.resend_message, name="api-resend"),
        path("queues/<queue:queue_name>/purge/", views.purge_queue, name="api-purge"),
        path("queues/<queue:queue_name>/drop/", views.drop_queue, name="api-drop"),
        path("queues/<queue:queue_name>/jobs/", views.start_job, name="api-jobs"),
        path("queues/<queue:queue_name>/jobs/plan/", views.plan_job, name="api-job-plan"),
        path("jobs/<int:job_id>/", views.job_detail, name="api-job"),
        path("jobs/<int:job_id>/cancel/", views.cancel_job, name="api-job-cancel"),
    ],
    api=True,
)

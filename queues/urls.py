from django.urls import path, register_converter

from queues import views
from queues.converters import QueueNameConverter

register_converter(QueueNameConverter, "queue")

urlpatterns = [
    path("", views.overview_page, name="overview"),
    path("queues/<queue:queue_name>/", views.queue_page, name="queue"),
    path("queues/<queue:queue_name>/poison/", views.queue_poison, name="queue-poison"),
    path("queues/<queue:queue_name>/archive-history/", views.queue_archive_history, name="queue-archive-history"),
    path("queues/<queue:queue_name>/diagnostics/", views.queue_diagnostics, name="queue-diagnostics"),
    path("queues/<queue:queue_name>/messages/", views.message_list, name="messages"),
    path("queues/<queue:queue_name>/messages/<int:msg_id>/", views.message_detail, name="message"),
    path("queues/<queue:queue_name>/messages/<int:msg_id>/raw/", views.message_raw, name="message-raw"),
]

from django.urls import path, register_converter

from queues import views
from queues.converters import QueueNameConverter

register_converter(QueueNameConverter, "queue")

urlpatterns = [
    path("", views.overview, name="overview"),
    path("queues/<queue:queue_name>/", views.queue_detail, name="queue"),
]

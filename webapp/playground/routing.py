from __future__ import annotations

from django.urls import path

from webapp.jobs.consumers import JobConsumer
from webapp.playground.consumers import ConversationConsumer

websocket_urlpatterns = [
    path("ws/conversations/<int:conversation_id>/", ConversationConsumer.as_asgi()),
    path("ws/jobs/", JobConsumer.as_asgi()),
]

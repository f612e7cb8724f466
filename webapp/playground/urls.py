from __future__ import annotations

from django.urls import path

from webapp.playground import views

app_name = "playground"

urlpatterns = [
    path("", views.index_view, name="index"),
    path("<int:conversation_id>/", views.chat_view, name="chat"),
]

"""Top-level URL routing."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from webapp.api.api import api
from webapp.frontend import app_view, shared_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="app", permanent=False), name="root"),
    path("app/", app_view, name="app"),
    path("app/shared/<str:token>", shared_view, name="app_shared"),
    re_path(r"^app/(?P<path>.+)$", app_view, name="app_page"),
    path("accounts/", include("webapp.accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # The OpenAI-compatible endpoints (scripts, the openai client): webapp/api/openai.py.
    path("v1/", include("webapp.api.openai")),
]

if settings.DEBUG:
    # servestatic serves static files in front of Django; with DEBUG it finds them without
    # collectstatic, and Django's own view covers what it misses.
    urlpatterns += staticfiles_urlpatterns()

"""Top-level URL routing."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from webapp.api.api import api
from webapp.frontend import app_view

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="app", permanent=False), name="root"),
    path("app/", app_view, name="app"),
    re_path(r"^app/(?P<path>.+)$", app_view, name="app_page"),
    path("accounts/", include("webapp.accounts.urls")),
    path("playground/", include("webapp.playground.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
]

if settings.DEBUG:
    # The ASGI server (uvicorn, `make demo`) does not serve static files itself; with DEBUG,
    # Django does (staticfiles' finders: no collectstatic needed). Production serves STATIC_ROOT.
    urlpatterns += staticfiles_urlpatterns()

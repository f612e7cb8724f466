"""Liveness (``/healthz``), readiness (``/readyz``) and Prometheus metrics (``/metrics``).

They are served by ``middleware.probe_middleware`` ahead of host validation and the HTTPS
redirect: orchestrators and Prometheus call a pod by its address, over plain HTTP.
"""

from __future__ import annotations

import hmac

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from webapp.operations import health, metrics

READ_METHODS = ("GET", "HEAD")


async def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving; no dependency is consulted (a restart would not fix one)."""
    if request.method not in READ_METHODS:
        return HttpResponseNotAllowed(READ_METHODS)
    return JsonResponse({"ok": True})


async def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every dependency answers and a worker is live, else 503; the checks say which."""
    if request.method not in READ_METHODS:
        return HttpResponseNotAllowed(READ_METHODS)
    report = await health.readiness()
    return JsonResponse(report, status=200 if report["ready"] else 503)


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text (or OpenMetrics); with ``STEERLAB_METRICS_TOKEN`` set, only for its bearer."""
    if request.method not in READ_METHODS:
        return HttpResponseNotAllowed(READ_METHODS)
    token = settings.STEERLAB_METRICS_TOKEN
    if token and not _bearer_is(request, token):
        return HttpResponse(status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body, content_type = await sync_to_async(metrics.render)(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)


def _bearer_is(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


PROBES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_view}

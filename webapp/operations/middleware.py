"""Middleware of the operations app, both first in ``MIDDLEWARE``.

``request_id_middleware`` gives every request an id (the caller's ``X-Request-ID`` when it is a
plain token, else a new one), puts it on every log record of the request, echoes it in the
response and writes the request's access log line. ``probe_middleware`` answers ``/healthz``,
``/readyz`` and ``/metrics`` before host validation, sessions and the HTTPS redirect:
orchestrators and Prometheus call a pod by its address over plain HTTP, and none of these answers
depends on the host it was asked under.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware
from django.utils.functional import empty

from webapp.operations.logs import loggable_path, request_id, request_id_from
from webapp.operations.views import PROBES

HEADER = "X-Request-ID"
access_log = logging.getLogger("webapp.access")


@sync_and_async_middleware
def request_id_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            token, started = _begin(request)
            try:
                response: HttpResponse = await get_response(request)
            finally:
                request_id.reset(token)
            return _end(request, response, started)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        token, started = _begin(request)
        try:
            response: HttpResponse = get_response(request)
        finally:
            request_id.reset(token)
        return _end(request, response, started)

    return middleware


def _begin(request: HttpRequest) -> tuple[Token[str | None], float]:
    request.request_id = request_id_from(request.headers.get(HEADER))  # type: ignore[attr-defined]
    return request_id.set(request.request_id), time.monotonic()  # type: ignore[attr-defined]


def _end(request: HttpRequest, response: HttpResponse, started: float) -> HttpResponse:
    """Echo the request id and write the access log line (uvicorn's own runs with --no-access-log:
    it has no request id and would write share tokens)."""
    rid = request.request_id  # type: ignore[attr-defined]
    response[HEADER] = rid
    access_log.log(
        logging.DEBUG if request.path in PROBES else logging.INFO,  # probes come every few seconds
        "http.request",
        extra={
            "request_id": rid,
            "method": request.method,
            "path": loggable_path(request.path),
            "status": response.status_code,
            "ms": round((time.monotonic() - started) * 1000, 1),  # to the response's start (streams go on)
            "user_id": _user_id(request),
        },
    )
    return response


def _user_id(request: HttpRequest) -> int | None:
    """Who made the request, if the request already found out (never a database query here: the
    session user is loaded lazily, and this may run on the event loop)."""
    user = getattr(request, "user", None)
    user = getattr(user, "_wrapped", user)
    if user is None or user is empty or not getattr(user, "is_authenticated", False):
        user = getattr(request, "auth", None)  # django-ninja's token authentication
    pk = getattr(user, "pk", None)
    return pk if isinstance(pk, int) else None


@sync_and_async_middleware
def probe_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            probe = PROBES.get(request.path)
            if probe is not None:
                return await probe(request)
            response: Awaitable[HttpResponse] = get_response(request)
            return await response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path)
        if probe is not None:
            return async_to_sync(probe)(request)
        response: HttpResponse = get_response(request)
        return response

    return middleware

"""Middleware of the operations app, both first in ``MIDDLEWARE``.

``request_id_middleware`` gives every request an id (the caller's ``X-Request-ID`` when it is a
plain token, else a new one), puts it on every log record of the request and echoes it in the
response. ``probe_middleware`` answers ``/healthz``, ``/readyz`` and ``/metrics`` before host
validation, sessions and the HTTPS redirect: orchestrators and Prometheus call a pod by its
address over plain HTTP, and none of these answers depends on the host it was asked under.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

from webapp.operations.logs import request_id, request_id_from
from webapp.operations.views import PROBES

HEADER = "X-Request-ID"


@sync_and_async_middleware
def request_id_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            rid = request.request_id = request_id_from(request.headers.get(HEADER))  # type: ignore[attr-defined]
            token = request_id.set(rid)
            try:
                response: HttpResponse = await get_response(request)
            finally:
                request_id.reset(token)
            response[HEADER] = rid
            return response

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        rid = request.request_id = request_id_from(request.headers.get(HEADER))  # type: ignore[attr-defined]
        token = request_id.set(rid)
        try:
            response: HttpResponse = get_response(request)
        finally:
            request_id.reset(token)
        response[HEADER] = rid
        return response

    return middleware


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

"""This process's engine host (workers.host.EngineHost), built from Django settings.

A Celery worker process gets a host with its own loop thread. The embedded default (no broker)
runs runs inside the web process: its host lives on the ASGI server's loop, because the
in-memory channel layer is not thread-safe and only works on the loop its consumers use
(``bind_loop`` is called by the consumer when a socket connects).
"""

from __future__ import annotations

import asyncio
import threading

from channels.layers import get_channel_layer

from workers.engines.loading import HostedModel
from workers.host import EngineHost

_lock = threading.Lock()
_host: EngineHost | None = None
_models: dict[str, HostedModel] = {}  # loaded once per process, whatever the host's loop
_bound_loop: asyncio.AbstractEventLoop | None = None


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Embedded default: run the host on ``loop`` (the ASGI server's)."""
    global _bound_loop
    with _lock:
        _bound_loop = loop


def get_host() -> EngineHost:
    global _host, _bound_loop
    with _lock:
        if _bound_loop is not None and _bound_loop.is_closed():
            _bound_loop = None  # the server (or a test's loop) is gone: use a loop of our own
        if _bound_loop is not None:
            if _host is None or _host.loop is not _bound_loop:
                _host = EngineHost(get_channel_layer(), loop=_bound_loop, models=_models)
        elif _host is None or _host.loop.is_closed():
            _host = EngineHost(get_channel_layer(), models=_models)
        return _host


def current_host() -> EngineHost | None:
    return _host

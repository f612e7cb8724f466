"""Readiness checks: the database, the broker, the channel layer and live workers.

Each check runs bounded by a timeout (a dead dependency must not hang the probe) and reports
``{"ok": ..., "ms": ...}`` plus what it found or the error. In the embedded default (no
``CELERY_BROKER_URL``) runs execute in the web process: the broker and worker checks report
``mode: "embedded"`` and pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, connections

from workers import heartbeat

Report = dict[str, Any]


def check_database() -> Report:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def check_broker(timeout: float) -> Report:
    url = settings.CELERY_BROKER_URL
    if not url:
        return {"ok": True, "mode": "embedded"}
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as broker:
        broker.connect()  # one attempt, no retries
    return {"ok": True}


def check_workers() -> Report:
    """At least one worker whose heartbeat is fresh and that is not draining."""
    if not settings.CELERY_BROKER_URL:
        return {"ok": True, "mode": "embedded", "live": []}
    entries = heartbeat.workers()
    live = [_worker_summary(e) for e in entries if not e.get("draining")]
    draining = [_worker_summary(e) for e in entries if e.get("draining")]
    report: Report = {"ok": bool(live), "live": live, "draining": draining}
    if not live:
        report["error"] = "no worker has sent a heartbeat recently"
    return report


def _worker_summary(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("worker", "name", "queues", "age")}


async def check_channel_layer() -> Report:
    """A message round trip through a fresh channel of this process's channel layer."""
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer is configured"}
    channel = await layer.new_channel("readyz.")
    nonce = uuid.uuid4().hex
    await layer.send(channel, {"type": "readyz.ping", "nonce": nonce})
    message = await layer.receive(channel)
    # A cancelled receive is how a channel is let go of (channels-redis unsubscribes then).
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    if message.get("nonce") != nonce:
        return {"ok": False, "error": "the channel returned another message"}
    return {"ok": True, "backend": type(layer).__name__}


async def readiness() -> Report:
    """Every check at once, each within ``STEERLAB_READYZ_TIMEOUT_MS``; ready if all pass."""
    timeout = settings.STEERLAB_READYZ_TIMEOUT_MS / 1000.0
    names = ("database", "broker", "channel_layer", "workers")
    results = await asyncio.gather(
        _bounded(_in_thread(check_database), timeout),
        _bounded(_in_thread(lambda: check_broker(timeout)), timeout),
        _bounded(check_channel_layer, timeout),
        _bounded(_in_thread(check_workers), timeout),
    )
    checks = dict(zip(names, results, strict=True))
    return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}


async def _bounded(check: Callable[[], Awaitable[Report]], timeout: float) -> Report:
    started = time.monotonic()
    try:
        report = await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        report = {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    report["ms"] = round((time.monotonic() - started) * 1000, 1)
    return report


def _in_thread(check: Callable[[], Report]) -> Callable[[], Awaitable[Report]]:
    """``check`` in a thread of its own: a hung connect is abandoned, never awaited or pooled."""

    def start() -> Awaitable[Report]:
        future: concurrent.futures.Future[Report] = concurrent.futures.Future()

        def run() -> None:
            try:
                result = check()
            except BaseException as exc:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(exc)
            else:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_result(result)
            finally:
                connections.close_all()  # this thread's database connection, if it opened one

        threading.Thread(target=run, name="steerlab-readyz", daemon=True).start()
        return asyncio.wrap_future(future)

    return start

"""Worker heartbeats in the shared cache (Redis in a deployment): which workers are alive.

Each worker process writes its entry every ``interval`` seconds with a time-to-live of three
intervals, so a worker that died (or hangs) disappears within three beats. A small registry key
lists the workers that have beaten; readers prune the entries that expired, and a worker puts
itself back if a concurrent write lost it. A draining worker (SIGTERM) says so in its entry: it
is alive but takes no new work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

REGISTRY_KEY = "steerlab:workers"
TTL_BEATS = 3


def worker_name() -> str:
    """This process's name in the registry: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _key(worker: str) -> str:
    return f"steerlab:worker:{worker}"


def beat(worker: str, info: dict[str, Any], interval: float) -> None:
    """Record that ``worker`` is alive now (its entry expires after ``TTL_BEATS`` intervals)."""
    cache.set(_key(worker), {**info, "worker": worker, "beat_at": time.time()}, timeout=interval * TTL_BEATS)
    known = cache.get(REGISTRY_KEY) or []
    if worker not in known:
        cache.set(REGISTRY_KEY, sorted({*known, worker}), timeout=None)


def forget(worker: str) -> None:
    cache.delete(_key(worker))


def workers() -> list[dict[str, Any]]:
    """The entries of workers whose heartbeat has not expired (draining ones included)."""
    known = cache.get(REGISTRY_KEY) or []
    entries = cache.get_many([_key(w) for w in known])
    alive = [w for w in known if _key(w) in entries]
    if len(alive) < len(known):
        cache.set(REGISTRY_KEY, alive, timeout=None)  # a worker this loses puts itself back
    now = time.time()
    return [{**entries[_key(w)], "age": round(now - entries[_key(w)]["beat_at"], 3)} for w in alive]


class Heartbeat:
    """A daemon thread that beats every ``interval`` seconds until ``stop``.

    Args:
        info: called at each beat for the entry's contents (queues, draining, ...).
        interval: seconds between beats.
    """

    def __init__(self, info: Callable[[], dict[str, Any]], interval: float) -> None:
        self.worker = worker_name()
        self.info = info
        self.interval = interval
        self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steerlab-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Beat now rather than at the next interval (safe to call from a signal handler)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped:
            try:
                beat(self.worker, self.info(), self.interval)
            except Exception:  # the cache may be briefly away: the next beat tries again
                log.exception("workers.heartbeat_failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def stop(self) -> None:
        """Stop beating and remove this worker's entry (it is no longer alive)."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            forget(self.worker)
        except Exception:
            log.exception("workers.heartbeat_forget_failed")

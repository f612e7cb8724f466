"""Runs a step-driven engine core in its own thread behind the asynchronous ``Engine`` protocol.

Both engines are cores with the same small surface (``add``/``adjust``/``abort``/``step``): the core
is deterministic and testable step by step, and this wrapper gives it to the worker host, which
iterates each request's events on its event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from interventions.spec import Adjustment
from workers.engines.base import EngineInfo, Event, FinishedEvent, GenerationRequest, RequestError
from workers.metrics import StepMetrics

log = logging.getLogger(__name__)


class EngineCore(Protocol):
    def info(self) -> EngineInfo: ...

    def add(self, req: GenerationRequest) -> None: ...

    def adjust(self, request_id: str, adjustment: Adjustment) -> None: ...

    def abort(self, request_id: str) -> None: ...

    def finish(self, request_id: str, after: int) -> None: ...

    def has_work(self) -> bool: ...

    def step(self) -> list[Event]: ...

    def fail_all(self, error: str) -> list[Event]: ...

    def close(self) -> None: ...


class ThreadedEngine:
    """The asynchronous Engine over a step-driven core: one thread steps the shared batch.

    Args:
        core: the engine core (one per model per worker process).
        idle_wait: seconds the stepping thread sleeps when there is no work.
        name: the stepping thread's name.
    """

    def __init__(self, core: EngineCore, *, idle_wait: float = 0.05, name: str = "engine") -> None:
        self.core = core
        self._idle_wait = idle_wait
        self._queues: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def info(self) -> EngineInfo:
        return self.core.info()

    async def submit(self, request: GenerationRequest) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Event] = asyncio.Queue()
        with self._lock:
            self._queues[request.request_id] = (loop, q)
        try:
            self.core.add(request)
        except RequestError:
            with self._lock:
                self._queues.pop(request.request_id, None)
            raise
        self._wake.set()
        finished = False
        try:
            while True:
                event = await q.get()
                finished = isinstance(event, FinishedEvent)
                yield event
                if finished:
                    return
        finally:
            with self._lock:
                self._queues.pop(request.request_id, None)
            if not finished:  # the consumer went away (a closed browser): stop generating for it
                self.abort(request.request_id)

    def adjust(self, request_id: str, adjustment: Adjustment) -> None:
        self.core.adjust(request_id, adjustment)
        self._wake.set()

    def abort(self, request_id: str) -> None:
        self.core.abort(request_id)
        self._wake.set()

    def finish(self, request_id: str, after: int) -> None:
        self.core.finish(request_id, after)
        self._wake.set()

    def shutdown(self, *, close_core: bool = True) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        if close_core:
            self.core.close()

    def _run(self) -> None:
        metrics = StepMetrics(self.core.info().model)
        busy = False
        while not self._stop.is_set():
            if not self.core.has_work():
                if busy:
                    metrics.idle()
                    busy = False
                self._wake.wait(self._idle_wait)
                self._wake.clear()
                continue
            busy = True
            try:
                events = self.core.step()
            except Exception:  # an engine bug must not leave clients waiting forever
                log.exception("engine.step_failed")
                events = self._fail_all()
            metrics.step(events)
            self._dispatch(events)

    def _fail_all(self) -> list[Event]:
        return self.core.fail_all("engine step failed")

    def _dispatch(self, events: list[Event]) -> None:
        put: Callable[..., Any]
        for event in events:
            with self._lock:
                target = self._queues.get(event.request_id)
            if target is None:
                continue
            loop, q = target
            put = q.put_nowait
            loop.call_soon_threadsafe(put, event)

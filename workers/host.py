"""The engine host: one per worker process, shared by every run that process executes.

It owns one long-lived asyncio loop (a thread of its own, or the ASGI server's loop in the
embedded default), the engines (one per model, loaded once, never forked), a warm cache of
resolved vectors/probes by content hash, and the channel-layer traffic: publishing run events
(ordered within each conversation), and one control subscription per live run.

Runs are executed by synchronous callers (Celery's thread pool, or the embedded dispatcher's
threads); they talk to the loop through ``RunStream``. The host knows nothing of Django models:
the web app hands it a channel layer and plain data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from interventions.spec import Adjustment
from workers.engines.base import Event, FinishedEvent, GenerationRequest, TokenEvent
from workers.engines.loading import HostedModel

log = logging.getLogger(__name__)
T = TypeVar("T")


class TensorCache:
    """A bounded LRU of resolved tensors by content hash, shared by all runs of a process."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()  # outside the lock: a slow load must not stall other runs
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value


class RunStream:
    """The bridge between one run's synchronous executor and the host loop.

    Open it (which subscribes to the run's control group) *before* claiming the run, so that a
    ``stop`` sent right after the claim is never missed; then ``submit`` the request and read
    ``next_event`` until the ``FinishedEvent``.
    """

    def __init__(self, host: EngineHost, control_group: str, detach_grace: float) -> None:
        self.host = host
        self.control_group = control_group
        self.detach_grace = detach_grace
        self._events: queue.SimpleQueue[Event | BaseException] = queue.SimpleQueue()
        self._engine: Any = None
        self._request_id: str | None = None
        self._pending: list[Adjustment] = []
        self._grace: asyncio.TimerHandle | None = None
        self._channel: str | None = None
        self._listener: asyncio.Task[None] | None = None
        self._driver: asyncio.Task[None] | None = None
        self._stop_requested = False

    # -------------------------------------------------------------- sync side
    def open(self) -> None:
        self.host.call(self._subscribe())

    def submit(self, model: HostedModel, request: GenerationRequest) -> None:
        """Start generating (raises RequestError when the engine refuses the request)."""
        self.host.call(self._submit(model, request))

    def next_event(self, timeout: float) -> Event | None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def finish(self, after: int) -> None:
        """End the generation once token ``after`` is read (a stop sequence ends there)."""
        self.host.loop.call_soon_threadsafe(self._finish, after)

    def _finish(self, after: int) -> None:
        if self._request_id is not None:
            self._engine.finish(self._request_id, after)

    def close(self) -> None:
        if self.host.loop.is_closed():  # embedded: the server (or a test's loop) has gone
            return
        with contextlib.suppress(Exception):
            self.host.call(self._close(), timeout=10)

    # -------------------------------------------------------------- loop side
    async def _subscribe(self) -> None:
        layer = self.host.channel_layer
        self._channel = await layer.new_channel("runctl.")
        await layer.group_add(self.control_group, self._channel)
        self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        layer = self.host.channel_layer
        assert self._channel is not None
        while True:
            message = await layer.receive(self._channel)
            try:
                self._on_control(message)
            except Exception:  # a malformed control message must not end the run
                log.exception("host.bad_control")

    def _on_control(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "stop":
            self._stop()
        elif action == "adjust":
            adj = Adjustment.model_validate(message["adjustment"])
            if self._request_id is None:
                self._pending.append(adj)
            else:
                self._engine.adjust(self._request_id, adj)
        elif action == "detach":
            if self._grace is None:
                loop = asyncio.get_running_loop()
                self._grace = loop.call_later(self.detach_grace, self._stop)
        elif action == "attach" and self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def _stop(self) -> None:
        self._stop_requested = True
        if self._request_id is not None:
            self._engine.abort(self._request_id)  # the engine ignores a second abort

    async def _submit(self, model: HostedModel, request: GenerationRequest) -> None:
        self._engine = model.engine
        if self._stop_requested:
            self._events.put(FinishedEvent(request.request_id, "aborted", ()))
            return
        stream = model.engine.submit(request)
        # The first step of the async generator adds the request (and raises on bad input).
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        self._request_id = request.request_id
        # Control that came before the request reached the engine (the stop included: it may
        # have arrived while this coroutine yielded above).
        for adj in self._pending:
            model.engine.adjust(request.request_id, adj)
        self._pending.clear()
        if self._stop_requested:
            model.engine.abort(request.request_id)
        error = first.exception() if first.done() else None
        if error is not None:
            raise error
        self._driver = asyncio.get_running_loop().create_task(self._drive(stream, first))

    async def _drive(self, stream: Any, first: asyncio.Future[Event]) -> None:
        try:
            event = await first
            self._events.put(event)
            async for event in stream:
                self._events.put(event)
        except BaseException as exc:  # surface engine failures to the executor
            self._events.put(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def _close(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
        if self._listener is not None:
            self._listener.cancel()
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()
        if self._channel is not None:
            await self.host.channel_layer.group_discard(self.control_group, self._channel)


class EngineHost:
    """One per process: the loop, the engines, the warm cache and the event publisher.

    Args:
        channel_layer: the Channels layer runs publish to and take control from.
        loop: run on this (already running) loop, e.g. the ASGI server's; None starts a thread.
        models: a registry of loaded models to share (a host rebuilt for a new loop keeps them).
    """

    MAX_FRAMES_PER_MESSAGE = 64  # keeps a channel-layer message well under its size limits

    def __init__(
        self,
        channel_layer: Any,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        models: dict[str, HostedModel] | None = None,
    ) -> None:
        self.channel_layer = channel_layer
        self.cache = TensorCache()
        self._models: dict[str, HostedModel] = models if models is not None else {}
        self._models_lock = threading.Lock()
        self._active = 0
        self._active_lock = threading.Lock()
        if loop is None:
            self.loop = asyncio.new_event_loop()
            self._thread: threading.Thread | None = threading.Thread(
                target=self.loop.run_forever, name="steerlab-host", daemon=True
            )
            self._thread.start()
        else:
            self.loop = loop
            self._thread = None
        # Frames waiting to be sent, each with its publish time (wall clock: the web process, maybe
        # on another machine, measures the stream lag from it).
        self._outboxes: dict[str, list[tuple[dict[str, Any], float]]] = {}
        self._inbox: list[tuple[str, dict[str, Any], float]] = []
        self._inbox_lock = threading.Lock()
        self._wake_pending = False

    # -------------------------------------------------------------- loop plumbing
    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run ``coro`` on the host loop from another thread and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def publish(self, group: str, frame: dict[str, Any]) -> None:
        """Send ``frame`` to ``group`` as a ``run.events`` message, in order within the group.

        Callable from any thread. Each group has its own queue, drained by one task: a slow send
        to one conversation never holds up another's. Frames that queue up while a send is in
        flight go out together in the next message, so a backlog costs fewer sends, not more.
        The message's ``published_at`` is the publish time of its oldest frame.
        """
        with self._inbox_lock:
            self._inbox.append((group, frame, time.time()))
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self.loop.call_soon_threadsafe(self._take_inbox)
        except RuntimeError:  # the loop has closed (embedded: the server is shutting down)
            log.warning("host.publish_after_close")

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._wake_pending = False
        for group, frame, published_at in items:
            queue_ = self._outboxes.get(group)
            if queue_ is None:
                queue_ = self._outboxes[group] = []
                self.loop.create_task(self._drain(group, queue_))
            queue_.append((frame, published_at))

    async def _drain(self, group: str, queue_: list[tuple[dict[str, Any], float]]) -> None:
        try:
            while queue_:
                batch = queue_[: self.MAX_FRAMES_PER_MESSAGE]
                del queue_[: len(batch)]
                message = {"type": "run.events", "frames": [f for f, _ in batch], "published_at": batch[0][1]}
                try:
                    await self.channel_layer.group_send(group, message)
                except Exception:  # a lost publish is recovered from the database by the client
                    log.exception("host.publish_failed")
        finally:
            del self._outboxes[group]  # the queue emptied with no await since: nothing was added

    # -------------------------------------------------------------- models and runs
    def model(self, name: str, load: Callable[[], HostedModel]) -> HostedModel:
        """The process's one engine for ``name``, loaded on first use."""
        with self._models_lock:
            hosted = self._models.get(name)
            if hosted is None:
                log.info("host.model_loading", extra={"deployment": name})
                hosted = load()
                self._models[name] = hosted
            return hosted

    def loaded(self, name: str) -> HostedModel | None:
        """The model ``name`` if this process has loaded it."""
        with self._models_lock:
            return self._models.get(name)

    def start_requests(
        self,
        model: HostedModel,
        requests: list[GenerationRequest],
        until: Callable[[int, list[int]], bool] | None = None,
    ) -> Future[list[list[Event]]]:
        """Submit ``requests`` together (they share the continuous batch); a future of each one's
        events, in order. If one fails, the others are aborted and the future raises its error.

        ``until(i, token_ids)``, called on the host's loop at each token of request ``i``, ends
        that request when it returns true (its stop sequence was generated): ``Engine.finish``
        after that token, whose reads still come; tokens sampled meanwhile are in its events too.
        """
        return asyncio.run_coroutine_threadsafe(self._all_events(model, requests, until), self.loop)

    async def _all_events(
        self,
        model: HostedModel,
        requests: list[GenerationRequest],
        until: Callable[[int, list[int]], bool] | None,
    ) -> list[list[Event]]:
        async def events(i: int, request: GenerationRequest) -> list[Event]:
            out: list[Event] = []
            ids: list[int] = []
            ended = until is None
            async for event in model.engine.submit(request):
                out.append(event)
                if not ended and isinstance(event, TokenEvent):
                    ids.append(event.token_id)
                    if until is not None and until(i, ids):
                        model.engine.finish(request.request_id, event.index)
                        ended = True
            return out

        tasks = [asyncio.ensure_future(events(i, r)) for i, r in enumerate(requests)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for request, task in zip(requests, tasks, strict=True):
                if not task.done():
                    model.engine.abort(request.request_id)
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def open_run(self, control_group: str, *, detach_grace: float) -> RunStream:
        stream = RunStream(self, control_group, detach_grace)
        stream.open()
        return stream

    @contextlib.contextmanager
    def running(self) -> Any:
        """Counts the runs in flight (the engine status the browser shows)."""
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    @property
    def active_runs(self) -> int:
        return self._active

    def shutdown(self) -> None:
        with self._models_lock:
            for hosted in self._models.values():
                hosted.shutdown()
            self._models.clear()
        if self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)


__all__ = ["EngineHost", "RunStream", "TensorCache"]

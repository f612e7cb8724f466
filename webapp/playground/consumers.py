"""The conversation websocket: ``/ws/conversations/<id>/``.

Client messages (JSON objects with a ``type``; an optional ``ref`` is echoed on replies):

* ``generate`` ``{content, overrides?, sampling?, compare?}``: a chat turn (``compare``: the
  unsteered baseline and the steered answer, streamed together).
* ``adjust`` ``{run, intervention, scale?, enabled?}``: live, from the next token on.
* ``stop`` ``{run}``; ``replay`` ``{run}``; ``resume`` ``{run, attempt, seq}``;
  ``set_recipe`` ``{recipe_version}``; ``status`` (the engine's load and queue).

Every message is validated and authorised on its own (ownership is re-read from the database).
A bad one gets ``{type: "error", code, message}`` and changes nothing; the socket stays open.

Server frames of a run carry ``run``, ``attempt`` and ``seq``; this consumer delivers each
``(attempt, seq)`` once and in order: duplicates are dropped, and a gap (a resumed stream, or
messages the channel layer dropped for a slow client — its capacity bounds server memory) is
filled from the database before newer frames go out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

from webapp.operations.metrics import observe_stream_lag
from webapp.playground import hosting, services
from webapp.playground.follow import RECHECK_SECONDS, FrameOrder
from webapp.playground.models import Run, RunStatus
from webapp.playground.services import PlaygroundError
from webapp.sockets import JsonFrameConsumer

log = logging.getLogger(__name__)

BACKFILL_RETRIES = 8
QUEUE_WATCH_SECONDS = 600  # how long a waiting run's queue position is followed


class ConversationConsumer(JsonFrameConsumer):
    HANDLERS = ("generate", "adjust", "stop", "replay", "resume", "set_recipe", "status", "ping")

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        try:
            await database_sync_to_async(services.get_conversation)(user, self.conversation_id)
        except PlaygroundError:
            await self.close(code=4404)
            return
        if not settings.CELERY_BROKER_URL:
            hosting.bind_loop(asyncio.get_running_loop())  # embedded: runs publish on this loop
        self.group = services.conversation_group(self.conversation_id)
        self.orders: dict[int, FrameOrder] = {}  # run -> its frames' order (what was delivered)
        self.retrying: set[int] = set()
        self.watching: set[int] = set()  # runs this socket started or resumed
        self.queue_watchers: set[asyncio.Task[None]] = set()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        await self.channel_layer.group_discard(self.group, self.channel_name)
        for task in self.queue_watchers:
            task.cancel()
        # A closed browser lets go of its runs: each stops after the detach grace unless resumed.
        for run_id in self.watching:
            await self.channel_layer.group_send(
                services.control_group(run_id), {"type": "run.control", "action": "detach"}
            )

    # ------------------------------------------------------------------ receiving
    async def receive_json(self, content: Any, **_: Any) -> None:
        if not isinstance(content, dict):
            await self.error("invalid", "a message is a JSON object with a type")
            return
        kind = content.get("type")
        ref = content.get("ref") if isinstance(content.get("ref"), str | int) else None
        if kind not in self.HANDLERS:
            await self.error("unknown_type", f"unknown message type {kind!r}", ref)
            return
        try:
            await getattr(self, f"on_{kind}")(content, ref)
        except PlaygroundError as exc:
            await self.error(exc.code, exc.message, ref)
        except PermissionDenied as exc:  # a reference the user can no longer see (ReferenceRefused)
            await self.error("forbidden", str(exc), ref)
        except Exception:
            log.exception("playground.message_failed", extra={"type": kind})
            await self.error("server_error", "the server could not handle this message", ref)

    # ------------------------------------------------------------------ handlers
    def _conversation(self) -> Any:
        """This socket's conversation, re-read for every message (sync: call it in a DB thread)."""
        return services.get_conversation(self.user, self.conversation_id)

    @database_sync_to_async
    def _run(self, run_id: Any) -> Run:
        return services.get_run(self.user, self._conversation(), run_id)

    async def on_ping(self, content: dict[str, Any], ref: Any) -> None:
        await self.send_json({"type": "pong", "ref": ref})

    async def on_generate(self, content: dict[str, Any], ref: Any) -> None:
        unknown = set(content) - {"type", "ref", "content", "overrides", "sampling", "compare"}
        if unknown:
            raise PlaygroundError("invalid", f"unknown fields: {', '.join(sorted(unknown))}")
        sampling = _sampling(content.get("sampling"))
        compare = content.get("compare", False)
        if not isinstance(compare, bool):
            raise PlaygroundError("invalid", "compare must be true or false")

        def start() -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
            conversation = self._conversation()
            runs = services.start_turn(
                self.user,
                conversation,
                content.get("content"),
                sampling=sampling,
                overrides=content.get("overrides"),
                compare=compare,
            )
            return [services.run_summary(r) for r in runs], [(r.pk, services.queue_position(r)) for r in runs]

        summaries, positions = await database_sync_to_async(start)()
        for run_id, _ in positions:
            self.watching.add(run_id)
            self.orders.setdefault(run_id, FrameOrder())
        await self.send_json({"type": "runs", "ref": ref, "runs": summaries})
        for run_id, position in positions:
            await self.send_json({"type": "queued", "run": run_id, "position": position})
            self.queue_watchers.add(
                asyncio.get_running_loop().create_task(self._watch_queue(run_id, position))
            )

    async def _watch_queue(self, run_id: int, position: int) -> None:
        """While the run waits for a worker, tell the browser when its place in the queue changes.

        This reads the database once a second for display only; control never polls.
        """

        def read() -> tuple[str, int]:
            run = Run.objects.select_related("deployment").get(pk=run_id)
            return run.status, services.queue_position(run) if run.status == RunStatus.QUEUED else -1

        try:
            for _ in range(QUEUE_WATCH_SECONDS):
                await asyncio.sleep(1.0)
                status, now = await database_sync_to_async(read)()
                if status != RunStatus.QUEUED:
                    return
                if now != position:
                    position = now
                    await self.send_json({"type": "queued", "run": run_id, "position": position})
        except Exception:  # the socket closed or the run vanished: nothing left to tell
            return

    async def on_adjust(self, content: dict[str, Any], ref: Any) -> None:
        run = await self._run(content.get("run"))
        message = await database_sync_to_async(services.adjust_message)(
            self.user, run, content.get("intervention"), content.get("scale"), content.get("enabled")
        )
        await self.channel_layer.group_send(services.control_group(run.pk), message)
        await self.send_json({"type": "ack", "ref": ref, "run": run.pk, "action": "adjust"})

    async def on_stop(self, content: dict[str, Any], ref: Any) -> None:
        run = await self._run(content.get("run"))
        cancelled = await database_sync_to_async(services.stop_run)(self.user, run)
        if not cancelled:
            await self.channel_layer.group_send(
                services.control_group(run.pk), {"type": "run.control", "action": "stop"}
            )
        await self.send_json({"type": "ack", "ref": ref, "run": run.pk, "action": "stop"})
        if cancelled:
            await self.send_json({"type": "cancelled", "run": run.pk, "status": RunStatus.CANCELLED})

    async def on_replay(self, content: dict[str, Any], ref: Any) -> None:
        run = await self._run(content.get("run"))
        replay = await database_sync_to_async(services.replay_run)(self.user, run)
        self.watching.add(replay.pk)
        self.orders.setdefault(replay.pk, FrameOrder())
        await self.send_json({"type": "runs", "ref": ref, "runs": [services.run_summary(replay)]})

    async def on_resume(self, content: dict[str, Any], ref: Any) -> None:
        run = await self._run(content.get("run"))
        attempt, seq = content.get("attempt", 0), content.get("seq", 0)
        for value in (attempt, seq):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
                raise PlaygroundError("invalid", "attempt and seq must be non-negative integers")
        self.watching.add(run.pk)
        if run.active:
            await self.channel_layer.group_send(
                services.control_group(run.pk), {"type": "run.control", "action": "attach"}
            )
        self.orders.setdefault(run.pk, FrameOrder()).cursor = (attempt, seq)
        await self.send_json({"type": "resumed", "ref": ref, "run": services.run_summary(run)})
        await self.catch_up(run.pk)

    async def on_set_recipe(self, content: dict[str, Any], ref: Any) -> None:
        version_id = content.get("recipe_version")

        def apply() -> int | None:
            conversation = self._conversation()
            version = None if version_id is None else services.get_recipe_version(self.user, version_id)
            services.set_recipe_version(self.user, conversation, version)
            return None if version is None else version.pk

        await self.send_json(
            {"type": "recipe", "ref": ref, "recipe_version": await database_sync_to_async(apply)()}
        )

    async def on_status(self, content: dict[str, Any], ref: Any) -> None:
        def read() -> dict[str, Any]:
            conversation = self._conversation()
            deployment = conversation.deployment
            queued = Run.objects.filter(deployment=deployment, status=RunStatus.QUEUED).count()
            running = Run.objects.filter(deployment=deployment, status=RunStatus.RUNNING).count()
            engine = cache.get(services.engine_status_key(deployment.name))
            return {"model": deployment.name, "queued": queued, "running": running, "engine": engine}

        await self.send_json({"type": "status", "ref": ref, **await database_sync_to_async(read)()})

    # ------------------------------------------------------------------ run events
    async def run_events(self, message: dict[str, Any]) -> None:
        """Frames the worker published (several when they queued up behind a send)."""
        for frame in message["frames"]:
            await self.run_event(frame)
        observe_stream_lag(message.get("published_at"))

    async def run_event(self, frame: dict[str, Any]) -> None:
        run_id = frame["run"]
        order = self.orders.get(run_id)
        if order is None:
            if frame["seq"] != 1:
                return  # a run this socket neither started nor resumed, seen mid-way
            order = self.orders[run_id] = FrameOrder((frame["attempt"], 0))
        await self.deliver(order.offer(frame))
        if order.gap:
            await self.catch_up(run_id)

    async def deliver(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            await self.send_json(frame)

    async def catch_up(self, run_id: int) -> None:
        """Fill the gap after what was delivered from the database, then deliver what is held."""
        await self._backfill(run_id)
        if self.orders[run_id].gap and run_id not in self.retrying:
            # Some events are published but not persisted yet (at most 250 ms): look again soon.
            self.retrying.add(run_id)
            asyncio.get_running_loop().create_task(self._retry_catch_up(run_id))

    async def _backfill(self, run_id: int) -> None:
        # Orders exist only for runs of this socket's (authorised) conversation: no re-check here,
        # on the path every gap takes.
        order = self.orders[run_id]
        for frame in await database_sync_to_async(services.events_after)(run_id, *order.cursor):
            await self.deliver(order.offer(frame))

    async def _retry_catch_up(self, run_id: int) -> None:
        order = self.orders[run_id]
        try:
            for _ in range(BACKFILL_RETRIES):
                await asyncio.sleep(RECHECK_SECONDS)
                await self._backfill(run_id)
                if not order.gap:
                    return
            # The missing events never reached the database (their worker died mid-batch):
            # say so, and go on from what is held rather than stall the stream.
            if order.gap:
                await self.send_json({"type": "gap", "run": run_id, "before": list(min(order.held))})
                await self.deliver(order.skip_gap())
            log.warning("playground.backfill_gave_up", extra={"run": run_id})
        finally:
            self.retrying.discard(run_id)


def _sampling(raw: Any) -> services.Sampling:
    if raw is None:
        return services.Sampling()
    allowed = {"max_new_tokens", "temperature", "top_p", "seed", "stop", "top_logprobs"}
    if not isinstance(raw, dict) or set(raw) - allowed:
        raise PlaygroundError(
            "invalid", "sampling is {max_new_tokens?, temperature?, top_p?, seed?, stop?, top_logprobs?}"
        )
    defaults = services.Sampling()
    values = {
        "max_new_tokens": raw.get("max_new_tokens", defaults.max_new_tokens),
        "temperature": raw.get("temperature", defaults.temperature),
        "top_p": raw.get("top_p", defaults.top_p),
        "seed": raw.get("seed"),
    }
    if not isinstance(values["max_new_tokens"], int) or isinstance(values["max_new_tokens"], bool):
        raise PlaygroundError("invalid", "max_new_tokens must be an integer")
    if values["seed"] is not None and (
        not isinstance(values["seed"], int) or isinstance(values["seed"], bool)
    ):
        raise PlaygroundError("invalid", "seed must be an integer")
    for name in ("temperature", "top_p"):
        if isinstance(values[name], bool) or not isinstance(values[name], int | float):
            raise PlaygroundError("invalid", f"{name} must be a number")
    return services.Sampling(
        **values, stop=services.stop_sequences(raw.get("stop")), top_logprobs=raw.get("top_logprobs", 0)
    )

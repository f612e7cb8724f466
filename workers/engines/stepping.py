"""Request bookkeeping that both step-driven engine cores share (``HFEngineCore``, ``VLLMEngineCore``).

A core queues requests and control from any thread and applies them on its stepping thread: live
adjustments and aborts between steps (control for a request not admitted yet is kept for its
admission, so a stop or a slider moved right after submitting is not lost), replayed adjustments
at their recorded token, and the end of a request: a stop token or its length, after one extra
forward when it reads (the forward that feeds its last token). What differs per engine (how a
request enters and leaves the scheduler, where forced tokens live) are the hooks at the bottom.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from torch import Tensor

from interventions.compiler import Site
from interventions.plan import BatchPlan
from interventions.spec import Adjustment
from workers.engines.base import (
    AdjustedEvent,
    Event,
    FinishedEvent,
    FinishReason,
    GenerationRequest,
    RequestError,
    TokenEvent,
)
from workers.engines.requests import collected_event

log = logging.getLogger(__name__)

Control = tuple[str, str, Adjustment | int | None]  # (kind, request id, adjustment or token index)


@dataclass
class Live:
    """A request between its admission and its ``FinishedEvent``."""

    req: GenerationRequest
    slot: int = 0
    tokens: list[int] = field(default_factory=list)
    finishing: FinishReason | None = None  # set when the last token is out but its reads are not
    scheduled: list[tuple[int, Adjustment]] = field(default_factory=list)
    reads: bool = False
    probe_cols: Tensor | None = None  # score columns of its probes, in recipe order

    @property
    def prompt_len(self) -> int:
        return len(self.req.prompt_tokens)


LiveT = TypeVar("LiveT", bound=Live)


class SteppedCore(Generic[LiveT]):
    """The queues, live table and control rules of an engine core; subclasses set ``plan``."""

    plan: BatchPlan
    min_step_time: float

    def _init_requests(self) -> None:
        self._live: dict[str, LiveT] = {}
        self._pending: queue.SimpleQueue[GenerationRequest] = queue.SimpleQueue()
        self._control: queue.SimpleQueue[Control] = queue.SimpleQueue()
        self._known: set[str] = set()
        self._known_lock = threading.Lock()
        self._scheduled_ids: set[str] = set()

    # ------------------------------------------------------------------ any thread
    def add(self, req: GenerationRequest) -> None:
        """Queue a request; it joins the batch at the next step. Raises RequestError on bad input."""
        self._validate(req)
        with self._known_lock:
            if req.request_id in self._known:
                raise RequestError(f"request id {req.request_id!r} is already live")
            self._known.add(req.request_id)
        self._pending.put(req)

    def adjust(self, request_id: str, adjustment: Adjustment) -> None:
        """Queue a live change; it applies from the next step (acknowledged by an AdjustedEvent)."""
        self._control.put(("adjust", request_id, adjustment))

    def abort(self, request_id: str) -> None:
        self._control.put(("abort", request_id, None))

    def finish(self, request_id: str, after: int) -> None:
        """End the request (``stop``) once its generated token ``after`` is read (Engine.finish)."""
        self._control.put(("finish", request_id, after))

    def has_work(self) -> bool:
        return bool(self._live) or not self._pending.empty() or not self._control.empty()

    def live_requests(self) -> int:
        return len(self._live)

    def _forget(self, rid: str) -> None:
        with self._known_lock:
            self._known.discard(rid)

    # ------------------------------------------------------------------ the stepping thread
    def _apply_control(self, events: list[Event]) -> None:
        deferred: list[Control] = []
        while True:
            try:
                kind, rid, adj = self._control.get_nowait()
            except queue.Empty:
                break
            live = self._live.get(rid)
            if live is None:
                # Added but not admitted yet: kept for admission (which drains its aborts) and the
                # steps after. Unknown or finished: dropped.
                if not self._control_before_admission(kind, rid, events) and rid in self._known:
                    deferred.append((kind, rid, adj))
                continue
            if kind == "abort":
                self._finish(live, "aborted", events)
            elif kind == "finish":
                assert isinstance(adj, int)
                if live.reads and len(live.tokens) == adj + 1:
                    live.finishing = "stop"  # the next step reads token ``adj``, then it ends
                elif len(live.tokens) > adj:  # read already (or nothing to read)
                    self._finish(live, "stop", events)
            elif isinstance(adj, Adjustment):
                if not self._try_adjust(rid, adj):
                    continue
                self._adjusted_live(live)
                events.append(AdjustedEvent(rid, len(live.tokens), adj))
        for item in deferred:
            self._control.put(item)
        for rid in list(self._scheduled_ids):
            live = self._live[rid]
            while live.scheduled and live.scheduled[0][0] <= len(live.tokens):
                _, adj = live.scheduled.pop(0)
                self.plan.adjust(rid, adj)
                events.append(AdjustedEvent(rid, len(live.tokens), adj))
            if not live.scheduled:
                self._scheduled_ids.discard(rid)

    def _drain_control_for(self, rid: str) -> list[Control]:
        # Control queued before the request was admitted, in order; the others' stay queued.
        keep: list[Control] = []
        mine: list[Control] = []
        while True:
            try:
                item = self._control.get_nowait()
            except queue.Empty:
                break
            (mine if item[1] == rid else keep).append(item)
        for item in keep:
            self._control.put(item)
        return mine

    def _early_control(self, rid: str, events: list[Event]) -> list[Control] | None:
        """The control sent to ``rid`` before its admission, in order; None (and ``rid`` finished)
        if it was aborted."""
        early = self._drain_control_for(rid)
        if any(kind == "abort" for kind, _, _ in early):
            events.append(FinishedEvent(rid, "aborted", ()))
            self._forget(rid)
            return None
        return early

    def _collect_aborted(self, rid: str, events: list[Event]) -> bool:
        """Drain the control sent to collect request ``rid``; True (and finished) if it was aborted."""
        early = self._early_control(rid, events)
        for item in early or ():  # adjustments of a request that will never run: nothing to apply
            log.warning("engine.adjust_ignored %s: a collect request takes no adjustments", item[1])
        return early is None

    def _try_adjust(self, rid: str, adjustment: Adjustment) -> bool:
        """Apply a live adjustment to ``rid``'s plan slot; False (logged) if the plan refuses it."""
        try:
            self.plan.adjust(rid, adjustment)
        except ValueError as e:
            log.warning("engine.adjust_refused %s: %s", rid, e)
            return False
        return True

    def _pace(self, started: float) -> None:
        """Sleep out the rest of ``min_step_time`` (tests that act during a generation)."""
        spare = self.min_step_time - (time.perf_counter() - started)
        if spare > 0:
            time.sleep(spare)

    def _collected(
        self, req: GenerationRequest, captured: Mapping[Site, Tensor], events: list[Event]
    ) -> None:
        """A collect request's activations, then its end (it generates nothing)."""
        assert req.collect is not None
        events.append(collected_event(req.request_id, req.collect, captured))
        events.append(FinishedEvent(req.request_id, "stop", ()))
        self._forget(req.request_id)

    def _join(
        self,
        req: GenerationRequest,
        sources: Callable[[], dict[int, Tensor] | None],
        events: list[Event],
    ) -> LiveT | None:
        """Admit ``req`` into the plan and the live table; None if it ended here (aborted early, or
        a bad recipe or patch source). Its overrides, early control (from token 0 on) and due
        replayed adjustments apply. ``sources`` gives its patch sources (only if it was not aborted).
        """
        rid = req.request_id
        early = self._early_control(rid, events)
        if early is None:
            return None
        try:
            slot = self.plan.add(rid, req.recipe, len(req.prompt_tokens), sources())
        except (ValueError, RuntimeError) as e:
            events.append(FinishedEvent(rid, "error", (), error=str(e)))
            self._forget(rid)
            return None
        live = self._new_live(req, slot)
        live.scheduled = sorted(req.scheduled, key=lambda s: s[0])
        live.reads = req.recipe.has_reads
        for adj in req.overrides:
            self.plan.adjust(rid, adj)
        for _, _, early_adj in early:
            if not isinstance(early_adj, Adjustment) or not self._try_adjust(rid, early_adj):
                continue
            self._adjusted_before_start(live)
            events.append(AdjustedEvent(rid, 0, early_adj))
        self._live[rid] = live
        if live.scheduled:
            self._scheduled_ids.add(rid)
            while live.scheduled and live.scheduled[0][0] <= 0:
                self.plan.adjust(rid, live.scheduled.pop(0)[1])
        return live

    def _on_token(
        self,
        live: LiveT,
        token: int,
        logprob: float,
        logits: tuple[float, ...] | None,
        events: list[Event],
        top: tuple[tuple[int, float], ...] = (),
    ) -> None:
        if live.finishing is not None:
            # The extra forward that read the last token: its sampled successor is discarded.
            self._finish(live, live.finishing, events)
            return
        req = live.req
        index = len(live.tokens)
        live.tokens.append(token)
        events.append(TokenEvent(req.request_id, index, live.prompt_len + index, token, logprob, logits, top))
        if req.forced_tokens is not None:
            nxt = index + 1
            self._set_forced(live, req.forced_tokens[nxt] if nxt < len(req.forced_tokens) else -1)
        reason: FinishReason | None = None
        if token in req.sampling.stop_token_ids:
            reason = "stop"
        elif len(live.tokens) >= req.sampling.max_new_tokens:
            reason = "length"
        if reason is None:
            return
        if live.reads:
            live.finishing = reason
        else:
            self._finish(live, reason, events)

    def _finish(
        self,
        live: LiveT,
        reason: FinishReason,
        events: list[Event],
        error: str | None = None,
        *,
        engine_done: bool = False,
    ) -> None:
        rid = live.req.request_id
        events.append(FinishedEvent(rid, reason, tuple(live.tokens), error=error))
        self._release(live, engine_done=engine_done)
        self.plan.remove(rid)
        del self._live[rid]
        self._scheduled_ids.discard(rid)
        self._forget(rid)

    def fail_all(self, error: str) -> list[Event]:
        """Finish every live request with reason ``error`` (after an engine failure)."""
        events: list[Event] = []
        for live in list(self._live.values()):
            self._finish(live, "error", events, error=error)
        return events

    # ------------------------------------------------------------------ engine hooks
    def _validate(self, req: GenerationRequest) -> None:
        raise NotImplementedError

    def _new_live(self, req: GenerationRequest, slot: int) -> LiveT:
        raise NotImplementedError

    def _set_forced(self, live: LiveT, token: int) -> None:
        """The token to force at the request's next sample (-1: none)."""
        raise NotImplementedError

    def _release(self, live: LiveT, *, engine_done: bool) -> None:
        """Take a finishing request out of the engine's scheduler and sampling tables."""
        raise NotImplementedError

    def _control_before_admission(self, kind: str, rid: str, events: list[Event]) -> bool:
        """Control for a request not admitted yet that the engine handles itself (True: handled)."""
        return False

    def _adjusted_live(self, live: LiveT) -> None:
        """A live adjustment took effect (between steps)."""

    def _adjusted_before_start(self, live: LiveT) -> None:
        """An adjustment sent before admission took effect from token 0."""

"""Executing a run on a worker: claim it, generate through the shared engine, stream, persist.

``execute_run`` is the service the Celery task wraps (and the embedded dispatcher calls in a
thread). It is idempotent: a run that finished is never re-run, a run another live worker holds
is left alone, and a run whose worker died is taken over as its next attempt (its events carry
the attempt number). While it runs it renews a heartbeat lease; ``reap_expired_runs`` re-queues
(once) or fails runs whose lease expired.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connections, transaction
from django.utils import timezone

from interventions.compiler import ProbeData, VectorData, compile_recipe
from interventions.spec import Adjustment, parse_recipe
from webapp import leases
from webapp.leases import LeaseLost
from webapp.library.models import PROBE_PREFIX, VECTOR_PREFIX, ModelDeployment, Probe, SteeringVector
from webapp.library.references import check_references
from webapp.library.services import probe_data, vector_data
from webapp.playground.models import Message, Run, RunEvent, RunStatus
from webapp.playground.services import control_group, conversation_group, engine_status_key
from webapp.playground.textstream import TextStream, clean
from workers.engines.base import (
    AdjustedEvent,
    FinishedEvent,
    GenerationRequest,
    ReadEvent,
    RequestError,
    SamplingParams,
    TokenEvent,
)
from workers.engines.loading import HostedModel, load_model
from workers.host import EngineHost
from workers.metrics import count_finished_run

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.25  # events are persisted at least this often (docs/design.md §2)
STATUS_BY_REASON = {"stop": RunStatus.DONE, "length": RunStatus.DONE, "aborted": RunStatus.STOPPED}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim_run(run_id: int, worker: str) -> int | None:
    """Take ``run_id`` for ``worker``; its new attempt number, or None when it is not ours to run."""
    max_attempts = settings.STEERLAB_RUN_MAX_ATTEMPTS
    return leases.claim(
        Run,
        run_id,
        worker,
        lease_seconds=settings.STEERLAB_RUN_LEASE_SECONDS,
        max_attempts=max_attempts,
        exhausted={
            "finish_reason": "error",
            "error": f"its worker stopped answering and no attempt is left ({max_attempts} allowed)",
        },
    )


def lease_state(run_id: int) -> tuple[str, float] | None:
    """(status, seconds until the lease expires) of a run, or None if it does not exist."""
    return leases.state(Run, run_id)


def _renew(run_id: int, worker: str, attempt: int) -> None:
    leases.renew(Run, run_id, worker, attempt, settings.STEERLAB_RUN_LEASE_SECONDS)


def reap_expired_runs() -> list[int]:
    """Re-queue (while attempts remain) or fail running runs whose lease expired; the re-queued ids."""
    return leases.reap(
        Run,
        max_attempts=settings.STEERLAB_RUN_MAX_ATTEMPTS,
        failed={
            "finish_reason": "error",
            "error": "its worker stopped answering (attempt {attempt} of {attempt})",
        },
    )


# --------------------------------------------------------------------------------------------
# Resolving the recipe through the warm cache
# --------------------------------------------------------------------------------------------
def resolve_refs(content_hashes: dict[str, str], host: EngineHost) -> dict[str, VectorData | ProbeData]:
    """The tensors of every vector and probe a recipe names, by the content hash it was pinned to."""
    resolved: dict[str, VectorData | ProbeData] = {}
    for ref, content_hash in content_hashes.items():
        is_vector = ref.startswith(VECTOR_PREFIX)
        if not is_vector and not ref.startswith(PROBE_PREFIX):
            raise RequestError(f"unknown reference {ref!r}")
        pk = int(ref.split("_", 1)[1])

        def load(
            pk: int = pk, is_vector: bool = is_vector, content_hash: str = content_hash, ref: str = ref
        ) -> Any:
            model = SteeringVector if is_vector else Probe
            obj = model.objects.select_related("deployment").filter(pk=pk, content_hash=content_hash).first()
            if obj is None:
                raise RequestError(f"{ref} with content {content_hash[:12]} is no longer in the library")
            return vector_data(obj) if isinstance(obj, SteeringVector) else probe_data(obj)

        resolved[ref] = host.cache.get(f"{'vec' if is_vector else 'prb'}:{content_hash}", load)
    return resolved


def load_deployment(deployment: ModelDeployment) -> HostedModel:
    """Load ``deployment``'s engine with this process's settings (once per process: ``host.model``)."""
    options: dict[str, Any] = {}
    if deployment.engine == "vllm" and settings.STEERLAB_VLLM_KV_CACHE_BYTES:
        options["kv_cache_bytes"] = settings.STEERLAB_VLLM_KV_CACHE_BYTES
    return load_model(
        deployment.engine,
        deployment.name,
        deployment.hf_id_or_path,
        revision=deployment.revision,
        max_requests=settings.STEERLAB_ENGINE_MAX_REQUESTS,
        min_step_time=settings.STEERLAB_ENGINE_MIN_STEP_MS / 1000.0,
        **options,
    )


def build_request(run: Run, host: EngineHost, model: HostedModel, attempt: int) -> GenerationRequest:
    return generation_request(
        f"run-{run.pk}-{attempt}",
        run.deployment,
        run.spec,
        resolve_refs(run.content_hashes, host),
        model.tokenizer,
        run.prompt_tokens,
        run.sampling,
        run.overrides,
        run.scheduled,
    )


def generation_request(
    request_id: str,
    deployment: ModelDeployment,
    spec: dict[str, Any] | None,
    resolved: dict[str, VectorData | ProbeData],
    tokenizer: Any,
    prompt_tokens: Sequence[int],
    sampling: dict[str, Any],
    overrides: Sequence[dict[str, Any]] = (),
    scheduled: Sequence[dict[str, Any]] = (),
) -> GenerationRequest:
    """The engine request of one chat turn (a run's, or a batch run's prompt): the recipe compiled
    against the deployment, the sampling parameters as stored, and the overrides and adjustments."""
    recipe = compile_recipe(
        parse_recipe(spec) if spec else None, deployment.shape, resolved, model=deployment.name
    )
    stop = tuple(t for t in (getattr(tokenizer, "eos_token_id", None),) if isinstance(t, int))
    return GenerationRequest(
        request_id=request_id,
        prompt_tokens=tuple(prompt_tokens),
        recipe=recipe,
        sampling=SamplingParams(
            max_new_tokens=int(sampling["max_new_tokens"]),
            temperature=float(sampling["temperature"]),
            top_p=float(sampling["top_p"]),
            seed=int(sampling["seed"]),
            stop_token_ids=stop,
            top_logprobs=int(sampling.get("top_logprobs", 0)),
        ),
        overrides=tuple(Adjustment.model_validate(o) for o in overrides),
        scheduled=tuple(
            (
                int(a["step"]),
                Adjustment.model_validate({k: a[k] for k in ("index", "scale", "enabled") if k in a}),
            )
            for a in scheduled
        ),
    )


# --------------------------------------------------------------------------------------------
# Streaming: publish each event at once, persist them in batches
# --------------------------------------------------------------------------------------------
class EventWriter:
    """Persists the events of every run in this process, one bulk insert per 250 ms at most.

    One writer per process rather than one insert per run: 50 streams cost 4 inserts a second,
    not 200, and the runs' threads never wait for the database to publish.
    """

    def __init__(self, interval: float = FLUSH_SECONDS) -> None:
        self.interval = interval
        self._pending: list[RunEvent] = []
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one insert at a time, in order
        self._thread: threading.Thread | None = None

    def add(self, event: RunEvent) -> None:
        with self._lock:
            self._pending.append(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="steerlab-events", daemon=True)
                self._thread.start()

    def flush(self) -> int:
        """Write everything added so far (before a run's final state is saved); how many."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if batch:
                try:
                    _insert_events(batch)
                except Exception:
                    with self._lock:  # keep them for the next try, in order
                        self._pending[:0] = batch
                    raise
            return len(batch)

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                if not self.flush():
                    connections.close_all()  # idle: hold no connection
            except Exception:  # the database may be briefly away: the events wait for the next tick
                log.exception("playground.events_write_failed")
                connections.close_all()


def _insert_events(batch: list[RunEvent]) -> None:
    """Insert ``batch``: COPY on PostgreSQL, a bulk INSERT elsewhere.

    The writer shares its process's GIL with the publisher: the ORM's per-row work stalled
    publishing for tens of milliseconds per batch (the p99 of benchmarks/stream_latency.py), while
    COPY's rows are written by psycopg's C code.
    """
    connection = connections[RunEvent.objects.db]
    if connection.vendor != "postgresql":
        RunEvent.objects.bulk_create(batch, batch_size=100)
        return
    table = RunEvent._meta.db_table
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg 3's cursor under Django's wrapper
        with raw.copy(f"COPY {table} (run_id, attempt, seq, payload) FROM STDIN") as copy:
            for event in batch:
                copy.write_row((event.run_id, event.attempt, event.seq, json.dumps(event.payload)))


_writer = EventWriter()


@dataclass
class EventSink:
    """Numbers and publishes one attempt's events, and hands them to the process's writer."""

    host: EngineHost
    run_id: int
    conversation_id: int
    attempt: int
    seq: int = 0
    writer: EventWriter = _writer

    def frame(self, event_type: str, **data: Any) -> dict[str, Any]:
        """The next numbered frame (neither published nor stored yet)."""
        self.seq += 1
        return {"type": event_type, "run": self.run_id, "attempt": self.attempt, "seq": self.seq, **data}

    def emit(self, event_type: str, **data: Any) -> None:
        frame = self.frame(event_type, **data)
        self.publish(frame)  # first: latency matters, and the database copy is for resume
        self.writer.add(self.row(frame))

    def row(self, frame: dict[str, Any]) -> RunEvent:
        return RunEvent(run_id=self.run_id, attempt=self.attempt, seq=frame["seq"], payload=frame)

    def publish(self, frame: dict[str, Any]) -> None:
        self.host.publish(conversation_group(self.conversation_id), frame)


@dataclass
class _Transcript:
    prompt_len: int
    probe_columns: list[int]
    text_stream: TextStream  # the answer's text, given out a token frame at a time
    tokens: list[int] = field(default_factory=list)
    reads: dict[int, dict[int, float]] = field(default_factory=dict)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    engine: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.text_stream.text

    @property
    def stopped(self) -> bool:
        """A stop string was generated: what the engine sends after it is dropped."""
        return self.text_stream.stopped

    def reads_blob(self) -> bytes:
        if not self.probe_columns or not self.reads:
            return b""
        positions = self.prompt_len + len(self.tokens)
        table = np.full((positions, len(self.probe_columns)), np.nan, dtype="<f2")
        for position, scores in self.reads.items():
            if position < positions:
                for c, index in enumerate(self.probe_columns):
                    if index in scores:
                        table[position, c] = scores[index]
        return table.tobytes()


def decode_text(tokenizer: Any, ids: list[int]) -> str:
    """Token ids as text, each on its own (a top-k alternative's, a lens' token)."""
    return clean(str(tokenizer.decode(ids, skip_special_tokens=True)))


def _on_event(event: Any, sink: EventSink, t: _Transcript, tokenizer: Any) -> FinishedEvent | None:
    if isinstance(event, TokenEvent):
        if t.stopped:
            return None
        t.tokens.append(event.token_id)
        delta = t.text_stream.push(event.token_id)
        extra: dict[str, Any] = {}
        if event.top:  # asked for (top_logprobs): [token id, its text, logprob], most likely first
            extra["top"] = [[tid, decode_text(tokenizer, [tid]), round(lp, 4)] for tid, lp in event.top]
        sink.emit(
            "token",
            index=event.index,
            token_id=event.token_id,
            text=delta,
            logprob=round(event.logprob, 4),
            **extra,
        )
    elif isinstance(event, ReadEvent):
        if t.stopped and event.position >= t.prompt_len + len(t.tokens):
            return None  # a read of a token dropped after the stop
        t.reads[event.position] = dict(event.probes)
        lens = {
            str(i): {
                "ids": list(ids),
                "tokens": [decode_text(tokenizer, [tid]) for tid in ids],
                "probs": [round(p, 4) for p in probs],
            }
            for i, (ids, probs) in event.lens.items()
        }
        sink.emit(
            "reads",
            position=event.position,
            index=event.position - t.prompt_len,
            probes={str(i): round(float(v), 4) for i, v in event.probes.items()},
            lens=lens,
        )
    elif isinstance(event, AdjustedEvent):
        entry = {"step": event.index, **event.adjustment.model_dump(exclude_none=True)}
        t.adjustments.append(entry)
        sink.emit("adjusted", **entry)
    elif isinstance(event, FinishedEvent):
        return event
    return None


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """How executing a run or a job ended (the Celery task retries ``busy`` after ``retry_in``)."""

    status: str  # done / stopped / failed / cancelled / skipped / busy / handed_back (jobs)
    detail: str = ""
    retry_in: float = 0.0


def execute_run(run_id: int, host: EngineHost, *, worker: str | None = None) -> Outcome:
    """Run ``run_id`` to its end on ``host``'s engine (see the module docstring)."""
    worker = worker or worker_id()
    state = lease_state(run_id)
    if state is None:
        return Outcome("skipped", "no such run")
    if state[0] not in (RunStatus.QUEUED, RunStatus.RUNNING):
        return Outcome("skipped", f"already {state[0]}")
    stream = host.open_run(control_group(run_id), detach_grace=float(settings.STEERLAB_DETACH_GRACE_SECONDS))
    try:
        attempt = claim_run(run_id, worker)
        if attempt is None:
            return Outcome(*leases.refusal(Run, run_id, "run"))
        log.info("playground.run_claimed", extra={"run": run_id, "attempt": attempt, "worker": worker})
        run = Run.objects.select_related("deployment", "user", "recipe_version").get(pk=run_id)
        with host.running():
            outcome = _generate(run, attempt, worker, host, stream)
        _safely(record_engine_status, host, run.deployment.name)
        return outcome
    finally:
        stream.close()


def _safely(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # status is informative: never let it fail a run
        log.exception("playground.status_failed")


def record_engine_status(host: EngineHost, deployment: str) -> None:
    """Publish this worker's engine load for the browser (``status`` on the socket)."""
    hosted = host.loaded(deployment)
    cache.set(
        engine_status_key(deployment),
        {
            "model": deployment,
            "engine": hosted.info.engine if hosted is not None else None,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "active_runs": host.active_runs,
            "max_requests": settings.STEERLAB_ENGINE_MAX_REQUESTS,
            "updated_at": timezone.now().isoformat(),
        },
        timeout=settings.STEERLAB_RUN_LEASE_SECONDS * 4,
    )


def _generate(run: Run, attempt: int, worker: str, host: EngineHost, stream: Any) -> Outcome:
    run_id = run.pk
    sink = EventSink(host, run.pk, run.conversation_id, attempt)
    sink.emit("started", run_kind=run.kind, prompt_tokens=len(run.prompt_tokens))
    try:
        # Rights may have been lost since the run was queued (or first attempted): check again.
        check_references(run.user, run.references())
        model = host.model(run.deployment.name, lambda: load_deployment(run.deployment))
        _safely(record_engine_status, host, run.deployment.name)
        request = build_request(run, host, model, attempt)
        transcript = _Transcript(
            len(run.prompt_tokens),
            sorted({p.index for p in request.recipe.probes}),
            TextStream(model.tokenizer, run.sampling.get("stop", ())),
        )
        info = model.engine.info()
        transcript.engine = {"engine": info.engine, "version": info.version}
        stream.submit(model, request)
    except Exception as exc:  # a reference no longer visible, bad stored data, a refused request
        log.warning("playground.run_refused", extra={"run": run_id, "error": str(exc)})
        return _finish(run, attempt, worker, sink, None, "error", str(exc))
    renew_every = settings.STEERLAB_RUN_LEASE_SECONDS / 3
    renewed_at = time.monotonic()
    finished: FinishedEvent | None = None
    stopping = False
    try:
        while finished is None:
            event = stream.next_event(timeout=FLUSH_SECONDS / 2)
            if event is not None:
                finished = _on_event(event, sink, transcript, model.tokenizer)
                if transcript.stopped and not stopping:
                    stream.finish(len(transcript.tokens) - 1)  # once that token's reads are out
                    stopping = True
            if time.monotonic() - renewed_at >= renew_every:
                _renew(run_id, worker, attempt)
                renewed_at = time.monotonic()
    except LeaseLost as exc:
        log.warning("playground.lease_lost", extra={"run": run_id, "error": str(exc)})
        model.engine.abort(request.request_id)
        return Outcome("failed", str(exc))
    except Exception as exc:
        log.exception("playground.run_failed", extra={"run": run_id})
        model.engine.abort(request.request_id)
        return _finish(run, attempt, worker, sink, transcript, "error", f"engine failure: {exc}")
    reason = finished.reason
    if transcript.stopped and reason != "error":
        reason = "stop"  # its stop string (the engine may have ended it first: length, a stop)
    return _finish(run, attempt, worker, sink, transcript, reason, finished.error or "")


def _finish(
    run: Run,
    attempt: int,
    worker: str,
    sink: EventSink,
    t: _Transcript | None,
    reason: str,
    error: str,
) -> Outcome:
    status = STATUS_BY_REASON.get(reason, RunStatus.FAILED)
    # The events so far are written first (outside the transaction: the writer holds other runs'
    # too). "finished" is saved with the run's final state and published after it, so a client
    # that sees it finds the run finished in the database (and may replay it at once).
    sink.writer.flush()
    # ``tail``: the text the token frames held back (the end of a character split over tokens, the
    # start of a stop string that never came): the frames' texts and the tail join to ``text``.
    tail = t.text_stream.end() if t is not None else ""
    final = sink.frame(
        "finished", status=status, reason=reason, text=t.text if t else "", tail=tail, error=error
    )
    with transaction.atomic():
        fields: dict[str, Any] = {
            "status": status,
            "finish_reason": reason,
            "error": error,
            "finished_at": timezone.now(),
            "lease_expires_at": None,
        }
        if t is not None:
            fields.update(
                tokens=t.tokens,
                text=t.text,
                adjustments=t.adjustments,
                reads=t.reads_blob(),
                read_columns=t.probe_columns,
                engine=t.engine,
            )
        written = Run.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, lease_owner=worker, attempt=attempt
        ).update(**fields)
        if not written:
            return Outcome("failed", "the lease was lost before the run could be saved")
        sink.row(final).save(force_insert=True)
        if run.answer_id is not None and t is not None:
            Message.objects.filter(pk=run.answer_id).update(content=t.text)
    sink.publish(final)
    log.info("playground.run_finished", extra={"run": run.pk, "status": status, "attempt": attempt})
    count_finished_run(status)
    return Outcome(status, error)

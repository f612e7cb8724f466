"""Executing a job on a worker: claim it, run its missing batches through the shared engine, finish.

``execute_job`` is what the Celery task wraps (and the embedded dispatcher calls in a thread). It
is idempotent and resumable: a finished job is never re-run; a job whose worker died is taken over
as its next attempt and skips every batch already stored. Each stored batch is published as a
progress frame (``{type: "job", job, status, done, total}``) on the job's group, and persisted in
the job row (``done_batches``), so a page that opens later reads the same state.

A kind (``webapp.jobs.kinds``) says how a job's input splits into batches, computes one batch on
the engine, and finishes from all batches (saving what it made in the same transaction that marks
the job done).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from interventions.compiler import Site
from webapp import leases
from webapp.jobs.models import Job, JobBatch, JobStatus
from webapp.leases import LeaseLost
from webapp.library.references import ReferenceRefused, check_references
from webapp.playground.execution import Outcome, load_deployment, worker_id
from workers.drain import draining
from workers.engines.base import Collect, CollectedEvent, Event, FinishedEvent, GenerationRequest, Reduce
from workers.engines.loading import HostedModel
from workers.host import EngineHost

log = logging.getLogger(__name__)


def job_group(job_id: int) -> str:
    return f"job.{job_id}"


class JobFailed(Exception):
    """A job that cannot go on (its input changed, the engine refused it): the message says why."""


@dataclass
class JobContext:
    """What a kind's batch code may use: the job, the engine, and lease-keeping waits."""

    job: Job
    host: EngineHost
    model: HostedModel
    attempt: int
    renew: Callable[[], None]
    cache: dict[str, Any] = field(default_factory=dict)  # per attempt: what a kind loads once
    _requests: int = 0

    def tokens(self, text: str) -> tuple[int, ...]:
        """``text`` tokenized as a plain prompt (no chat template), cut to the prompt limit."""
        ids = [int(t) for t in self.model.tokenizer(text)["input_ids"]][: settings.STEERLAB_MAX_PROMPT_TOKENS]
        if not ids:
            raise JobFailed(f"an example tokenizes to nothing: {text[:40]!r}")
        return tuple(ids)

    def request_id(self) -> str:
        self._requests += 1
        return f"job-{self.job.pk}-{self.attempt}-{self._requests}"

    def run(
        self, requests: list[GenerationRequest], until: Callable[[int, list[int]], bool] | None = None
    ) -> list[list[Event]]:
        """Run ``requests`` together on the engine; each one's events (``until``: see
        ``EngineHost.start_requests``). The lease is renewed while they run; a request that ends
        in error fails the job."""
        future = self.host.start_requests(self.model, requests, until)
        while True:
            try:
                results = future.result(timeout=settings.STEERLAB_RUN_LEASE_SECONDS / 3)
                break
            except FutureTimeout:
                try:
                    self.renew()
                except LeaseLost:
                    future.cancel()  # the host aborts every request still running
                    raise
        for events in results:
            end = events[-1] if events else None
            if not isinstance(end, FinishedEvent) or end.reason == "error":
                raise JobFailed(f"the engine failed a request: {getattr(end, 'error', None) or 'no result'}")
        return results

    def collect(
        self, prompts: list[tuple[int, ...]], sites: list[Site], reduce: Reduce
    ) -> list[dict[Site, torch.Tensor]]:
        """Each prompt's unsteered activations at ``sites`` (float32), one forward pass per prompt."""
        requests = [
            GenerationRequest(self.request_id(), p, collect=Collect(tuple(sites), reduce)) for p in prompts
        ]
        out: list[dict[Site, torch.Tensor]] = []
        for events in self.run(requests):
            collected = next((e for e in events if isinstance(e, CollectedEvent)), None)
            if collected is None:
                raise JobFailed("the engine returned no activations")
            out.append(dict(collected.activations))
        return out


class Kind(Protocol):
    batch_size: int

    def items(self, job: Job) -> list[Any]:
        """The job's input in a fixed order (checked against the hashes in its params)."""
        ...

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes: ...

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        """Sets ``ctx.job.result`` (and what the job made) from every item and every stored batch;
        runs inside the finishing transaction."""
        ...


def execute_job(job_id: int, host: EngineHost, *, worker: str | None = None) -> Outcome:
    """Run ``job_id`` to its end on ``host``'s engine (see the module docstring)."""
    from webapp.jobs.kinds import kind_of

    worker = worker or worker_id()
    state = leases.state(Job, job_id)
    if state is None:
        return Outcome("skipped", "no such job")
    attempt = leases.claim(
        Job,
        job_id,
        worker,
        lease_seconds=settings.STEERLAB_RUN_LEASE_SECONDS,
        max_attempts=settings.STEERLAB_JOB_MAX_ATTEMPTS,
        exhausted={"error": "its worker stopped answering and no attempt is left"},
    )
    if attempt is None:
        return Outcome(*leases.refusal(Job, job_id, "job"))
    job = Job.objects.select_related("deployment", "owner", "team", "dataset", "board").get(pk=job_id)

    def renew() -> None:
        leases.renew(Job, job_id, worker, attempt, settings.STEERLAB_RUN_LEASE_SECONDS)

    held = Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, lease_owner=worker, attempt=attempt)
    log.info("jobs.claimed", extra={"job": job_id, "attempt": attempt, "worker": worker})
    try:
        # Rights may have been lost since the job was queued (or last ran): check again.
        check_references(job.owner, job.references())
        kind = kind_of(job.kind)
        model = host.model(job.deployment.name, lambda: load_deployment(job.deployment))
        ctx = JobContext(job, host, model, attempt, renew)
        items = kind.items(job)
        batches = [items[i : i + kind.batch_size] for i in range(0, len(items), kind.batch_size)]
        stored = set(JobBatch.objects.filter(job=job).values_list("index", flat=True))
        if not held.update(total_batches=len(batches), done_batches=len(stored)):
            raise LeaseLost(f"job {job_id} was taken over or cancelled")
        publish_state(host, job_id)
        with host.running():
            for index, batch in enumerate(batches):
                if index in stored:
                    continue  # computed by an earlier attempt: resume after it
                if draining():  # SIGTERM: another worker resumes from the stored batches
                    return _hand_back(host, job_id, worker, attempt)
                renew()  # also notices a cancel (the status is no longer running)
                data = kind.run_batch(ctx, batch)
                try:
                    with transaction.atomic():
                        JobBatch.objects.create(job=job, index=index, attempt=attempt, data=data)
                        stored.add(index)
                        if not held.update(done_batches=len(stored)):
                            raise LeaseLost(f"job {job_id} was taken over or cancelled")
                except IntegrityError:  # another attempt stored it: we are no longer the job's worker
                    raise LeaseLost(f"job {job_id} batch {index} was stored by another worker") from None
                publish_state(host, job_id)
            blobs = [
                bytes(b)
                for b in JobBatch.objects.filter(job=job).order_by("index").values_list("data", flat=True)
            ]
            with _heartbeat(renew), transaction.atomic():  # training may outlast a lease
                kind.finish(ctx, items, blobs)
                if not held.update(
                    status=JobStatus.DONE,
                    result=job.result,
                    vector=job.vector,
                    probe=job.probe,
                    finished_at=timezone.now(),
                    lease_expires_at=None,
                ):
                    raise LeaseLost(f"job {job_id} was taken over or cancelled before it could finish")
        publish_state(host, job_id)
        log.info("jobs.done", extra={"job": job_id, "attempt": attempt})
        return Outcome("done")
    except LeaseLost as exc:
        status = leases.state(Job, job_id)
        log.warning("jobs.lease_lost", extra={"job": job_id, "error": str(exc)})
        return Outcome(status[0] if status else "skipped", str(exc))
    except Exception as exc:
        expected = isinstance(exc, (JobFailed, ReferenceRefused, ValueError))
        if not expected:
            log.exception("jobs.failed", extra={"job": job_id})
        message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        held.update(status=JobStatus.FAILED, error=message, finished_at=timezone.now(), lease_expires_at=None)
        publish_state(host, job_id)
        return Outcome("failed", message)


def _hand_back(host: EngineHost, job_id: int, worker: str, attempt: int) -> Outcome:
    """Queue the job again for another worker (this one is draining); the task re-queues its message."""
    if not leases.release(Job, job_id, worker, attempt):
        current = leases.state(Job, job_id)
        return Outcome(current[0] if current else "skipped", "taken over or cancelled while draining")
    log.info("jobs.handed_back", extra={"job": job_id, "attempt": attempt})
    publish_state(host, job_id)
    return Outcome("handed_back")


@contextlib.contextmanager
def _heartbeat(renew: Callable[[], None]) -> Iterator[None]:
    """Renew the lease from a thread while the caller computes without touching the engine."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.STEERLAB_RUN_LEASE_SECONDS / 3):
                renew()
        except LeaseLost:  # the final conditional update will notice and give up
            log.warning("jobs.heartbeat_lost")
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name="steerlab-job-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def job_frame(job_id: int) -> dict[str, Any] | None:
    """The job's persisted state as a progress frame (what the socket sends and a page reads)."""
    row = (
        Job.objects.filter(pk=job_id)
        .values("status", "attempt", "done_batches", "total_batches", "error")
        .first()
    )
    if row is None:
        return None
    return {
        "type": "job",
        "job": job_id,
        "status": row["status"],
        "attempt": row["attempt"],
        "done": row["done_batches"],
        "total": row["total_batches"],
        "error": row["error"],
    }


def publish_state(host: EngineHost, job_id: int) -> None:
    frame = job_frame(job_id)
    if frame is not None:
        host.publish(job_group(job_id), frame)

"""A job interrupted on one real Celery worker (killed, or drained by SIGTERM) and finished by a second
worker: the harness the worker-loss tests of jobs share, and the checks on what the job stored."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.live import start_worker, stop_worker, wait_ready
from webapp.jobs.models import Job, JobBatch


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` every 0.1 s until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Handover:
    job: Job  # as it ended, on the second worker
    at_interrupt: Job  # as the first worker left it
    kept: list[tuple[int, int, Any]]  # (index, attempt, created_at) of the batches stored by then
    exit_code: int | None  # the first worker's


def hand_over(
    stack: Any,
    env: dict[str, str],
    tmp_path: Path,
    submit: Callable[[], Job],
    *,
    after_batches: int,
    sig: int,
) -> Handover:
    """Submit a job to a first worker, send it ``sig`` once ``after_batches`` are stored, wait for
    it to exit, then start a second worker and wait for the job to end."""
    first = start_worker(env, stack.queue, "first-" + stack.queue, tmp_path / "first.log")
    second = None
    try:
        wait_ready(first, tmp_path / "first.log")
        job = submit()
        wait_until(lambda: Job.objects.get(pk=job.pk).done_batches >= after_batches, 120, "batches")
        os.killpg(first.pid, sig)
        first.wait(timeout=60)
        at_interrupt = Job.objects.get(pk=job.pk)
        kept = list(JobBatch.objects.filter(job=job).values_list("index", "attempt", "created_at"))
        second = start_worker(env, stack.queue, "second-" + stack.queue, tmp_path / "second.log")
        wait_ready(second, tmp_path / "second.log")
        wait_until(lambda: not Job.objects.get(pk=job.pk).active, 180, "the job to end")
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
    job.refresh_from_db()
    return Handover(job, at_interrupt, kept, first.returncode)


def assert_resumed(handover: Handover, total: int, attempt: int) -> None:
    """Every batch stored once: those kept from before the interrupt untouched, the rest by ``attempt``."""
    rows = list(
        JobBatch.objects.filter(job=handover.job)
        .order_by("index")
        .values_list("index", "attempt", "created_at")
    )
    kept = handover.kept
    assert [i for i, _, _ in rows] == list(range(total))  # every batch once
    assert rows[: len(kept)] == sorted(kept)  # the first worker's batches kept as they were
    assert all(a == attempt for _, a, _ in rows[len(kept) :])  # only the rest recomputed

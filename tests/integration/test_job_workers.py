"""Jobs on the live stacks: progress over ``/ws/jobs/`` (embedded and a real Celery worker), the
socket's refusals, and a worker killed (SIGKILL) mid-job — the next worker resumes from the last
completed batch, and no batch is computed twice."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from support.handover import assert_resumed, hand_over
from support.live import Socket, run_async

from webapp.asgi import application
from webapp.jobs import services as jobs
from webapp.jobs.models import Job, JobStatus
from webapp.library import services as library

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def _rows(n: int) -> list[dict[str, str]]:
    return [
        {"text": f"example number {i} {'QQQ' if i % 2 else 'ok'}", "label": "yes" if i % 2 else "no"}
        for i in range(n)
    ]


def test_job_progress_streams_to_watchers_and_is_persisted(
    stack: Any, stack_deployment: Any, alice: Any, carol: Any, ws_headers: Any
) -> None:
    data = library.create_dataset_rows(alice, "train", "labelled", _rows(48))  # 3 batches
    headers, carol_headers = ws_headers(alice), ws_headers(carol)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        ws = Socket(application, "/ws/jobs/", headers)
        assert (await ws.connect())[0]
        job = await database_sync_to_async(jobs.train_probe)(
            alice, stack_deployment, dataset_id=data.pk, name="p", layer=1
        )
        await ws.send(type="watch", job=job.pk)
        final = await ws.until(
            lambda f: f.get("job") == job.pk and f["status"] in ("done", "failed"), timeout=180
        )
        assert final["status"] == "done", final
        # Someone who cannot see the job learns nothing about it; bad messages change nothing.
        other = Socket(application, "/ws/jobs/", carol_headers)
        assert (await other.connect())[0]
        await other.send(type="watch", job=job.pk)
        await other.send_text("not json")
        await other.send(type="delete", job=job.pk)
        await other.send(type="watch", job="1")
        refusals = [await other.receive() for _ in range(4)]
        await other.close()
        await ws.close()
        return [f for f in ws.frames if f.get("type") == "job"], refusals, job.pk

    frames, refusals, job_id = run_async(scenario())
    done = [f["done"] for f in frames]
    assert done == sorted(done) and done[-1] == 3 and frames[-1]["total"] == 3
    assert [r["code"] for r in refusals] == ["not_found", "invalid", "unknown_type", "invalid"]
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.done_batches, job.total_batches) == (JobStatus.DONE, 3, 3)
    assert job.probe is not None and job.probe.metrics["n_heldout"] > 0


def test_a_killed_worker_s_job_resumes_from_its_last_completed_batch(
    own_worker_stack: Any, alice: Any, tmp_path: Path
) -> None:
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = library.register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    data = library.create_dataset_rows(alice, "train", "labelled", _rows(400))  # 25 batches of 16
    env = {
        **stack.worker_env,
        "STEERLAB_RUN_LEASE_SECONDS": "3",
        # Every engine step lasts at least this long: the job takes seconds, so it can be killed
        # in the middle.
        "STEERLAB_ENGINE_MIN_STEP_MS": "150",
    }
    handover = hand_over(
        stack,
        env,
        tmp_path,
        lambda: jobs.train_probe(alice, deployment, dataset_id=data.pk, name="p", layer=1),
        after_batches=3,
        sig=signal.SIGKILL,
    )
    # The second worker's reaper finds the expired lease, re-queues the job and runs it.
    kept, job = handover.kept, handover.job
    assert 3 <= len(kept) < 25 and all(attempt == 1 for _, attempt, _ in kept)
    assert job.status == JobStatus.DONE, job.error
    assert job.attempt == 2 and (job.done_batches, job.total_batches) == (25, 25)
    assert_resumed(handover, total=25, attempt=2)
    assert job.probe is not None

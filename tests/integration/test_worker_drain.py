"""SIGTERM to a real Celery worker mid-work: it drains. It takes no new task, its running run
completes (streamed once, never re-run), its running job hands itself back between batches and
another worker resumes it — nothing is lost or done twice."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from support.handover import assert_resumed, hand_over, wait_until
from support.live import Socket, run_async, start_worker, stop_worker, wait_ready

from webapp.asgi import application
from webapp.jobs import services as jobs
from webapp.jobs.models import JobStatus
from webapp.library import services as library
from webapp.playground import services
from webapp.playground.models import Run, RunEvent, RunStatus
from workers import heartbeat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(400)]


def _entry(name: str) -> dict[str, Any] | None:
    """The heartbeat entry of the worker started as ``name`` (its Celery hostname), if fresh."""
    return next((e for e in heartbeat.workers() if str(e.get("name", "")).startswith(name + "@")), None)


def _terminate(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)


def test_sigterm_mid_run_finishes_the_run_and_takes_no_new_one(
    own_worker_stack: Any, alice: Any, ws_headers: Any, tmp_path: Path
) -> None:
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = library.register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    streaming = services.create_conversation(alice, deployment)
    later = services.create_conversation(alice, deployment)
    headers = ws_headers(alice)
    env = {
        **stack.worker_env,
        "STEERLAB_WORKER_HEARTBEAT_SECONDS": "1",
        # Every engine step lasts at least this long: the run is still going when SIGTERM comes.
        "STEERLAB_ENGINE_MIN_STEP_MS": "100",
    }
    first_name, second_name = "first-" + stack.queue, "second-" + stack.queue
    first = start_worker(env, stack.queue, first_name, tmp_path / "first.log")
    second = None
    try:
        wait_ready(first, tmp_path / "first.log")
        wait_until(lambda: _entry(first_name), 30, "the first worker's heartbeat")

        async def scenario() -> tuple[Socket, int, int, dict[str, Any]]:
            ws = Socket(application, f"/ws/conversations/{streaming.pk}/", headers)
            assert (await ws.connect())[0]
            reply = await ws.request(
                type="generate", content="Keep going", sampling={"temperature": 0, "max_new_tokens": 60}
            )
            run_id = reply["runs"][0]["id"]
            await ws.until(lambda f: f.get("run") == run_id and f["type"] == "token" and f["index"] == 5)
            _terminate(first)
            # A run sent during the drain waits for another worker.
            waiting = await database_sync_to_async(services.start_turn)(alice, later, "Wait for me")
            entry = await database_sync_to_async(wait_until)(
                lambda: (e := _entry(first_name)) and e["draining"] and e, 10, "the worker to say it drains"
            )
            final = await ws.finish(run_id, timeout=120)
            await ws.close()
            return ws, run_id, waiting[0].pk, final | {"entry": entry}

        ws, run_id, waiting_id, final = run_async(scenario())
        assert final["status"] == RunStatus.DONE
        first.wait(timeout=60)  # exits by itself once its run is done
        assert first.returncode == 0
        assert _entry(first_name) is None  # gone from readiness at once, not after three beats
        # The drained worker never touched the run sent during the drain.
        waiting = Run.objects.get(pk=waiting_id)
        assert (waiting.status, waiting.attempt, waiting.lease_owner) == (RunStatus.QUEUED, 0, "")

        second = start_worker(env, stack.queue, second_name, tmp_path / "second.log")
        wait_ready(second, tmp_path / "second.log")
        wait_until(lambda: not Run.objects.get(pk=waiting_id).active, 120, "the waiting run to be run")
    finally:
        stop_worker(first, signal.SIGKILL)
        if second is not None:
            stop_worker(second)

    run = Run.objects.get(pk=run_id)
    assert (run.status, run.attempt, len(run.tokens)) == (RunStatus.DONE, 1, 60)  # run once, whole
    rows = list(RunEvent.objects.filter(run=run).values_list("attempt", "seq"))
    assert rows == [(1, s) for s in range(1, len(rows) + 1)]  # every event once, in order
    keys = [(f["attempt"], f["seq"]) for f in ws.of(run_id)]
    assert len(keys) == len(set(keys)) == len(rows)  # the browser saw each once
    assert ws.tokens(run_id) == run.tokens
    waiting = Run.objects.get(pk=waiting_id)
    assert (waiting.status, waiting.attempt) == (RunStatus.DONE, 1)  # by the second worker, once


def test_sigterm_mid_job_hands_it_back_and_another_worker_resumes(
    own_worker_stack: Any, alice: Any, tmp_path: Path
) -> None:
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = library.register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    rows = [
        {"text": f"example {i} {'QQQ' if i % 2 else 'ok'}", "label": "yes" if i % 2 else "no"}
        for i in range(400)
    ]
    data = library.create_dataset_rows(alice, "train", "labelled", rows)  # 25 batches of 16
    env = {**stack.worker_env, "STEERLAB_ENGINE_MIN_STEP_MS": "150"}
    handover = hand_over(
        stack,
        env,
        tmp_path,
        lambda: jobs.train_probe(alice, deployment, dataset_id=data.pk, name="p", layer=1),
        after_batches=3,
        sig=signal.SIGTERM,
    )
    # The drained worker exited between two batches, without waiting for the job's end...
    assert handover.exit_code == 0
    handed, kept = handover.at_interrupt, handover.kept
    # ...queued again at once (no lease to wait out), its attempt given back: a drain is no failure.
    assert (handed.status, handed.attempt, handed.lease_owner) == (JobStatus.QUEUED, 0, "")
    assert 3 <= handed.done_batches == len(kept) < 25
    job = handover.job
    assert job.status == JobStatus.DONE, job.error
    assert job.attempt == 1 and (job.done_batches, job.total_batches) == (25, 25)
    assert_resumed(handover, total=25, attempt=1)
    assert job.probe is not None

"""A worker process killed mid-run (SIGKILL): the run is re-run once as attempt 2, or fails when
no attempt is left — never duplicated events within an attempt, never stuck in ``running``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from support.live import Socket, run_async, start_worker, stop_worker, wait_ready

from webapp.asgi import application
from webapp.library.services import register_deployment
from webapp.playground import services
from webapp.playground.examples import create_example_recipe
from webapp.playground.models import Run, RunEvent, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

LEASE_SECONDS = "3"


@pytest.mark.parametrize(("max_attempts", "expected"), [(2, RunStatus.DONE), (1, RunStatus.FAILED)])
def test_a_killed_worker_s_run_is_rerun_once_or_failed(
    own_worker_stack: Any, alice: Any, ws_headers: Any, tmp_path: Path, max_attempts: int, expected: str
) -> None:
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    version = create_example_recipe(alice, deployment)
    conversation = services.create_conversation(alice, deployment, recipe_version=version)
    headers = ws_headers(alice)
    env = {
        **stack.worker_env,
        "STEERLAB_RUN_LEASE_SECONDS": LEASE_SECONDS,
        "STEERLAB_RUN_MAX_ATTEMPTS": str(max_attempts),
        # The browser stays connected throughout; a long grace keeps detach out of the picture.
        "STEERLAB_DETACH_GRACE_SECONDS": "60",
    }
    first = start_worker(env, stack.queue, "first-" + stack.queue, tmp_path / "first.log")
    second = None
    try:
        wait_ready(first, tmp_path / "first.log")

        async def scenario() -> tuple[Socket, int]:
            nonlocal second
            ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
            assert (await ws.connect())[0]
            reply = await ws.request(
                type="generate", content="Keep going", sampling={"temperature": 0, "max_new_tokens": 120}
            )
            run_id = reply["runs"][0]["id"]
            await ws.until(lambda f: f.get("run") == run_id and f["type"] == "token" and f["index"] == 5)
            stop_worker(first, signal.SIGKILL)
            second = start_worker(env, stack.queue, "second-" + stack.queue, tmp_path / "second.log")
            await database_sync_to_async(wait_ready)(second, tmp_path / "second.log")
            final = await ws.finish(run_id, timeout=180) if max_attempts > 1 else None
            if final is None:  # no attempt left: the reaper fails the run (no worker publishes)
                await database_sync_to_async(_wait_inactive)(run_id, 60)
            await ws.close()
            return ws, run_id

        ws, run_id = run_async(scenario())
    finally:
        stop_worker(first, signal.SIGKILL)
        if second is not None:
            stop_worker(second)

    run = Run.objects.get(pk=run_id)
    assert run.status == expected
    assert run.attempt == max_attempts
    # Persisted events: within each attempt, every seq once, from 1, without gaps.
    rows = list(RunEvent.objects.filter(run=run).values_list("attempt", "seq", "payload"))
    for attempt in {a for a, _, _ in rows}:
        seqs = [s for a, s, _ in rows if a == attempt]
        assert seqs == list(range(1, len(seqs) + 1))
    # What the browser saw: no (attempt, seq) twice.
    keys = [(f["attempt"], f["seq"]) for f in ws.of(run_id)]
    assert len(keys) == len(set(keys))
    if expected == RunStatus.DONE:
        # Attempt 2 ran from the start; its tokens are the run's tokens, streamed once each.
        second_tokens = [p["token_id"] for a, _, p in rows if a == 2 and p["type"] == "token"]
        assert second_tokens == run.tokens and len(run.tokens) == 120
        assert [f["token_id"] for f in ws.of(run_id, "token") if f["attempt"] == 2] == run.tokens
        # Attempt 1's tokens, as far as they went, are the same (same seed, same engine).
        first_tokens = [p["token_id"] for a, _, p in rows if a == 1 and p["type"] == "token"]
        assert first_tokens == run.tokens[: len(first_tokens)]
    else:
        assert "stopped answering" in run.error


def _wait_inactive(run_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Run.objects.get(pk=run_id).active:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is still {Run.objects.get(pk=run_id).status} after {timeout} s")


def test_a_waiting_run_hears_its_queue_position_change(
    own_worker_stack: Any, alice: Any, ws_headers: Any
) -> None:
    """No worker serves this queue: runs wait, and a run ahead leaving moves the next one up."""
    from interventions.tiny import build_tiny

    stack = own_worker_stack
    deployment = register_deployment("tiny", str(build_tiny()), queue_name=stack.queue)
    conversation = services.create_conversation(alice, deployment)
    headers = ws_headers(alice)

    async def scenario() -> list[dict[str, Any]]:
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        first = (await ws.request(type="generate", content="one", sampling={"max_new_tokens": 4}))["runs"][0][
            "id"
        ]
        second = (await ws.request(type="generate", content="two", sampling={"max_new_tokens": 4}))["runs"][
            0
        ]["id"]
        await ws.until(lambda f: f["type"] == "queued" and f["run"] == second)
        await ws.request(type="stop", run=first)  # cancelled while queued: no worker involved
        await ws.until(lambda f: f["type"] == "queued" and f["run"] == second and f["position"] == 0)
        await ws.request(type="stop", run=second)
        await ws.until(lambda f: f["type"] == "cancelled" and f["run"] == second)
        await ws.close()
        return [f for f in ws.frames if f["type"] in ("queued", "cancelled")]

    frames = run_async(scenario())  # (the fixture deletes the queue no worker will ever drain)
    runs = list(Run.objects.order_by("pk"))
    second_positions = [f["position"] for f in frames if f["type"] == "queued" and f["run"] == runs[1].pk]
    assert second_positions == [1, 0]
    assert [f["run"] for f in frames if f["type"] == "cancelled"] == [r.pk for r in runs]
    assert all(r.status == RunStatus.CANCELLED for r in runs)

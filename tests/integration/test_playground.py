"""Live chat end to end, on both stacks (embedded, and a real Celery worker on RabbitMQ + Redis).

Each test talks to the ASGI application through ``WebsocketCommunicator`` as a browser would:
the run executes on the stack's engine host, its events come back through the stack's channel
layer, and the database holds what a later reader (resume, replay) needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from channels.db import database_sync_to_async
from support.live import Socket, run_async

from webapp.asgi import application
from webapp.playground import services
from webapp.playground.examples import create_example_recipe
from webapp.playground.models import Message, Run, RunEvent, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture
def version(alice: Any, stack_deployment: Any) -> Any:
    return create_example_recipe(alice, stack_deployment)


@pytest.fixture
def conversation(alice: Any, version: Any) -> Any:
    return services.create_conversation(alice, version.recipe.deployment, recipe_version=version)


def _socket(conversation: Any, headers: Any) -> Socket:
    return Socket(application, f"/ws/conversations/{conversation.pk}/", headers)


def _consecutive(frames: list[dict[str, Any]]) -> None:
    """Frames of one run: each (attempt, seq) once, in order, without gaps."""
    keys = [(f["attempt"], f["seq"]) for f in frames]
    assert keys == sorted(set(keys))
    for attempt in {a for a, _ in keys}:
        seqs = [s for a, s in keys if a == attempt]
        assert seqs == list(range(1, len(seqs) + 1))


def test_chat_turn_streams_tokens_and_probe_scores_and_persists_the_run(
    stack: Any, alice: Any, conversation: Any, ws_headers: Any
) -> None:
    headers = ws_headers(alice)

    async def scenario() -> Socket:
        ws = _socket(conversation, headers)
        assert (await ws.connect())[0]
        reply = await ws.request(
            type="generate", content="Tell me a story", sampling={**GREEDY, "max_new_tokens": 12}
        )
        assert reply["type"] == "runs"
        run_id = reply["runs"][0]["id"]
        final = await ws.finish(run_id)
        assert final["type"] == "finished" and final["status"] == "done" and final["reason"] == "length"
        status = await ws.request(type="status")
        assert status["model"] == "tiny" and status["queued"] == status["running"] == 0
        assert status["engine"]["model"] == "tiny" and status["engine"]["engine"] == "hf"
        assert isinstance(status["engine"]["active_runs"], int) and status["engine"]["max_requests"] >= 1
        await ws.close()
        return ws

    ws = run_async(scenario())
    run = Run.objects.get()
    frames = ws.of(run.pk)
    _consecutive(frames)
    assert frames[0]["type"] == "started"
    assert ws.tokens(run.pk) == run.tokens and len(run.tokens) == 12
    # One probe score per generated token (the last one included), streamed beside the tokens.
    generated_reads = [f for f in ws.of(run.pk, "reads") if f["index"] >= 0]
    assert [f["index"] for f in generated_reads] == list(range(12))
    assert all(set(f["probes"]) == {"1"} and set(f["lens"]) == {"2"} for f in generated_reads)
    # The run is persisted: status, text, the answer message, float16 reads, every event.
    assert run.status == RunStatus.DONE and run.attempt == 1 and run.finish_reason == "length"
    assert run.text == "".join(f["text"] for f in ws.of(run.pk, "token"))
    assert Message.objects.get(pk=run.answer_id).content == run.text
    table = np.frombuffer(bytes(run.reads), dtype="<f2").reshape(-1, len(run.read_columns))
    assert run.read_columns == [1] and table.shape == (len(run.prompt_tokens) + 12, 1)
    streamed = [f["probes"]["1"] for f in generated_reads]
    np.testing.assert_allclose(table[len(run.prompt_tokens) :, 0], streamed, rtol=2e-3, atol=2e-3)
    assert list(RunEvent.objects.filter(run=run).values_list("payload", flat=True)) == frames


def test_adjust_takes_effect_from_the_next_token_is_logged_and_replays(
    stack: Any, alice: Any, conversation: Any, version: Any, ws_headers: Any
) -> None:
    headers = ws_headers(alice)
    sampling = {**GREEDY, "max_new_tokens": 24}
    # The unadjusted reference: the same first turn in a conversation of its own.
    other = services.create_conversation(alice, version.recipe.deployment, recipe_version=version)

    async def scenario() -> tuple[Socket, int, int, int, dict[str, Any]]:
        ref = _socket(other, headers)
        assert (await ref.connect())[0]
        plain = (await ref.request(type="generate", content="Once upon a time", sampling=sampling))["runs"][
            0
        ]["id"]
        await ref.finish(plain)
        await ref.close()
        ws = _socket(conversation, headers)
        assert (await ws.connect())[0]
        adjusted = (await ws.request(type="generate", content="Once upon a time", sampling=sampling))["runs"][
            0
        ]["id"]
        await ws.until(lambda f: f.get("run") == adjusted and f["type"] == "token" and f["index"] == 3)
        ack = await ws.request(type="adjust", run=adjusted, intervention=0, scale=-24.0)
        assert ack["type"] == "ack"
        adjusted_frame = await ws.until(lambda f: f.get("run") == adjusted and f["type"] == "adjusted")
        await ws.finish(adjusted)
        replay = (await ws.request(type="replay", run=adjusted))["runs"][0]["id"]
        await ws.finish(replay)
        await ws.close()
        return ws, plain, adjusted, replay, adjusted_frame

    ws, plain, adjusted, replay, adjusted_frame = run_async(scenario())
    runs = {r.pk: r for r in Run.objects.all()}
    step = adjusted_frame["step"]
    # The engine acknowledged the step it applied the change at: after the 4 tokens seen, never before.
    assert step >= 4
    assert runs[adjusted].adjustments == [{"step": step, "index": 0, "scale": -24.0}]
    # Before that step the tokens are the unadjusted run's; from there on they differ.
    assert runs[adjusted].tokens[:step] == runs[plain].tokens[:step]
    assert runs[adjusted].tokens != runs[plain].tokens
    # Replaying from the log reproduces the adjusted run (same engine, alone: bit-identical).
    assert runs[replay].replay_of_id == adjusted and runs[replay].status == RunStatus.DONE
    assert runs[replay].tokens == runs[adjusted].tokens
    assert [f["step"] for f in ws.of(replay, "adjusted")] == [step]


def test_stop_ends_the_run_within_one_step(
    stack: Any, alice: Any, conversation: Any, ws_headers: Any
) -> None:
    headers = ws_headers(alice)

    async def scenario() -> tuple[Socket, int, int]:
        ws = _socket(conversation, headers)
        assert (await ws.connect())[0]
        run_id = (
            await ws.request(type="generate", content="Go on", sampling={**GREEDY, "max_new_tokens": 200})
        )["runs"][0]["id"]
        await ws.until(lambda f: f.get("run") == run_id and f["type"] == "token" and f["index"] == 2)
        ack = await ws.request(type="stop", run=run_id)
        assert ack["type"] == "ack"
        seen = len(ws.tokens(run_id))
        final = await ws.finish(run_id)
        assert final["status"] == "stopped" and final["reason"] == "aborted"
        await ws.close()
        return ws, run_id, seen

    _, run_id, seen_at_ack = run_async(scenario())
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.STOPPED
    # At most the token of the step in flight (and one already published) arrive after the ack.
    assert len(run.tokens) <= seen_at_ack + 2


def test_two_users_concurrently_the_unsteered_one_gets_its_solo_tokens(
    stack: Any, alice: Any, bob: Any, conversation: Any, stack_deployment: Any, ws_headers: Any
) -> None:
    bobs = services.create_conversation(bob, stack_deployment)
    alice_headers, bob_headers = ws_headers(alice), ws_headers(bob)
    sampling = {"temperature": 0.8, "seed": 11, "max_new_tokens": 20}

    async def scenario() -> tuple[int, int, int]:
        b = _socket(bobs, bob_headers)
        a = _socket(conversation, alice_headers)
        assert (await b.connect())[0] and (await a.connect())[0]
        solo = (await b.request(type="generate", content="Hi there", sampling=sampling))["runs"][0]["id"]
        await b.finish(solo)
        # Now together: alice steers hard while bob asks the same as before in a fresh conversation.
        steered = (
            await a.request(type="generate", content="Hi there", sampling={**sampling, "max_new_tokens": 40})
        )["runs"][0]["id"]
        await a.until(lambda f: f.get("run") == steered and f["type"] == "token")
        return_run = await b.request(type="generate", content="Hi there", sampling=sampling)
        together = return_run["runs"][0]["id"]
        await b.finish(together)
        await a.finish(steered)
        await a.close()
        await b.close()
        return solo, together, steered

    solo, together, steered = run_async(scenario())
    runs = {r.pk: r for r in Run.objects.all()}
    assert runs[steered].status == RunStatus.DONE
    # Bob's second turn has a longer prompt (the first answer is in its history); compare it with
    # a solo run of the same prompt: replaying the concurrent run alone.
    assert runs[solo].tokens and runs[together].tokens
    assert runs[together].started_at < runs[steered].finished_at  # they did share the engine

    async def solo_again() -> int:
        b = _socket(bobs, bob_headers)
        assert (await b.connect())[0]
        replay = (await b.request(type="replay", run=together))["runs"][0]["id"]
        await b.finish(replay)
        await b.close()
        return replay

    replay = run_async(solo_again())
    assert Run.objects.get(pk=replay).tokens == runs[together].tokens


def test_resume_after_reconnect_yields_every_event_exactly_once(
    stack: Any, alice: Any, conversation: Any, ws_headers: Any
) -> None:
    headers = ws_headers(alice)

    async def scenario() -> tuple[list[dict[str, Any]], int]:
        first = _socket(conversation, headers)
        assert (await first.connect())[0]
        run_id = (
            await first.request(
                type="generate", content="A long one", sampling={**GREEDY, "max_new_tokens": 40}
            )
        )["runs"][0]["id"]
        await first.until(lambda f: f.get("run") == run_id and f["type"] == "token" and f["index"] == 5)
        await first.close()
        seen = first.of(run_id)
        await asyncio.sleep(0.3)  # events keep coming while no socket listens
        second = _socket(conversation, headers)
        assert (await second.connect())[0]
        last = seen[-1]
        reply = await second.request(type="resume", run=run_id, attempt=last["attempt"], seq=last["seq"])
        assert reply["type"] == "resumed"
        await second.finish(run_id)
        await second.close()
        return seen + second.of(run_id), run_id

    frames, run_id = run_async(scenario())
    _consecutive(frames)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.DONE  # the reconnect came within the detach grace: not aborted
    assert frames == list(RunEvent.objects.filter(run=run).values_list("payload", flat=True))
    assert [f["token_id"] for f in frames if f["type"] == "token"] == run.tokens


def test_a_closed_browser_aborts_its_run(stack: Any, alice: Any, conversation: Any, ws_headers: Any) -> None:
    headers = ws_headers(alice)

    async def scenario() -> Run:
        ws = _socket(conversation, headers)
        assert (await ws.connect())[0]
        run_id = (
            await ws.request(
                type="generate", content="Never mind", sampling={**GREEDY, "max_new_tokens": 400}
            )
        )["runs"][0]["id"]
        await ws.until(lambda f: f.get("run") == run_id and f["type"] == "token")
        await ws.close()
        # The server (and, embedded, its loop) lives on; the run stops after the detach grace.
        return await database_sync_to_async(_wait_finished)(run_id, 60)

    run = run_async(scenario())
    assert run.status == RunStatus.STOPPED and len(run.tokens) < 400


def test_compare_mode_streams_baseline_and_steered_answers_together(
    stack: Any, alice: Any, conversation: Any, ws_headers: Any
) -> None:
    headers = ws_headers(alice)

    async def scenario() -> tuple[Socket, list[dict[str, Any]]]:
        ws = _socket(conversation, headers)
        assert (await ws.connect())[0]
        reply = await ws.request(
            type="generate", content="Compare", compare=True, sampling={**GREEDY, "max_new_tokens": 16}
        )
        for summary in reply["runs"]:
            await ws.finish(summary["id"])
        await ws.close()
        return ws, reply["runs"]

    ws, summaries = run_async(scenario())
    assert [s["kind"] for s in summaries] == ["baseline", "steered"]
    baseline, steered = (Run.objects.get(pk=s["id"]) for s in summaries)
    assert baseline.compare_group == steered.compare_group is not None
    assert baseline.spec is None and steered.spec is not None
    assert baseline.sampling["seed"] == steered.sampling["seed"]
    assert baseline.status == steered.status == RunStatus.DONE
    assert baseline.tokens != steered.tokens
    # Streamed together: their token frames interleave.
    order = [f["run"] for f in ws.frames if f.get("type") == "token"]
    first_steered, last_baseline = order.index(steered.pk), len(order) - 1 - order[::-1].index(baseline.pk)
    assert first_steered < last_baseline


def _wait_finished(run_id: int, timeout: float) -> Run:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if not run.active:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {Run.objects.get(pk=run_id).status} after {timeout} s")

"""The conversation socket refuses what it must: strangers, foreign origins, bad frames, others'
ids and over-quota turns each get a refusal or an error frame, change nothing, and the socket
stays usable (embedded stack; the consumer is the same on every stack)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.live import Socket, run_async

from webapp.asgi import application
from webapp.playground import services
from webapp.playground.examples import create_example_recipe
from webapp.playground.models import Conversation, Message, Run, RunEvent, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


@pytest.fixture
def version(alice: Any, tiny_deployment: Any) -> Any:
    return create_example_recipe(alice, tiny_deployment)


@pytest.fixture
def conversation(alice: Any, version: Any, embedded: None) -> Any:
    return services.create_conversation(alice, version.recipe.deployment, recipe_version=version)


def _finished_run(user: Any, conversation: Any) -> Run:
    """A finished run written directly (nothing dispatched)."""
    message = Message.objects.create(conversation=conversation, role="user", content="hi")
    return Run.objects.create(
        conversation=conversation,
        user=user,
        deployment=conversation.deployment,
        prompt_message=message,
        status=RunStatus.DONE,
        sampling={"max_new_tokens": 4, "temperature": 0, "top_p": 1, "seed": 0},
        max_new_tokens=4,
    )


def _state() -> tuple[Any, ...]:
    return (
        list(Run.objects.order_by("pk").values_list("pk", "status", "adjustments")),
        Message.objects.count(),
        RunEvent.objects.count(),
        list(Conversation.objects.order_by("pk").values_list("pk", "recipe_version_id", "title")),
    )


def test_strangers_and_foreign_origins_are_refused(
    alice: Any, bob: Any, conversation: Any, tiny_deployment: Any, ws_headers: Any
) -> None:
    bobs = services.create_conversation(bob, tiny_deployment)
    cases = [
        (f"/ws/conversations/{conversation.pk}/", ws_headers(None)),  # anonymous
        (f"/ws/conversations/{conversation.pk}/", ws_headers(alice, origin=b"https://evil.example")),
        (f"/ws/conversations/{conversation.pk}/", [(b"cookie", ws_headers(alice)[1][1])]),  # no Origin
        (f"/ws/conversations/{bobs.pk}/", ws_headers(alice)),  # someone else's conversation
        ("/ws/conversations/999999/", ws_headers(alice)),  # no such conversation
    ]

    async def scenario() -> list[bool]:
        results = []
        for path, headers in cases:
            ws = Socket(application, path, headers)
            accepted, _ = await ws.connect()
            results.append(accepted)
            if accepted:
                await ws.close()
        ok = Socket(application, f"/ws/conversations/{conversation.pk}/", ws_headers_alice)
        results.append((await ok.connect())[0])
        await ok.close()
        return results

    ws_headers_alice = ws_headers(alice)
    assert run_async(scenario()) == [False, False, False, False, False, True]


def test_bad_frames_get_error_frames_change_nothing_and_keep_the_socket(
    alice: Any, bob: Any, carol: Any, conversation: Any, tiny_deployment: Any, ws_headers: Any
) -> None:
    bobs_run = _finished_run(bob, services.create_conversation(bob, tiny_deployment))
    alices_finished = _finished_run(alice, conversation)
    carols = create_example_recipe(carol, tiny_deployment, seed=1)
    frames: list[tuple[str, str]] = [
        ("this is not json", "invalid"),
        ("[1, 2, 3]", "invalid"),
        ('"generate"', "invalid"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"content": "no type"}', "unknown_type"),
        (json.dumps({"type": "generate", "content": "x" * 70_000}), "too_large"),
        ('{"type": "generate", "content": "   "}', "invalid"),
        ('{"type": "generate", "content": 42}', "invalid"),
        ('{"type": "generate", "content": "hi", "surprise": 1}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"max_new_tokens": 100000}}', "quota"),
        ('{"type": "generate", "content": "hi", "sampling": {"max_new_tokens": "many"}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"temperature": NaN}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"top_p": 0}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"seed": -1}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"stop": 5}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"stop": ["a", "b", "c", "d", "e"]}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"stop": [""]}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"top_logprobs": 21}}', "invalid"),
        ('{"type": "generate", "content": "hi", "sampling": {"top_logprobs": "3"}}', "invalid"),
        ('{"type": "generate", "content": "hi", "compare": "yes"}', "invalid"),
        ('{"type": "generate", "content": "hi", "overrides": [{"index": 99, "scale": 1}]}', "invalid"),
        ('{"type": "generate", "content": "hi", "overrides": [{"index": 0, "scale": Infinity}]}', "invalid"),
        ('{"type": "generate", "content": "hi", "overrides": [{"index": 0, "scale": 1e9}]}', "invalid"),
        ('{"type": "generate", "content": "hi", "overrides": [{"index": 0}]}', "invalid"),
        ('{"type": "generate", "content": "hi", "overrides": "loud"}', "invalid"),
        (json.dumps({"type": "adjust", "run": bobs_run.pk, "intervention": 0, "scale": 1}), "not_found"),
        ('{"type": "adjust", "run": 999999, "intervention": 0, "scale": 1}', "not_found"),
        (
            json.dumps({"type": "adjust", "run": str(alices_finished.pk), "intervention": 0, "scale": 1}),
            "not_found",
        ),
        (
            json.dumps({"type": "adjust", "run": alices_finished.pk, "intervention": 0, "scale": 1}),
            "finished",
        ),
        (json.dumps({"type": "stop", "run": bobs_run.pk}), "not_found"),
        (json.dumps({"type": "stop", "run": alices_finished.pk}), "finished"),
        (json.dumps({"type": "replay", "run": bobs_run.pk}), "not_found"),
        (json.dumps({"type": "resume", "run": bobs_run.pk, "attempt": 1, "seq": 0}), "not_found"),
        (json.dumps({"type": "resume", "run": alices_finished.pk, "attempt": -1, "seq": 0}), "invalid"),
        (json.dumps({"type": "set_recipe", "recipe_version": carols.pk}), "not_found"),
        ('{"type": "set_recipe", "recipe_version": 999999}', "not_found"),
    ]
    headers = ws_headers(alice)
    before = _state()

    async def scenario() -> list[dict[str, Any]]:
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        replies = []
        for text, _ in frames:
            await ws.send_text(text)
            replies.append(await ws.receive(timeout=30))
        replies.append(await ws.request(type="ping"))  # still open and answering
        await ws.close()
        return replies

    replies = run_async(scenario())
    for (text, code), reply in zip(frames, replies, strict=False):
        assert reply["type"] == "error" and reply["code"] == code, (text[:80], reply)
        assert reply["message"]
    assert replies[-1]["type"] == "pong"
    assert _state() == before


def test_quotas_refuse_a_turn_and_change_nothing(
    alice: Any, conversation: Any, ws_headers: Any, settings: Any
) -> None:
    headers = ws_headers(alice)

    async def turn(ws: Socket, **extra: Any) -> dict[str, Any]:
        return await ws.request(type="generate", content="hello there", **extra)

    async def scenario() -> list[dict[str, Any]]:
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        settings.STEERLAB_MAX_CONCURRENT_RUNS = 1
        first = await turn(ws, sampling={"max_new_tokens": 300, "temperature": 0})
        run_id = first["runs"][0]["id"]
        await ws.until(lambda f: f.get("run") == run_id and f["type"] == "token")
        refused = [
            await turn(ws, sampling={"max_new_tokens": 4}),  # a second concurrent run
            await turn(ws, compare=True, sampling={"max_new_tokens": 4}),
        ]
        await ws.request(type="stop", run=run_id)
        await ws.finish(run_id)
        settings.STEERLAB_MAX_CONCURRENT_RUNS = 4
        settings.STEERLAB_DAILY_TOKEN_BUDGET = 310  # 300 used by the first run
        refused.append(await turn(ws, sampling={"max_new_tokens": 20}))
        settings.STEERLAB_DAILY_TOKEN_BUDGET = 1_000_000
        settings.STEERLAB_MAX_PROMPT_TOKENS = 16
        refused.append(await turn(ws, sampling={"max_new_tokens": 4}))
        await ws.close()
        return refused

    refused = run_async(scenario())
    assert [r["code"] for r in refused] == ["quota"] * 4, refused
    assert Run.objects.count() == 1 and Message.objects.filter(role="user").count() == 1


def test_dropped_messages_are_backfilled_in_order_exactly_once(
    alice: Any, conversation: Any, ws_headers: Any
) -> None:
    """Drop-and-backfill: frames the channel layer dropped (a slow client) come from the database."""
    from channels.layers import get_channel_layer

    run = _finished_run(alice, conversation)
    frames = [
        {
            "type": "token",
            "run": run.pk,
            "attempt": 1,
            "seq": seq,
            "index": seq - 1,
            "token_id": seq,
            "text": "x",
        }
        for seq in range(1, 11)
    ]
    RunEvent.objects.bulk_create(RunEvent(run=run, attempt=1, seq=f["seq"], payload=f) for f in frames)
    delivered = [frames[i] for i in (0, 1, 4, 4, 7, 8, 9)]  # 3, 4, 6, 7 dropped; 5 twice
    headers = ws_headers(alice)

    async def scenario() -> list[dict[str, Any]]:
        ws = Socket(application, f"/ws/conversations/{conversation.pk}/", headers)
        assert (await ws.connect())[0]
        layer = get_channel_layer()
        group = services.conversation_group(conversation.pk)
        await layer.group_send(group, {"type": "run.events", "frames": delivered[:2]})
        for frame in delivered[2:]:
            await layer.group_send(group, {"type": "run.events", "frames": [frame]})
        await ws.until(lambda f: f.get("seq") == 10)
        reply = await ws.request(type="ping")  # nothing else is pending
        assert reply["type"] == "pong"
        await ws.close()
        return ws.of(run.pk)

    received = run_async(scenario())
    assert received == frames


def test_a_full_channel_queue_drops_instead_of_growing() -> None:
    from webapp.playground.layers import DroppingQueue

    queue: DroppingQueue = DroppingQueue(maxsize=3)
    before = DroppingQueue.dropped
    for i in range(5):
        queue.put_nowait(i)
    assert queue.qsize() == 3 and [queue.get_nowait() for _ in range(3)] == [0, 1, 2]
    assert DroppingQueue.dropped - before == 2

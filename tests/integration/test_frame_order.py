"""FrameOrder: a run's frames released in (attempt, seq) order, each once, whatever order they come in;
``follow_run``: a gap is waited for, not given up on while frames come fast."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from webapp.playground import services
from webapp.playground.follow import FrameOrder, follow_run
from webapp.playground.models import Run, RunEvent, RunStatus
from webapp.playground.services import conversation_group


def _frame(attempt: int, seq: int) -> dict[str, Any]:
    return {"type": "token", "run": 1, "attempt": attempt, "seq": seq}


def _keys(frames: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(f["attempt"], f["seq"]) for f in frames]


def test_frames_are_released_in_order_and_once() -> None:
    order = FrameOrder()
    assert _keys(order.offer(_frame(1, 2))) == []  # early: held behind seq 1
    assert order.gap
    assert _keys(order.offer(_frame(1, 1))) == [(1, 1), (1, 2)]
    assert not order.gap
    assert order.offer(_frame(1, 2)) == []  # a duplicate (a backfill of what went out live)
    assert _keys(order.offer(_frame(1, 3))) == [(1, 3)]
    assert order.cursor == (1, 3)


def test_a_new_attempt_starts_over_at_seq_one() -> None:
    order = FrameOrder((1, 5))
    assert _keys(order.offer(_frame(2, 2))) == []
    assert _keys(order.offer(_frame(2, 1))) == [(2, 1), (2, 2)]
    assert order.offer(_frame(1, 6)) == []  # the old attempt's late frame is dropped


def test_a_gap_that_never_fills_is_skipped_once_given_up() -> None:
    order = FrameOrder()
    order.offer(_frame(1, 1))
    order.offer(_frame(1, 4))
    order.offer(_frame(1, 5))
    assert _keys(order.skip_gap()) == [(1, 4), (1, 5)]
    assert order.cursor == (1, 5) and not order.gap


@pytest.mark.django_db(transaction=True)
def test_follow_run_waits_for_a_gap_to_be_persisted_while_frames_arrive_fast(
    alice: Any, tiny_deployment: Any, settings: Any, fresh_channel_layers: None
) -> None:
    """The first frames were published before the reader subscribed and are persisted late (the
    writer's 250 ms, more on a loaded machine); many frames arriving behind the gap meanwhile must
    not make the reader give up on them."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "dispatch_on_commit", lambda runs: None)
        conversation = services.create_conversation(alice, tiny_deployment)
        (run,) = services.start_turn(alice, conversation, "hi")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)

    def frame(seq: int, kind: str = "token") -> dict[str, Any]:
        return {"type": kind, "run": run.pk, "attempt": 1, "seq": seq}

    async def scenario() -> list[dict[str, Any]]:
        frames = follow_run(run.pk, conversation.pk, limit=30)
        first = asyncio.ensure_future(anext(frames))
        await asyncio.sleep(0.1)  # subscribed
        layer = get_channel_layer()
        for seq in range(3, 23):  # 20 frames behind the missing two, fast
            await layer.group_send(
                conversation_group(conversation.pk), {"type": "run.events", "frames": [frame(seq)]}
            )
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the writer is late
        await database_sync_to_async(RunEvent.objects.bulk_create)(
            [RunEvent(run_id=run.pk, attempt=1, seq=s, payload=frame(s)) for s in (1, 2)]
        )
        await layer.group_send(
            conversation_group(conversation.pk), {"type": "run.events", "frames": [frame(23, "finished")]}
        )
        return [await first] + [f async for f in frames]

    got = asyncio.run(scenario())
    assert _keys(got) == [(1, seq) for seq in range(1, 24)]

"""FrameOrder: a run's frames released in (attempt, seq) order, each once, whatever order they come in."""

from __future__ import annotations

from typing import Any

from webapp.playground.follow import FrameOrder


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

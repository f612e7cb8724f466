"""Following a run's frames: in order, each once, live from the channel layer, gaps from the database.

A worker publishes each frame at once and persists it within 250 ms (docs/design.md §2), so a reader who
subscribes late, or whose channel dropped messages, finds what it missed in the database. Frames
carry ``(attempt, seq)``: ``FrameOrder`` holds what arrives early, drops duplicates, and releases
frames in order. The conversation socket keeps one per run it shows; ``follow_run`` (the
OpenAI-compatible endpoint) reads one run to its end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from webapp.playground.models import ACTIVE_STATUSES, Run
from webapp.playground.services import conversation_group, events_after

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (attempt, seq)
RUN_END = ("finished", "cancelled")
RECHECK_SECONDS = 0.3  # > the 250 ms persistence interval: a look at the database finds the rows
# How long a gap may stay open before it is given up on (its frames were never persisted). A time,
# not a count of looks: frames arriving fast behind a gap bring many looks within 250 ms.
GAP_SECONDS = 8 * RECHECK_SECONDS


def follows(cursor: Key, key: Key) -> bool:
    """``key`` is the next frame after ``cursor``: the next seq, or the first of a later attempt."""
    return key == (cursor[0], cursor[1] + 1) or (key[0] > cursor[0] and key[1] == 1)


@dataclass
class FrameOrder:
    """The frames of one run, released in ``(attempt, seq)`` order, each once."""

    cursor: Key = (0, 0)  # the last frame released
    held: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def offer(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """Take ``frame``; the frames that now follow the cursor, in order (maybe none)."""
        key = (frame["attempt"], frame["seq"])
        if key > self.cursor:
            self.held[key] = frame
        return self.release()

    def release(self) -> list[dict[str, Any]]:
        out = []
        for key in sorted(self.held):
            if key <= self.cursor:
                del self.held[key]  # a duplicate of a frame already released
            elif follows(self.cursor, key):
                out.append(self.held.pop(key))
                self.cursor = key
            else:
                break
        return out

    @property
    def gap(self) -> bool:
        """Frames are held behind a missing one."""
        return bool(self.held)

    def skip_gap(self) -> list[dict[str, Any]]:
        """Give up on the missing frames (never persisted: their worker died mid-batch)."""
        first = min(self.held)
        self.cursor = (first[0], first[1] - 1)
        return self.release()


def _run_active(run_id: int) -> bool:
    return Run.objects.filter(pk=run_id, status__in=ACTIVE_STATUSES).exists()


async def follow_run(run_id: int, conversation_id: int, *, limit: float) -> AsyncIterator[dict[str, Any]]:
    """The frames of ``run_id`` from its first to its last (``finished``), for at most ``limit`` s.

    The caller has authorised the run. A run cancelled before any worker took it ends with a
    ``cancelled`` frame made here (no worker sends one).
    """
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = conversation_group(conversation_id)
    await layer.group_add(group, channel)
    order = FrameOrder()
    read = database_sync_to_async(events_after)
    active = database_sync_to_async(_run_active)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    gap_since: float | None = None  # when the open gap was first seen
    try:
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(layer.receive(channel), RECHECK_SECONDS)
            except TimeoutError:
                message = None
            ready: list[dict[str, Any]] = []
            for frame in (message or {}).get("frames", ()):
                if frame.get("run") == run_id:
                    ready += order.offer(frame)
            if message is None or order.gap:
                # Quiet, or behind: what was published before we subscribed, or dropped, is stored.
                for frame in await read(run_id, *order.cursor):
                    ready += order.offer(frame)
                if not order.gap:
                    gap_since = None
                elif gap_since is None:
                    gap_since = loop.time()
                elif loop.time() - gap_since >= GAP_SECONDS:
                    log.warning("playground.follow_gap_skipped", extra={"run": run_id})
                    ready += order.skip_gap()
                    gap_since = None
            if message is None and not ready and not await active(run_id):
                # Ended: its last frames are stored with its final state (read again, as they may
                # have been written after the look above), or it was cancelled while queued.
                for frame in await read(run_id, *order.cursor):
                    ready += order.offer(frame)
                ready = ready or [{"type": "cancelled", "run": run_id}]
            for frame in ready:
                yield frame
                if frame["type"] in RUN_END:
                    return
        raise TimeoutError(f"run {run_id} did not finish within {limit:.0f} s")
    finally:
        await layer.group_discard(group, channel)

"""Runs through the HTTP API, waited for."""

from __future__ import annotations

from typing import Any

from support.handover import wait_until
from webapp.playground.models import Run


def replayed(client: Any, run: Run, timeout: float = 60) -> Run:
    """``run`` replayed through the HTTP API by ``client``'s user: the replay, once it ended."""
    reply = client.post(f"/api/runs/{run.pk}/replay")
    assert reply.status_code == 201, reply.content
    replay = Run.objects.get(pk=reply.json()["id"])

    def ended() -> Run | None:
        replay.refresh_from_db()
        return None if replay.active else replay

    ended_run: Run = wait_until(ended, timeout, f"replay {replay.pk} to end")
    return ended_run

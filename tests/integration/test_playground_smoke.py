from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from webapp.asgi import application
from webapp.playground import services
from webapp.playground.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


async def _receive_until(comm: WebsocketCommunicator, pred: Any, timeout: float = 30) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=timeout)
        frames.append(frame)
        if pred(frame):
            return frames


def test_smoke(alice: Any, example_version: Any, ws_headers: Any, fresh_channel_layers: Any) -> None:
    conv = services.create_conversation(
        alice, example_version.recipe.deployment, recipe_version=example_version
    )

    headers = ws_headers(alice)

    async def scenario() -> list[dict[str, Any]]:
        comm = WebsocketCommunicator(application, f"/ws/conversations/{conv.pk}/", headers=headers)
        ok, code = await comm.connect()
        from django.conf import settings

        assert ok, (code, settings.ALLOWED_HOSTS)
        await comm.send_json_to(
            {"type": "generate", "content": "hello", "sampling": {"max_new_tokens": 8, "temperature": 0}}
        )
        frames = await _receive_until(comm, lambda f: f["type"] == "finished")
        await comm.disconnect()
        return frames

    frames = asyncio.run(scenario())
    for f in frames:
        print(f)
    run = Run.objects.get()
    print(run.status, run.tokens, run.text, run.adjustments, len(run.reads))

"""What every Steerlab websocket shares: JSON text frames, bounded in size, and error frames.

A frame that is not text, is larger than ``STEERLAB_MAX_FRAME_BYTES``, is not JSON or nests too
deeply (``webapp.untrusted_json``) gets an ``{type: "error", code, message}`` frame and changes
nothing; the socket stays open.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from webapp import untrusted_json


class JsonFrameConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **_: Any) -> None:
        if text_data is None:
            await self.error("invalid", "send JSON text frames")
            return
        if len(text_data.encode()) > settings.STEERLAB_MAX_FRAME_BYTES:
            await self.error("too_large", f"frames are limited to {settings.STEERLAB_MAX_FRAME_BYTES} bytes")
            return
        try:
            content = untrusted_json.loads(text_data)
        except untrusted_json.UntrustedJsonError as exc:
            await self.error("invalid", f"the frame is refused: {exc}")
            return
        await self.receive_json(content)

    async def error(self, code: str, message: str, ref: Any = None) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if ref is not None:
            frame["ref"] = ref
        await self.send_json(frame)

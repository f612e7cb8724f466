"""The jobs websocket: ``/ws/jobs/``, progress of the jobs a page watches.

Client messages: ``{type: "watch", job}`` (checked against the user's rights on every message;
the reply is the job's persisted state, then every change as it happens) and
``{type: "unwatch", job}``. Frames: ``{type: "job", job, status, attempt, done, total, error}``;
a bad message gets ``{type: "error", code, message}`` (``webapp.sockets``) and the socket stays open.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from webapp.jobs import services
from webapp.jobs.models import Job
from webapp.jobs.runner import job_frame, job_group
from webapp.playground import hosting
from webapp.sockets import JsonFrameConsumer

MAX_WATCHED = 64


class JobConsumer(JsonFrameConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.user = user
        self.watched: set[int] = set()
        if not settings.CELERY_BROKER_URL:
            hosting.bind_loop(asyncio.get_running_loop())  # embedded: jobs publish on this loop
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for job_id in getattr(self, "watched", set()):
            await self.channel_layer.group_discard(job_group(job_id), self.channel_name)

    async def receive_json(self, content: Any, **_: Any) -> None:
        if not isinstance(content, dict) or content.get("type") not in ("watch", "unwatch"):
            await self.error("unknown_type", "messages are {type: watch|unwatch, job}")
            return
        job_id = content.get("job")
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            await self.error("invalid", "job must be a job id")
            return
        if content["type"] == "unwatch":
            self.watched.discard(job_id)
            await self.channel_layer.group_discard(job_group(job_id), self.channel_name)
            return
        if len(self.watched) >= MAX_WATCHED and job_id not in self.watched:
            await self.error("too_many", f"watch at most {MAX_WATCHED} jobs per socket")
            return

        def read() -> dict[str, Any] | None:
            try:
                services.get_job(self.user, job_id)
            except Job.DoesNotExist:
                return None
            return job_frame(job_id)

        # Join first, then read: a change between the two is seen twice, never missed.
        await self.channel_layer.group_add(job_group(job_id), self.channel_name)
        frame = await database_sync_to_async(read)()
        if frame is None:
            await self.channel_layer.group_discard(job_group(job_id), self.channel_name)
            await self.error("not_found", f"no job {job_id} that you can see")
            return
        self.watched.add(job_id)
        await self.send_json(frame)

    async def run_events(self, message: dict[str, Any]) -> None:
        """Frames published for a watched job (the host's publisher batches them)."""
        for frame in message["frames"]:
            if frame.get("job") in self.watched:
                await self.send_json(frame)

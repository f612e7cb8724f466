"""Helpers for tests that talk to the live playground: websocket clients and worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_END = ("finished", "cancelled")


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def missing_servers() -> list[str]:
    """Which of RabbitMQ (5672) and Redis (6379) on 127.0.0.1 do not answer."""
    return [name for name, port in (("RabbitMQ", 5672), ("Redis", 6379)) if not port_open("127.0.0.1", port)]


class Socket:
    """A websocket client of the ASGI application that keeps every frame it receives."""

    def __init__(self, application: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.comm = WebsocketCommunicator(application, path, headers=headers)
        self.frames: list[dict[str, Any]] = []

    async def connect(self, timeout: float = 15) -> tuple[bool, Any]:
        # channels' default is 1 s; the first connect of a test opens the database and Redis
        # connections, which on a loaded 2-core CI machine can take longer.
        return await self.comm.connect(timeout)  # type: ignore[no-any-return]

    async def send(self, **message: Any) -> None:
        await self.comm.send_json_to(message)

    async def send_text(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def receive(self, timeout: float = 60) -> dict[str, Any]:
        frame: dict[str, Any] = await self.comm.receive_json_from(timeout=timeout)
        self.frames.append(frame)
        return frame

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.receive(timeout=max(deadline - time.monotonic(), 0.01))
            if pred(frame):
                return frame

    async def request(self, **message: Any) -> dict[str, Any]:
        """Send a message with a ``ref`` and return the reply (or error) that echoes it."""
        ref = f"r{len(self.frames)}-{time.monotonic_ns()}"
        await self.send(ref=ref, **message)
        return await self.until(lambda f: f.get("ref") == ref)

    async def finish(self, run_id: int, timeout: float = 120) -> dict[str, Any]:
        """Frames until ``run_id`` ends; returns its final frame."""
        done = [f for f in self.frames if f.get("run") == run_id and f["type"] in RUN_END]
        if done:
            return done[0]
        return await self.until(lambda f: f.get("run") == run_id and f["type"] in RUN_END, timeout)

    def of(self, run_id: int, kind: str | None = None) -> list[dict[str, Any]]:
        """The run's event frames (those with a sequence number), of one type or all."""
        return [f for f in self.frames if f.get("run") == run_id and "seq" in f and kind in (None, f["type"])]

    def tokens(self, run_id: int) -> list[int]:
        return [f["token_id"] for f in self.of(run_id, "token")]

    async def close(self) -> None:
        await self.comm.disconnect()


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def start_worker(env: dict[str, str], queue: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    """A real Celery worker process (threads pool) for ``queue``; its output goes to ``log``."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-P",
        "threads",
        "-c",
        "8",
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
    ]
    handle = log.open("ab")
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if b" ready." in log.read_bytes():
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_worker(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

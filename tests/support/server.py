"""A server process under test: a free port, its output collected in a thread, waiting until it listens."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The one line `manage.py demo` prints once it serves.
DEMO_URL_LINE = re.compile(r"^Steerlab demo: (http://\S+/)  \(login: (\S+) / (\S+)\)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output:
    """Collects a process's output lines in a thread (the pipe must never fill up); `found` is set
    when a line matches `pattern` (or the process ends)."""

    def __init__(self, stream: Any, pattern: re.Pattern[str]) -> None:
        self.lines: list[str] = []
        self.pattern = pattern
        self.url: re.Match[str] | None = None
        self.found = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            line = line.rstrip("\n")
            self.lines.append(line)
            match = self.pattern.match(line)
            if match and self.url is None:
                self.url = match
                self.found.set()
        self.found.set()  # the process ended

    def tail(self) -> str:
        return "\n".join(self.lines[-60:])


def wait_for_port(port: int, process: subprocess.Popen[str], output: Output, timeout: float = 60) -> None:
    """Wait until something accepts connections on `port` (the process must stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert process.poll() is None, f"the server exited ({process.returncode}):\n{output.tail()}"
            assert time.monotonic() < deadline, f"nothing listens on port {port}:\n{output.tail()}"
            time.sleep(0.1)


def launch(
    command: Sequence[str], cwd: Path, env: dict[str, str], url_line: re.Pattern[str], timeout: float
) -> tuple[subprocess.Popen[str], Output]:
    """Start a server in its own process group and wait for the line announcing its URL."""
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(process.stdout, url_line)
    found = output.found.wait(timeout)
    if not found or output.url is None:
        process.kill()
        raise AssertionError(f"no URL line after {timeout} s (exit {process.poll()}):\n{output.tail()}")
    return process, output


def stop_group(process: subprocess.Popen[str], timeout: float = 60) -> None:
    """Stop a server started by ``launch`` and everything in its process group: SIGINT (a clean
    shutdown), then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def demo_server(
    env: dict[str, str], timeout: float, *, stop_timeout: float = 60
) -> Iterator[tuple[str, Output]]:
    """``manage.py demo`` (one process: uvicorn, runs in its threads) on a free port with ``env``:
    its base URL (``http://127.0.0.1:<port>``, no trailing slash) and its output, stopped on exit."""
    port = free_port()
    command = [sys.executable, "manage.py", "demo", "--host", "127.0.0.1", "--port", str(port)]
    process, output = launch(command, ROOT, env, DEMO_URL_LINE, timeout)
    try:
        wait_for_port(port, process, output)
        yield f"http://127.0.0.1:{port}", output
    finally:
        stop_group(process, stop_timeout)

"""`make demo` end to end: a separate process on a free port, driven over HTTP and a websocket.

The server runs in its own process (its own SQLite file, never the test database): the test logs
in as the demo user, opens the chat page, streams a generation over the websocket and stops
the server with SIGINT.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.server import DEMO_URL_LINE, ROOT, free_port, launch, wait_for_port
from websockets.sync.client import connect

START_TIMEOUT = 240  # the first run builds the tiny model


def _stop(process: subprocess.Popen[str]) -> int:
    """SIGINT to the process group (make and the server); the exit status of make."""
    os.killpg(process.pid, signal.SIGINT)
    return process.wait(timeout=60)


@pytest.mark.timeout(400)
def test_make_demo_serves_the_chat_and_streams_a_generation(tmp_path: Path) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"CELERY_BROKER_URL", "REDIS_URL", "STEERLAB_MODEL", "STEERLAB_DEMO_PASSWORD"}
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        DEBUG="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        HOST="127.0.0.1",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    # The running interpreter's environment, taken as installed (`-o`: no reinstall, no network).
    venv = sys.prefix
    command = ["make", "--no-print-directory", "demo", f"VENV={venv}", "-o", f"{venv}/.installed"]
    process, output = launch(command, ROOT, env, DEMO_URL_LINE, START_TIMEOUT)
    try:
        assert output.url is not None
        base, username, password = output.url.groups()
        assert base == f"http://127.0.0.1:{port}/"
        assert username == "demo"
        wait_for_port(port, process, output)

        conversation, cookie = _log_in_and_open_the_chat(base, username, password)
        frames = _generate(port, conversation, cookie)
        types = [f["type"] for f in frames]
        assert types[0] == "runs", types
        assert "started" in types, types
        assert sum(t == "token" for t in types) >= 1, types
        finished = frames[-1]
        assert finished["type"] == "finished", types
        assert finished["status"] == "done", finished
        seqs = [f["seq"] for f in frames if "seq" in f]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # each event once, in order
        # Files are streamed as the ASGI server wants them (asynchronously): Django said otherwise
        # ("StreamingHttpResponse must consume synchronous iterators") when whitenoise served them.
        assert not [line for line in output.lines if "StreamingHttpResponse" in line], output.tail()
    finally:
        status = process.poll()
        if status is None:
            try:
                status = _stop(process)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                pytest.fail(f"the demo did not exit on SIGINT:\n{output.tail()}")
    assert status is not None, "make demo is still running"
    # Every process of the group is gone (the server as well as make).
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"processes of the demo outlived it:\n{output.tail()}"
        time.sleep(0.2)


def _log_in_and_open_the_chat(base: str, username: str, password: str) -> tuple[int, str]:
    """Log in through the login form, land in the browser app; the demo conversation's id and the
    session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = base + "accounts/login/"
    with opener.open(login_url, timeout=30) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    with opener.open(urllib.request.Request(login_url, data=form), timeout=30) as response:
        assert response.status == 200
        assert response.url == base + "app/", response.url
        shell = response.read().decode()
    cookies = {c.name: c.value for c in jar}
    assert "sessionid" in cookies, f"not logged in: {sorted(cookies)}"

    # The app's shell names its built script; the ASGI server serves it itself (servestatic).
    script = re.search(r'<script type="module" crossorigin src="(/static/app/[^"]+\.js)"', shell)
    assert script, shell
    with opener.open(base.rstrip("/") + script.group(1), timeout=30) as response:
        assert response.status == 200
        assert "/ws/conversations/" in response.read().decode()
    with opener.open(base + "api/conversations", timeout=30) as response:
        conversations = json.loads(response.read())["items"]
    assert len(conversations) == 1, conversations
    return int(conversations[0]["id"]), f"sessionid={cookies['sessionid']}"


def _generate(port: int, conversation: int, cookie: str) -> list[dict[str, Any]]:
    """Send one generate over the websocket; its frames up to the run's `finished`."""
    headers = {"Origin": f"http://127.0.0.1:{port}", "Cookie": cookie}
    uri = f"ws://127.0.0.1:{port}/ws/conversations/{conversation}/"
    frames: list[dict[str, Any]] = []
    with connect(uri, additional_headers=headers, open_timeout=30) as ws:
        ws.send(
            json.dumps(
                {
                    "type": "generate",
                    "content": "hello",
                    "sampling": {"max_new_tokens": 8, "temperature": 0},
                }
            )
        )
        deadline = time.monotonic() + 180  # the first generation loads the model
        while time.monotonic() < deadline:
            frame = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            assert frame["type"] != "error", frame
            if frame["type"] in {"runs", "started", "token", "reads", "adjusted", "finished"}:
                frames.append(frame)
            if frame["type"] == "finished":
                return frames
    pytest.fail(f"no finished frame in time: {[f['type'] for f in frames]}")

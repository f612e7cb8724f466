"""The embedded stack holds concurrent users: a live demo server (``manage.py demo``: one process,
runs in its threads, the in-memory channel layer) on a file-backed SQLite database and on
PostgreSQL takes 20 chat turns from 5 people at once while a probe-training job writes its batches
and boards are created: no error frame and no 5xx, every run complete, its frames in order, and
what streamed equal to what was stored.

SQLite is what ``make demo`` uses: the file is opened in WAL mode with immediate transactions and a
busy timeout (``webapp/settings.py``); before, 6 to 9 of these turns failed with "database is
locked". CI's integration tier runs on PostgreSQL, so the SQLite server is its own process here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from support.live import ci
from support.server import demo_server
from websockets.sync.client import connect

from webapp.playground.examples import marker_rows

PASSWORD = "correct horse battery staple"
PEOPLE, TURNS_EACH = 5, 4
SAMPLING = {"max_new_tokens": 24, "temperature": 0.9, "top_p": 1.0}

pytestmark = [pytest.mark.timeout(600)]


@dataclass
class Server:
    base: str
    demo_password: str


def _postgres_database() -> Iterator[str]:
    """A database of its own on the PostgreSQL the tier uses (created and dropped here)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        if ci():
            pytest.fail("CI=true: this test needs PostgreSQL")
        pytest.skip("no PostgreSQL for this run (the tier runs on SQLite)")
    name = f"steerlab_concurrency_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    databases = (
        iter([f"sqlite:///{tmp_path / 'steerlab.sqlite3'}"])
        if request.param == "sqlite"
        else _postgres_database()
    )
    database_url = next(databases)
    password = "demo-" + secrets.token_hex(6)
    env = {
        k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "REDIS_URL", "STEERLAB_MODEL"}
    }
    env.update(
        DATABASE_URL=database_url,
        DEBUG="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        STEERLAB_DEMO_PASSWORD=password,
        STEERLAB_ENGINE_MIN_STEP_MS="0",
        PYTHONUNBUFFERED="1",
    )
    try:
        with demo_server(env, 240) as (url, output):
            yield Server(url, password)
            assert not [line for line in output.lines if "database is locked" in line], output.tail()
    finally:
        for _ in databases:  # drops the PostgreSQL database
            pass


class Person:
    """A browser of one person's: their session cookie, CSRF token, and every HTTP status they got."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base, timeout=120, follow_redirects=True)
        self.statuses: list[int] = []

    def _form(self, path: str, fields: dict[str, str]) -> None:
        page = self.http.get(path).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        reply = self.http.post(
            path, data={**fields, "csrfmiddlewaretoken": token.group(1)}, follow_redirects=False
        )
        assert reply.status_code == 302 and reply.headers["Location"] == "/app/", (
            reply.status_code,
            reply.text[:500],
        )

    def sign_up(self, username: str) -> Person:
        self._form(
            "/accounts/signup/",
            {
                "username": username,
                "email": f"{username}@example.org",
                "password1": PASSWORD,
                "password2": PASSWORD,
            },
        )
        return self

    def log_in(self, username: str, password: str) -> Person:
        self._form("/accounts/login/", {"username": username, "password": password})
        return self

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"X-CSRFToken": self.http.cookies.get("csrftoken", "")}
        reply = self.http.request(method, path, json=body, headers=headers)
        self.statuses.append(reply.status_code)
        return reply

    def turn(self, conversation: int, content: str) -> tuple[int, list[dict[str, Any]]]:
        """A chat turn over the conversation socket: its run id and every frame of the run."""
        url = self.server.base.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
        headers = {"Origin": self.server.base, "Cookie": f"sessionid={self.http.cookies['sessionid']}"}
        frames: list[dict[str, Any]] = []
        with connect(url, additional_headers=headers, open_timeout=60) as ws:
            ws.send(json.dumps({"type": "generate", "content": content, "sampling": SAMPLING}))
            run_id = None
            while True:
                frame = json.loads(ws.recv(timeout=240))
                assert frame["type"] != "error", frame
                if frame["type"] == "runs":
                    run_id = frame["runs"][0]["id"]
                elif frame.get("run") == run_id and "seq" in frame:
                    frames.append(frame)
                    if frame["type"] == "finished":
                        return run_id, frames


def test_twenty_concurrent_turns_from_five_people_while_a_job_writes(server: Server) -> None:
    people = [Person(server).sign_up(f"person{i}") for i in range(PEOPLE)]
    demo = Person(server).log_in("demo", server.demo_password)
    deployment = demo.call("GET", "/api/deployments").json()["items"][0]["name"]
    turns = [
        (person, person.call("POST", "/api/conversations", {"deployment": deployment}).json()["id"])
        for person in people
        for _ in range(TURNS_EACH)
    ]
    rows = demo.call(
        "POST", "/api/datasets/rows", {"name": "rows", "kind": "labelled", "rows": marker_rows(96)}
    )
    job = demo.call(
        "POST",
        "/api/jobs/train-probe",
        {"deployment": deployment, "dataset_id": rows.json()["id"], "name": "probe", "layer": 1},
    ).json()["id"]

    def new_board(i: int) -> int:  # a write of its own while runs and the job write theirs
        body = {"deployment": deployment, "name": f"board {i}", "dataset_id": rows.json()["id"]}
        return int(demo.call("POST", "/api/boards", body).status_code)

    with ThreadPoolExecutor(len(turns) + 3) as pool:
        started = [
            pool.submit(person.turn, conversation, f"turn {i}")
            for i, (person, conversation) in enumerate(turns)
        ]
        boards = [pool.submit(new_board, i) for i in range(3)]
        done = [future.result() for future in started]
        assert [future.result() for future in boards] == [201, 201, 201]

    for (person, _), (run_id, frames) in zip(turns, done, strict=True):
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))  # in order, each once
        final = frames[-1]
        assert final["type"] == "finished" and final["status"] == "done", final
        stored = person.call("GET", f"/api/runs/{run_id}").json()
        assert stored["status"] == "done"
        assert [f["token_id"] for f in frames if f["type"] == "token"] == stored["tokens"]
        assert "".join(f["text"] for f in frames if f["type"] == "token") + final["tail"] == stored["text"]
        assert 1 <= len(stored["tokens"]) <= SAMPLING["max_new_tokens"]

    deadline = time.monotonic() + 300
    while (state := demo.call("GET", f"/api/jobs/{job}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["status"] == "done", state
    assert all(status < 500 for person in [*people, demo] for status in person.statuses)

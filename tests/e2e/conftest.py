"""End-to-end fixtures: a live ASGI server (``manage.py demo``: uvicorn, HTTP and websockets, runs
executed in-process on the tiny model) and Debian's chromium driven by Playwright.

The browser is the system's chromium (``$STEERLAB_CHROMIUM``, default ``/usr/bin/chromium``,
installed by ``make test``), never one downloaded by Playwright. Under ``CI=true`` a missing
browser, PostgreSQL or Redis fails the tier; elsewhere it is skipped (browser) or falls back to
SQLite and the in-memory channel layer (said in the output).

Every decode step of the server's engine lasts at least ``MIN_STEP_MS``, so what the test does
during a generation (move a slider, reload the page) happens while tokens are still coming.
Screenshots go to ``$STEERLAB_ARTIFACTS_DIR`` (default ``artifacts/e2e``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.live import ci, port_open
from support.server import ROOT, Output, demo_server

MIN_STEP_MS = 120
DETACH_GRACE_SECONDS = 300
START_TIMEOUT = 240  # the first run builds the tiny model
E2E_DATABASE = "steerlab_e2e"
CHROMIUM_FLAGS = [
    # As root in a container; no GPU; the machine's closed network refuses background connections.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:<port> (no trailing slash)
    output: Output


def _database_url(tmp: Path) -> str:
    if port_open("127.0.0.1", 5432):
        import psycopg

        # A fresh database per session: the server migrates it itself.
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {E2E_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {E2E_DATABASE}")
        return f"postgres://postgres@127.0.0.1:5432/{E2E_DATABASE}"
    if ci():
        pytest.fail("CI=true: PostgreSQL (127.0.0.1:5432) is not reachable for the e2e server")
    print("e2e: PostgreSQL is not reachable: the live server uses SQLite")
    return f"sqlite:///{tmp / 'e2e.sqlite3'}"


def _redis_url() -> str:
    if port_open("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/3"
    if ci():
        pytest.fail("CI=true: Redis (127.0.0.1:6379) is not reachable for the e2e server")
    print("e2e: Redis is not reachable: the live server uses the in-memory channel layer")
    return ""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("STEERLAB_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        message = f"no chromium at {path} (make test installs Debian's chromium)"
        if ci():
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[LiveServer]:
    if not (ROOT / "frontend" / "dist" / "index.html").is_file():
        pytest.fail("the browser app is not built: run `make frontend` (make test does)")
    tmp = tmp_path_factory.mktemp("e2e-server")
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {"CELERY_BROKER_URL", "REDIS_URL", "STEERLAB_MODEL", "STEERLAB_DEMO_PASSWORD", "DATABASE_URL"}
    }
    env.update(
        DATABASE_URL=_database_url(tmp),
        REDIS_URL=_redis_url(),
        DEBUG="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        STEERLAB_ENGINE_MIN_STEP_MS=str(MIN_STEP_MS),
        # A reload mid-stream lets go of the run until the new page resumes it: on a loaded machine
        # the page can take longer than the default 10 s grace to come back (the run was aborted).
        STEERLAB_DETACH_GRACE_SECONDS=str(DETACH_GRACE_SECONDS),
        PYTHONUNBUFFERED="1",
    )
    with demo_server(env, START_TIMEOUT, stop_timeout=30) as (url, output):
        yield LiveServer(url, output)


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, app_server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(base_url=app_server.url, viewport={"width": 1440, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("STEERLAB_ARTIFACTS_DIR", ROOT / "artifacts" / "e2e"))
    path.mkdir(parents=True, exist_ok=True)
    return path

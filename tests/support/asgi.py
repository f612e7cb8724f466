"""A live ASGI server in this process: uvicorn in a thread, serving the test database.

For clients that need a real HTTP server (the ``openai`` package, websocket clients) while the
test keeps Django's settings and database: the server runs ``webapp.asgi.application`` on its own
loop, which also carries the embedded stack's runs (the in-memory channel layer lives on it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from support.server import free_port


@contextmanager
def live_asgi_server() -> Iterator[str]:
    """Serve the ASGI application on a free port; yields its base URL (``http://127.0.0.1:<port>``)."""
    import uvicorn

    from webapp.asgi import application

    port = free_port()
    config = uvicorn.Config(application, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-asgi", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the live server stopped while starting"
        assert time.monotonic() < deadline, "the live server did not start within 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)

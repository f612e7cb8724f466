"""The worker container's health check: ``python3 -m workers.health``.

Exits 0 when a worker process of this host (container) has a live heartbeat in the shared cache
(``workers.heartbeat``; a draining one counts: it is alive, finishing its work), 1 when none has.
A worker that died, hangs before its heartbeat starts, or cannot reach the cache is unhealthy.
Prints one JSON line saying which entries it found.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any


def live_here(host: str | None = None) -> list[dict[str, Any]]:
    """The heartbeat entries of ``host``'s worker processes (this host's by default)."""
    from workers.heartbeat import workers

    prefix = f"{host or socket.gethostname()}:"
    return [w for w in workers() if str(w.get("worker", "")).startswith(prefix)]


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django  # type: ignore[import-untyped]

    django.setup()
    try:
        found = live_here()
    except Exception as exc:  # the cache is away: this worker cannot be reached for work either
        print(json.dumps({"healthy": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    names = [{"worker": w["worker"], "name": w.get("name"), "draining": w.get("draining")} for w in found]
    print(json.dumps({"healthy": bool(found), "workers": names}))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())

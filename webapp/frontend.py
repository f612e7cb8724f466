"""The browser app (``frontend/``, built by Vite into ``frontend/dist``): its HTML shell at ``/app/``.

Every path under ``/app/`` gets the same shell; the app's router picks the page. The assets are
static files (``frontend/dist`` is a ``STATICFILES_DIRS`` entry, served by servestatic). The
shell sets the CSRF cookie, which the app sends back on every unsafe API call.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import ensure_csrf_cookie

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Steerlab</title></head>
<body><main><h1>The browser app is not built</h1>
<p>Run <code>make frontend</code> (or <code>make demo</code>), then reload this page.</p></main></body></html>"""


@lru_cache(maxsize=1)  # the current build's shell; a rebuild replaces it
def _cached_shell(path: Path, mtime: float) -> str:
    return path.read_text(encoding="utf-8")


def _shell() -> str | None:
    path = Path(settings.FRONTEND_DIST) / "index.html"
    try:
        return _cached_shell(path, path.stat().st_mtime)  # a rebuild changes the mtime
    except FileNotFoundError:
        return None


def _shell_response() -> HttpResponse:
    shell = _shell()
    if shell is None:
        return HttpResponse(NOT_BUILT, status=503)
    return HttpResponse(shell, headers={"Cache-Control": "no-cache"})


@login_required
@ensure_csrf_cookie
def app_view(request: HttpRequest, path: str = "") -> HttpResponse:
    return _shell_response()


def shared_view(request: HttpRequest, token: str) -> HttpResponse:
    """A share link's page (``/app/shared/<token>``): open to anyone holding the link, logged in or
    not; the page reads ``/api/shared/<token>``, which checks the token."""
    return _shell_response()

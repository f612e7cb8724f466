"""The API's two credentials (``webapp.api.api`` accepts either; a few endpoints only the session).

* ``Authorization: Bearer stl_...`` — a personal API token, for scripts. A header cannot be set by
  another site, so these requests need no CSRF token.
* the Django session cookie, for the browser — with Django's CSRF check on unsafe methods.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from webapp.accounts.services import authenticate_api_token


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer stl_...``: a personal API token (unknown or revoked -> not authenticated)."""

    openapi_scheme = "bearer"

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return authenticate_api_token(token)


class BrowserSessionAuth(SessionAuth):
    """The session cookie, with CSRF enforced on unsafe methods (``SessionAuth(csrf=True)``).

    The CSRF check runs only for a logged-in session: a request without one carries no ambient
    credential to abuse, and must get 401 (not authenticated) rather than 403.
    """

    def __init__(self) -> None:
        super().__init__(csrf=True)

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)

"""The one ``NinjaAPI``: authentication, error mapping and the routers.

Every endpoint accepts either credential:

* ``Authorization: Bearer stl_...`` — a personal API token, for scripts. A header cannot be set by
  another site, so these requests need no CSRF token.
* the Django session cookie, for the browser — with Django's CSRF check on unsafe methods.

Errors are JSON ``{"detail": ...}``: ``PermissionDenied`` -> 403, a service's ``ValidationError``
-> 400 (ninja's own request-validation errors stay 422), ``Http404`` and a missing object -> 404.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.parser import Parser

from webapp import untrusted_json
from webapp.api.auth import ApiTokenAuth, BrowserSessionAuth
from webapp.playground.services import PlaygroundError


class UntrustedJsonParser(Parser):
    """Request bodies through ``webapp.untrusted_json``: nesting is bounded (a 400, never a 500)."""

    def parse_body(self, request: HttpRequest) -> Any:
        return untrusted_json.loads(request.body)


api = NinjaAPI(
    title="Steerlab",
    version="1",
    urls_namespace="api",
    parser=UntrustedJsonParser(),
    # Token first: a script that sends a valid token is never asked for a CSRF token.
    auth=[ApiTokenAuth(), BrowserSessionAuth()],
)


def _messages(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@api.exception_handler(PermissionDenied)
def _permission_denied(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "Permission denied."}, status=403)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    body: dict[str, Any] = {"detail": _messages(exc)}
    if hasattr(exc, "error_dict"):
        # Keyed errors (a recipe's ``interventions[2].layer``): the editor shows each by its field.
        body["errors"] = {
            key: [str(m) for m in ValidationError(value).messages] for key, value in exc.error_dict.items()
        }
    return api.create_response(request, body, status=400)


@api.exception_handler(ObjectDoesNotExist)
def _does_not_exist(request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
    # One message whatever the object: a 404 must not say which objects exist.
    return api.create_response(request, {"detail": "Not Found"}, status=404)


@api.exception_handler(PlaygroundError)
def _playground_error(request: HttpRequest, exc: PlaygroundError) -> HttpResponse:
    status = {"not_found": 404, "forbidden": 403, "too_large": 413, "quota": 429}.get(exc.code, 400)
    return api.create_response(request, {"detail": exc.message}, status=status)


# Routers are imported last: they import ``api``'s neighbours, never ``api`` itself.
from webapp.api.accounts import router as accounts_router  # noqa: E402

api.add_router("", accounts_router)
from webapp.api.library import router as library_router  # noqa: E402

api.add_router("", library_router)
from webapp.api.playground import router as playground_router  # noqa: E402

api.add_router("", playground_router)
from webapp.api.jobs import router as jobs_router  # noqa: E402

api.add_router("", jobs_router)
from webapp.api.sharing import router as sharing_router  # noqa: E402

api.add_router("", sharing_router)

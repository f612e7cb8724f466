"""``manage.py export_openapi``: write the API's OpenAPI document to ``webapp/api/openapi.json``.

It lives here because management commands must belong to an installed app and ``webapp.api`` is
not one (it holds no models).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webapp.api.schema import OPENAPI_PATH, render_openapi


class Command(BaseCommand):
    help = (
        "Write the HTTP API's OpenAPI schema to webapp/api/openapi.json (the front end's types come from it)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="Fail if the committed file is stale.")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        text = render_openapi()
        if check:
            current = OPENAPI_PATH.read_text() if OPENAPI_PATH.exists() else ""
            if current != text:
                raise SystemExit(f"{OPENAPI_PATH} is stale: run `make openapi`.")
            self.stdout.write(f"{OPENAPI_PATH} is current.")
            return
        OPENAPI_PATH.write_text(text)
        self.stdout.write(f"wrote {OPENAPI_PATH}")

"""The committed OpenAPI document: how it is rendered, and where it lives."""

from __future__ import annotations

import json
from pathlib import Path

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def render_openapi() -> str:
    """The live schema as the committed file holds it: sorted keys, two-space indent, final newline."""
    from webapp.api.api import api

    return json.dumps(api.get_openapi_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

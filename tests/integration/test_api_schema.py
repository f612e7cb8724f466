"""The committed OpenAPI document is the live one (the front end generates its types from it)."""

from __future__ import annotations

import json

from django.test import Client

from webapp.api.api import api
from webapp.api.schema import OPENAPI_PATH, render_openapi


def test_committed_openapi_is_current() -> None:
    committed = OPENAPI_PATH.read_text()
    assert committed == render_openapi(), "webapp/api/openapi.json is stale: run `make openapi`"
    assert json.loads(committed) == json.loads(json.dumps(api.get_openapi_schema()))
    assert committed.endswith("}\n")


def test_openapi_json_is_served_and_declares_both_credentials(client: Client, db: None) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    served = response.json()
    assert served["info"] == {"title": "Steerlab", "version": "1", "description": ""}
    assert served["paths"] == json.loads(OPENAPI_PATH.read_text())["paths"]
    assert served["components"]["securitySchemes"] == {
        "ApiTokenAuth": {"type": "http", "scheme": "bearer"},
        "BrowserSessionAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
    }

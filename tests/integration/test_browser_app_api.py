"""What the browser app adds to the server: its HTML shell at /app/, name search in the library
lists, a vector's per-layer norms, and validation messages keyed by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from django.test import Client, override_settings

from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes
from webapp.library import services as library
from webapp.library.models import Recipe

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _vector(user: Any, deployment: Any, name: str, directions: dict[int, torch.Tensor]) -> Any:
    data = to_safetensors_bytes(Vec(directions, method="imported"))
    return library.upload_vector(user, deployment, name, "v.safetensors", data)


def test_the_app_shell_needs_a_login_sets_the_csrf_cookie_and_serves_every_app_path(
    alice: Any, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text('<div id="root"></div><script src="/static/app/x.js"></script>')
    with override_settings(FRONTEND_DIST=tmp_path):
        anonymous = Client().get("/app/chat/3")
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
        client = _client(alice)
        for path in ("/app/", "/app/chat/3", "/app/recipes/new"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert b'<div id="root">' in page.content
            assert "csrftoken" in page.cookies
        assert client.get("/").url == "/app/"


def test_an_unbuilt_app_says_how_to_build_it(alice: Any, tmp_path: Path) -> None:
    with override_settings(FRONTEND_DIST=tmp_path / "missing"):
        page = _client(alice).get("/app/")
    assert page.status_code == 503
    assert b"make frontend" in page.content


def test_logging_in_lands_in_the_app(make_user: Any) -> None:
    make_user("zoe", password="a-long-test-passphrase-1")
    response = Client().post("/accounts/login/", {"username": "zoe", "password": "a-long-test-passphrase-1"})
    assert response.status_code == 302 and response["Location"] == "/app/"


def test_lists_search_names_by_every_word_in_any_case(alice: Any, bob: Any, tiny_deployment: Any) -> None:
    hidden = tiny_deployment.hidden_size
    for name in ("Happy Direction", "sad direction", "happy probe-ish vector"):
        _vector(alice, tiny_deployment, name, {1: torch.ones(hidden)})
    _vector(bob, tiny_deployment, "happy but private to bob", {1: torch.ones(hidden)})
    client = _client(alice)

    def names(query: str) -> list[str]:
        return sorted(v["name"] for v in client.get("/api/vectors", {"q": query}).json()["items"])

    assert names("happy") == ["Happy Direction", "happy probe-ish vector"]
    assert names("DIRECTION happy") == ["Happy Direction"]
    assert names("") == ["Happy Direction", "happy probe-ish vector", "sad direction"]
    assert names("nothing-like-this") == []
    assert client.get("/api/recipes", {"q": "x"}).status_code == 200
    assert client.get("/api/probes", {"q": "x"}).status_code == 200
    assert client.get("/api/datasets", {"q": "x"}).status_code == 200


def test_a_vectors_detail_has_its_per_layer_norms(alice: Any, bob: Any, tiny_deployment: Any) -> None:
    hidden = tiny_deployment.hidden_size
    direction = torch.zeros(hidden)
    direction[:4] = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
    vector = _vector(alice, tiny_deployment, "norms", {0: direction, 2: 2 * direction})
    body = _client(alice).get(f"/api/vectors/{vector.pk}").json()
    assert body["norms"] == {"0": 5.0, "2": 10.0}
    assert "norms" not in _client(alice).get("/api/vectors").json()["items"][0]  # detail only
    assert _client(bob).get(f"/api/vectors/{vector.pk}").status_code == 404


def test_recipe_validation_errors_are_keyed_by_field_and_nothing_is_created(
    alice: Any, tiny_deployment: Any
) -> None:
    vector = _vector(alice, tiny_deployment, "v", {1: torch.ones(tiny_deployment.hidden_size)})
    spec = {
        "interventions": [
            {"op": "steer", "vector": vector.public_id, "layer": 99, "scale": 2.0},
            {"op": "probe", "probe": "prb_999999", "layer": 1},
        ]
    }
    response = _client(alice).post(
        "/api/recipes",
        {"deployment": "tiny", "name": "bad", "spec": spec},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["detail"]
    keys = set(body["errors"])
    assert any(key.startswith("interventions[") for key in keys), body
    assert all(isinstance(m, str) for messages in body["errors"].values() for m in messages)
    assert not Recipe.objects.filter(owner=alice).exists()


def test_every_intervention_s_problem_comes_back_at_once(alice: Any, tiny_deployment: Any) -> None:
    """Not only the first: an editor shows each at its field."""
    vector = _vector(alice, tiny_deployment, "v", {1: torch.ones(tiny_deployment.hidden_size)})
    spec = {
        "interventions": [
            {"op": "steer", "vector": vector.public_id, "layer": 99, "scale": 2.0},
            {"op": "logit_lens", "layer": 1, "k": 3},
            {"op": "ablate", "dims": [10**4], "layer": 1},
            {"op": "steer", "vector": vector.public_id, "layer": 1, "positions": {"start": 5, "stop": 2}},
        ]
    }
    response = _client(alice).post(
        "/api/recipes", {"deployment": "tiny", "name": "bad", "spec": spec}, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert sorted(response.json()["errors"]) == [
        "interventions[0].layer",
        "interventions[2].dims",
        "interventions[3].positions",
    ]

"""Conversations and runs over HTTP (the browser app's list and history views)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from webapp.library import services as library
from webapp.playground.models import Conversation, Message, Run

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_create_list_and_read_conversations_and_runs(alice: Any, bob: Any, example_version: Any) -> None:
    client = _client(alice)
    recipe = example_version.recipe
    made = client.post(
        "/api/conversations",
        {"deployment": "tiny", "recipe_id": recipe.pk, "title": "  Story time "},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["title"] == "Story time" and body["deployment"] == "tiny"
    assert (body["recipe_id"], body["recipe_version"]) == (recipe.pk, example_version.number)
    conversation = Conversation.objects.get(pk=body["id"])
    prompt = Message.objects.create(conversation=conversation, role="user", content="Once upon a time")
    run = Run.objects.create(
        conversation=conversation,
        user=alice,
        deployment=conversation.deployment,
        prompt_message=prompt,
        recipe_version=example_version,
        spec=example_version.spec,
        status="done",
        tokens=[5, 6, 7],
        text="abc",
        adjustments=[{"step": 2, "index": 0, "scale": -4.0}],
    )
    listed = client.get("/api/conversations").json()
    assert [c["id"] for c in listed["items"]] == [conversation.pk]
    detail = client.get(f"/api/conversations/{conversation.pk}").json()
    assert [r["id"] for r in detail["runs"]] == [run.pk]
    shown = detail["runs"][0]
    assert shown["prompt"] == "Once upon a time" and shown["tokens"] == [5, 6, 7]
    assert shown["adjustments"] == [{"step": 2, "index": 0, "scale": -4.0}]
    assert client.get(f"/api/runs/{run.pk}").json() == shown
    # Someone else's conversation and run read as unknown ones.
    other = _client(bob)
    assert other.get(f"/api/conversations/{conversation.pk}").status_code == 404
    assert other.get(f"/api/runs/{run.pk}").status_code == 404
    assert other.get("/api/conversations").json()["items"] == []


@pytest.mark.parametrize(
    ("payload", "status", "detail"),
    [
        ({"deployment": "nope"}, 400, "Unknown deployment 'nope'."),
        ({"deployment": "tiny", "version": 1}, 400, "version needs a recipe_id"),
        ({"deployment": "tiny", "recipe_id": "{recipe}", "version": 99}, 404, "Not Found"),
        ({"deployment": "tiny", "recipe_id": 10**9}, 404, "Not Found"),
        ({"deployment": "other", "recipe_id": "{recipe}"}, 400, "is for another model than 'other'"),
    ],
)
def test_bad_conversations_are_refused_and_nothing_is_created(
    alice: Any, example_version: Any, payload: dict[str, Any], status: int, detail: str
) -> None:
    from interventions.tiny import TinySpec, build_tiny

    library.register_deployment("other", str(build_tiny(TinySpec(seed=1))))
    payload = {k: example_version.recipe.pk if v == "{recipe}" else v for k, v in payload.items()}
    response = _client(alice).post("/api/conversations", payload, content_type="application/json")
    assert response.status_code == status, response.content
    assert detail in response.json()["detail"]
    assert not Conversation.objects.exists()

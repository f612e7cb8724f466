"""The permission matrix, generated from the OpenAPI operations: every operation × {alice (owner of
team T), bob (member of T), carol (outside), anonymous} × the visibility of the seeded library
objects (private, team, public; all owned by alice with team T) gets the exact status code from
EXPECTED, and a refused request changes nothing. An operation missing from EXPECTED fails, so no
endpoint can escape the matrix.

An EXPECTED row holds either one tuple of codes (the same whatever the objects' visibility) or a
dict visibility -> codes for the endpoints that act on one seeded object."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes as vector_bytes
from webapp.accounts import services
from webapp.accounts.models import ApiToken, Invitation, Membership, Role, Team, User
from webapp.api.api import api
from webapp.compare import services as boards
from webapp.compare.models import Board, BoardProbe
from webapp.jobs import services as jobs
from webapp.jobs.models import Job
from webapp.library import services as library
from webapp.library.models import (
    Dataset,
    ModelDeployment,
    Probe,
    Recipe,
    RecipeVersion,
    SteeringVector,
)
from webapp.playground.models import Conversation, Message, Run
from webapp.sharing.models import ShareLink
from webapp.sharing.services import share_run

CSRF = "abcdefghijklmnopqrstuvwxyzABCDEF"
PEOPLE = ("alice", "bob", "carol", "anonymous")
VISIBILITIES = ("private", "team", "public")
HIDDEN, LAYERS = 64, 4
Codes = tuple[int, int, int, int]
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in api.get_openapi_schema()["paths"].items()
    for method in operations
)

# (method, path template) -> (JSON body, expected status for alice, bob, carol, anonymous).
# {team_id} is team T, {user_id} is dave (a viewer of T), {token_id} is one of alice's tokens;
# {invitation} is a live invitation to T (its raw token; {invitation_id} its id).
# Library rows: {vector_id}, {probe_id}, {dataset_id}, {recipe_id} are the seeded objects of the
# cell's visibility; the recipe (version 1) steers with another vector of that visibility, {ref},
# so that deleting {vector_id} is not refused for being referenced. A body with a "file" key is
# sent as multipart.
GET_ONE = {"private": (200, 404, 404, 401), "team": (200, 200, 404, 401), "public": (200, 200, 200, 401)}
EDIT = {"private": (200, 404, 404, 401), "team": (200, 200, 404, 401), "public": (200, 200, 403, 401)}
DELETE = {"private": (204, 404, 404, 401), "team": (204, 204, 404, 401), "public": (204, 204, 403, 401)}
NEW_VERSION = {"private": (201, 404, 404, 401), "team": (201, 201, 404, 401), "public": (201, 201, 403, 401)}
FORK = {"private": (201, 404, 404, 401), "team": (201, 201, 404, 401), "public": (201, 201, 201, 401)}
# Starting work on a seeded input: its viewers may; others get 400 at the input's field.
USE = {"private": (201, 400, 400, 401), "team": (201, 201, 400, 401), "public": (201, 201, 201, 401)}
# An editor's action refused by the object's state (a failed job cannot be cancelled).
ENDED = {"private": (400, 404, 404, 401), "team": (400, 400, 404, 401), "public": (400, 400, 403, 401)}
# A read refused by the object's state (no finished results yet), for everyone who can see it.
READ_REFUSED = {"private": (400, 404, 404, 401), "team": (400, 400, 404, 401), "public": (400, 400, 400, 401)}
ROWS = [
    {"text": "a", "label": "x"},
    {"text": "b", "label": "x"},
    {"text": "c", "label": "y"},
    {"text": "d", "label": "y"},
]
ANYONE: Codes = (200, 200, 200, 401)
CREATED: Codes = (201, 201, 201, 401)
STEER_PUBLIC = {"interventions": [{"op": "steer", "layer": 1, "vector": "{public_ref}", "scale": 2.0}]}
STEER = {"interventions": [{"op": "steer", "layer": 1, "vector": "{ref}", "scale": 1.0}]}

EXPECTED: dict[tuple[str, str], tuple[Any, Codes | dict[str, Codes]]] = {
    ("GET", "/api/me"): (None, (200, 200, 200, 401)),
    ("GET", "/api/teams"): (None, (200, 200, 200, 401)),
    ("POST", "/api/teams"): ({"name": "New team"}, (201, 201, 201, 401)),
    ("GET", "/api/teams/{team_id}"): (None, (200, 200, 404, 401)),
    ("GET", "/api/teams/{team_id}/members"): (None, (200, 200, 404, 401)),
    ("POST", "/api/teams/{team_id}/invitations"): ({"role": "member"}, (201, 403, 404, 401)),
    ("POST", "/api/invitations/accept"): ({"token": "{invitation}"}, (400, 400, 200, 401)),
    ("GET", "/api/teams/{team_id}/invitations"): (None, (200, 403, 404, 401)),
    ("DELETE", "/api/teams/{team_id}/invitations/{invitation_id}"): (None, (204, 403, 404, 401)),
    ("POST", "/api/teams/{team_id}/leave"): (None, (400, 204, 404, 401)),
    ("DELETE", "/api/teams/{team_id}/members/{user_id}"): (None, (204, 403, 404, 401)),
    ("PATCH", "/api/teams/{team_id}/members/{user_id}"): ({"role": "member"}, (200, 403, 404, 401)),
    ("GET", "/api/tokens"): (None, (200, 200, 200, 401)),
    ("POST", "/api/tokens"): ({"name": "new"}, (201, 201, 201, 401)),
    ("DELETE", "/api/tokens/{token_id}"): (None, (204, 404, 404, 401)),
    # library
    ("GET", "/api/deployments"): (None, ANYONE),
    ("GET", "/api/vectors"): (None, ANYONE),
    ("POST", "/api/vectors"): ({"file": "vector", "deployment": "tiny", "name": "up"}, CREATED),
    ("GET", "/api/vectors/{vector_id}"): (None, GET_ONE),
    ("PATCH", "/api/vectors/{vector_id}"): ({"description": "changed"}, EDIT),
    ("DELETE", "/api/vectors/{vector_id}"): (None, DELETE),
    ("POST", "/api/vectors/{vector_id}/fork"): ({}, FORK),
    ("GET", "/api/probes"): (None, ANYONE),
    ("POST", "/api/probes"): ({"file": "probe", "deployment": "tiny", "name": "up", "layer": "1"}, CREATED),
    ("GET", "/api/probes/{probe_id}"): (None, GET_ONE),
    ("PATCH", "/api/probes/{probe_id}"): ({"description": "changed"}, EDIT),
    ("DELETE", "/api/probes/{probe_id}"): (None, DELETE),
    ("POST", "/api/probes/{probe_id}/fork"): ({}, FORK),
    ("GET", "/api/datasets"): (None, ANYONE),
    ("POST", "/api/datasets"): ({"file": "dataset", "name": "up"}, CREATED),
    ("GET", "/api/datasets/{dataset_id}"): (None, GET_ONE),
    ("PATCH", "/api/datasets/{dataset_id}"): ({"description": "changed"}, EDIT),
    ("DELETE", "/api/datasets/{dataset_id}"): (None, DELETE),
    ("POST", "/api/datasets/{dataset_id}/fork"): ({}, FORK),
    ("GET", "/api/recipes"): (None, ANYONE),
    ("POST", "/api/recipes"): ({"deployment": "tiny", "name": "r", "spec": STEER_PUBLIC}, CREATED),
    ("GET", "/api/recipes/{recipe_id}"): (None, GET_ONE),
    ("PATCH", "/api/recipes/{recipe_id}"): ({"description": "changed"}, EDIT),
    ("DELETE", "/api/recipes/{recipe_id}"): (None, DELETE),
    ("POST", "/api/recipes/{recipe_id}/versions"): ({"spec": STEER}, NEW_VERSION),
    ("GET", "/api/recipes/{recipe_id}/versions/{number}"): (None, GET_ONE),
    ("POST", "/api/recipes/{recipe_id}/versions/{number}/fork"): ({}, FORK),
    # conversations and runs: private to their owner ({conversation_id} and {run_id} are alice's)
    ("GET", "/api/conversations"): (None, ANYONE),
    ("POST", "/api/conversations"): ({"deployment": "tiny", "recipe_id": "{recipe_id}"}, FORK),
    ("GET", "/api/conversations/{conversation_id}"): (None, (200, 404, 404, 401)),
    ("GET", "/api/runs/{run_id}"): (None, (200, 404, 404, 401)),
    ("GET", "/api/runs/{run_id}/export"): (None, (200, 404, 404, 401)),
    ("POST", "/api/runs/import"): ({"file": "dataset"}, (400, 400, 400, 401)),  # not an export
    ("POST", "/api/runs/{run_id}/replay"): (None, (201, 404, 404, 401)),
    # share links: a run's owner, or a board's editors, make them; anyone holding one reads it
    ("POST", "/api/runs/{run_id}/share"): (None, (201, 404, 404, 401)),
    ("POST", "/api/boards/{board_id}/share"): (None, NEW_VERSION),
    ("GET", "/api/share-links"): (None, ANYONE),
    ("DELETE", "/api/share-links/{link_id}"): (None, (204, 404, 404, 401)),
    ("GET", "/api/shared/{share_token}"): (None, (200, 200, 200, 200)),
    # datasets written in the editor
    ("POST", "/api/datasets/rows"): ({"name": "typed", "kind": "labelled", "rows": ROWS}, CREATED),
    ("GET", "/api/datasets/{dataset_id}/rows"): (None, GET_ONE),
    ("PUT", "/api/datasets/{dataset_id}/rows"): ({"rows": ROWS}, EDIT),
    # jobs: starting one needs its inputs to be visible (a hidden input is a 400 at its field);
    # {job_id} is a failed job of the cell's visibility (so resuming it works, cancelling it is a 400)
    ("GET", "/api/jobs"): (None, ANYONE),
    ("POST", "/api/jobs/build-vector"): (
        {"deployment": "tiny", "dataset_id": "{pairs_id}", "name": "v", "layers": [1]},
        USE,
    ),
    ("POST", "/api/jobs/train-probe"): (
        {"deployment": "tiny", "dataset_id": "{dataset_id}", "name": "p", "layer": 1},
        USE,
    ),
    ("POST", "/api/jobs/sweep"): (
        {
            "deployment": "tiny",
            "vector_id": "{vector_id}",
            "name": "s",
            "layers": [1],
            "scales": [1.0],
            "prompts": ["hi"],
            "probe_ids": ["{probe_id}"],
        },
        USE,
    ),
    ("GET", "/api/jobs/{job_id}"): (None, GET_ONE),
    ("POST", "/api/jobs/{job_id}/cancel"): (None, ENDED),
    ("POST", "/api/jobs/{job_id}/resume"): (None, EDIT),
    ("GET", "/api/jobs/{job_id}/export"): (None, READ_REFUSED),  # a failed train_probe job: 400
    ("GET", "/api/jobs/{job_id}/cells/{cell}/transcripts"): (None, READ_REFUSED),
    # batch runs: the dataset's rows through the recipe (both of the cell's visibility); results
    # are read from a finished batch run only (the seeded {job_id} is a failed probe training)
    ("POST", "/api/jobs/batch-run"): (
        {"deployment": "tiny", "dataset_id": "{dataset_id}", "name": "b", "recipe_id": "{recipe_id}"},
        USE,
    ),
    ("GET", "/api/jobs/{job_id}/results.jsonl"): (None, READ_REFUSED),
    ("GET", "/api/jobs/{job_id}/results.parquet"): (None, READ_REFUSED),
    # boards ({board_id} holds {probe_id} and evaluates on a dataset of its own; it has no results yet)
    ("GET", "/api/boards"): (None, ANYONE),
    ("POST", "/api/boards"): (
        {"deployment": "tiny", "name": "b", "dataset_id": "{dataset_id}", "probe_ids": ["{probe_id}"]},
        USE,
    ),
    ("GET", "/api/boards/{board_id}"): (None, GET_ONE),
    ("PATCH", "/api/boards/{board_id}"): ({"description": "changed"}, EDIT),
    ("DELETE", "/api/boards/{board_id}"): (None, DELETE),
    ("POST", "/api/boards/{board_id}/probes"): ({"probe_ids": ["{other_probe_id}"]}, EDIT),
    ("DELETE", "/api/boards/{board_id}/probes/{probe_id}"): (None, DELETE),
    ("POST", "/api/boards/{board_id}/evaluate"): (None, NEW_VERSION),
    ("GET", "/api/boards/{board_id}/traces/{example}"): (None, READ_REFUSED),
}


def _vector_file(seed: int = 0) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return vector_bytes(Vec({1: torch.randn(HIDDEN, generator=g)}))


def _probe_file() -> bytes:
    return probe_bytes(LinearProbe(torch.randn(HIDDEN, generator=torch.Generator().manual_seed(3)), 0.5))


FILES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "vector": ("v.safetensors", _vector_file),
    "probe": ("p.safetensors", _probe_file),
    "dataset": ("d.jsonl", lambda: "\n".join(json.dumps(r) for r in ROWS).encode()),
}


def _deployment() -> ModelDeployment:
    return ModelDeployment.objects.create(
        name="tiny",
        hf_id_or_path="/nowhere",
        engine="hf",
        model_type="llama",
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        mlp_size=128,
        vocab_size=512,
        queue_name="model.tiny",
    )


def _seed(alice: User, team: Team, deployment: ModelDeployment) -> dict[str, dict[str, Any]]:
    """One vector, probe, dataset and recipe (+ the vector it uses) per visibility, all alice's."""
    seeded: dict[str, dict[str, Any]] = {}
    for i, vis in enumerate(VISIBILITIES):
        kw: dict[str, Any] = {"team": team, "visibility": vis}
        vector = library.upload_vector(alice, deployment, f"v-{vis}", "v.safetensors", _vector_file(i), **kw)
        used = library.upload_vector(alice, deployment, f"u-{vis}", "u.safetensors", _vector_file(9), **kw)
        probe = library.upload_probe(
            alice, deployment, f"p-{vis}", "p.safetensors", _probe_file(), layer=1, **kw
        )
        dataset = library.upload_dataset(alice, f"d-{vis}", "d.jsonl", FILES["dataset"][1](), **kw)
        recipe, _ = library.create_recipe(
            alice, deployment, f"r-{vis}", _format(STEER, {"ref": used.public_id}), **kw
        )
        pairs = library.create_dataset_rows(
            alice, f"pairs-{vis}", "contrastive", [{"positive": "a", "negative": "b"}] * 2, **kw
        )
        other_probe = library.upload_probe(
            alice, deployment, f"o-{vis}", "o.safetensors", _probe_file(), layer=2, **kw
        )
        job = jobs.train_probe(alice, deployment, dataset_id=dataset.pk, name=f"j-{vis}", layer=1, **kw)
        Job.objects.filter(pk=job.pk).update(status="failed", error="seeded")
        evaluation = library.create_dataset_rows(alice, f"e-{vis}", "labelled", ROWS, **kw)
        board = boards.create_board(
            alice, deployment, name=f"b-{vis}", dataset_id=evaluation.pk, probe_ids=[probe.pk], **kw
        )
        seeded[vis] = {
            "pairs_id": pairs.pk,
            "other_probe_id": other_probe.pk,
            "job_id": job.pk,
            "board_id": board.pk,
            "cell": 0,
            "example": 0,
            "vector_id": vector.pk,
            "probe_id": probe.pk,
            "dataset_id": dataset.pk,
            "recipe_id": recipe.pk,
            "number": 1,
            "ref": used.public_id,
        }
    return seeded


def _seed_conversation(alice: User) -> dict[str, int]:
    """A plain conversation of alice's with one finished run."""
    deployment = ModelDeployment.objects.get(name="tiny")
    conversation = Conversation.objects.create(owner=alice, deployment=deployment, title="mine")
    prompt = Message.objects.create(conversation=conversation, role="user", content="hi")
    run = Run.objects.create(
        conversation=conversation,
        user=alice,
        deployment=deployment,
        prompt_message=prompt,
        status="done",
        sampling={"max_new_tokens": 2, "temperature": 1.0, "top_p": 1.0, "seed": 1},
        max_new_tokens=2,
        tokens=[1, 2],
        text="ok",
    )
    link, token = share_run(alice, run)
    return {"conversation_id": conversation.pk, "run_id": run.pk, "link_id": link.pk, "share_token": token}


def _format(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: _format(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_format(item, names) for item in value]
    return value


def _state() -> dict[str, list[tuple[Any, ...]]]:
    """Everything an operation could change (``last_used_at`` aside, which reading may touch)."""
    return {
        "teams": list(Team.objects.order_by("pk").values_list("pk", "name", "slug")),
        "memberships": list(Membership.objects.order_by("pk").values_list("team_id", "user_id", "role")),
        "invitations": list(
            Invitation.objects.order_by("pk").values_list("pk", "role", "accepted_by", "revoked")
        ),
        "tokens": list(ApiToken.objects.order_by("pk").values_list("pk", "user_id", "name", "revoked_at")),
        "share_links": list(
            ShareLink.objects.order_by("pk").values_list("pk", "run_id", "board_id", "revoked_at")
        ),
        **{
            model.__name__: list(
                model.objects.order_by("pk").values_list(
                    "pk", "owner_id", "team_id", "visibility", "description"
                )
            )
            for model in (SteeringVector, Probe, Dataset, Recipe)
        },
        "versions": list(RecipeVersion.objects.order_by("pk").values_list("pk", "recipe_id", "number")),
        "conversations": list(
            Conversation.objects.order_by("pk").values_list("pk", "owner_id", "recipe_version_id", "title")
        ),
        "runs": list(Run.objects.order_by("pk").values_list("pk", "user_id", "status")),
        "datasets": list(Dataset.objects.order_by("pk").values_list("pk", "content_hash", "row_count")),
        "jobs": list(
            Job.objects.order_by("pk").values_list("pk", "status", "attempt", "visibility", "team_id")
        ),
        "boards": list(
            Board.objects.order_by("pk").values_list("pk", "visibility", "team_id", "description")
        ),
        "board_probes": list(BoardProbe.objects.order_by("pk").values_list("board_id", "probe_id")),
    }


def test_every_operation_has_an_expectation_and_no_expectation_is_stale() -> None:
    assert sorted(EXPECTED) == OPERATIONS


def _visibilities(operation: tuple[str, str]) -> tuple[str, ...]:
    """The seeded visibilities an operation is checked against (one run when they do not matter)."""
    row = EXPECTED.get(operation)
    return VISIBILITIES if row is not None and isinstance(row[1], dict) else ("any",)


CELLS = [(m, p, vis) for m, p in OPERATIONS for vis in _visibilities((m, p))]


@pytest.mark.parametrize("person", PEOPLE)
@pytest.mark.parametrize(
    ("method", "template", "visibility"), CELLS, ids=[f"{m} {p} {v}" for m, p, v in CELLS]
)
def test_permission_matrix(
    method: str,
    template: str,
    person: str,
    visibility: str,
    alice: User,
    bob: User,
    carol: User,
    make_user: Callable[..., User],
    team_t: Team,
) -> None:
    assert (method, template) in EXPECTED, f"{method} {template} has no row in EXPECTED: add one"
    body, codes = EXPECTED[(method, template)]
    if isinstance(codes, dict):
        codes = codes[visibility]
    expected = codes[PEOPLE.index(person)]

    dave = make_user("dave")
    Membership.objects.create(team=team_t, user=dave, role=Role.VIEWER)
    token, _ = services.create_api_token(alice, name="target")
    live, invitation = services.invite_to_team(alice, team_t, role=Role.VIEWER)
    seeded = _seed(alice, team_t, _deployment())
    names = {
        **seeded["private" if visibility == "any" else visibility],
        "team_id": team_t.pk,
        "user_id": dave.pk,
        "token_id": token.pk,
        "invitation": invitation,
        "invitation_id": live.pk,
        "public_ref": seeded["public"]["ref"],
        **_seed_conversation(alice),
    }
    path = template.format(**names)
    body = _format(body, names)

    client = Client(enforce_csrf_checks=True)
    if person != "anonymous":
        client.force_login({"alice": alice, "bob": bob, "carol": carol}[person])
        client.cookies["csrftoken"] = CSRF
    before = _state()
    if isinstance(body, dict) and "file" in body:
        filename, make = FILES[body["file"]]
        data = {**body, "file": SimpleUploadedFile(filename, make())}
        response = client.post(path, data=data, headers={"X-CSRFToken": CSRF})
    else:
        response = getattr(client, method.lower())(
            path, data=body, content_type="application/json", headers={"X-CSRFToken": CSRF}
        )
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert _state() == before
        assert set(response.json()) <= {"detail", "errors"} and "detail" in response.json()
    elif method == "GET":
        assert _state() == before


@pytest.mark.parametrize("collection", ["vectors", "probes", "datasets", "recipes", "jobs", "boards"])
def test_listing_never_shows_others_private_objects(
    collection: str, alice: User, bob: User, carol: User, team_t: Team
) -> None:
    seeded = _seed(alice, team_t, _deployment())
    key = {
        "vectors": "vector_id",
        "probes": "probe_id",
        "datasets": "dataset_id",
        "recipes": "recipe_id",
        "jobs": "job_id",
        "boards": "board_id",
    }[collection]
    ids = {vis: seeded[vis][key] for vis in VISIBILITIES}
    seen: dict[str, set[int]] = {}
    for user in (alice, bob, carol):
        client = Client()
        client.force_login(user)
        response = client.get(f"/api/{collection}", {"limit": 1000})
        assert response.status_code == 200
        seen[user.username] = {item["id"] for item in response.json()["items"]}
    assert {ids["private"], ids["team"], ids["public"]} <= seen["alice"]
    assert ids["private"] not in seen["bob"] and {ids["team"], ids["public"]} <= seen["bob"]
    assert ids["private"] not in seen["carol"] and ids["team"] not in seen["carol"]
    assert ids["public"] in seen["carol"]

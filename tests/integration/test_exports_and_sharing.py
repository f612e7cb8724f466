"""Run exports (re-imported and replayed, they reproduce the tokens) and revocable share links."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from safetensors.torch import load, save
from support.runs import replayed

from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes
from webapp.library.models import Probe, SteeringVector
from webapp.playground import services
from webapp.playground.execution import execute_run
from webapp.playground.hosting import get_host
from webapp.playground.models import Conversation, Run, RunStatus
from webapp.sharing.models import ShareLink

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def finished_run(alice: Any, example_version: Any) -> Run:
    """alice's steered run with a per-turn override and a live adjustment at step 4."""
    with pytest.MonkeyPatch.context() as patch:  # executed below, in this thread
        patch.setattr(services, "dispatch_on_commit", lambda runs: None)
        conversation = services.create_conversation(
            alice, example_version.recipe.deployment, recipe_version=example_version
        )
        (run,) = services.start_turn(
            alice,
            conversation,
            "Tell me a story",
            sampling=services.Sampling(max_new_tokens=12, temperature=0.9, top_p=1.0, seed=99),
            overrides=[{"index": 0, "scale": 12.0}],
        )
    Run.objects.filter(pk=run.pk).update(scheduled=[{"step": 4, "index": 0, "scale": -30.0}])
    assert execute_run(run.pk, get_host()).status == RunStatus.DONE
    run.refresh_from_db()
    assert run.adjustments == [{"step": 4, "index": 0, "scale": -30.0}]
    assert run.engine["engine"] == "hf" and run.engine["version"]
    return run


def _export(user: Any, run: Run) -> bytes:
    response = _client(user).get(f"/api/runs/{run.pk}/export")
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"] == f'attachment; filename="steerlab-run-{run.pk}.zip"'
    return bytes(response.content)


def _import(user: Any, data: bytes) -> Any:
    return _client(user).post("/api/runs/import", {"file": SimpleUploadedFile("run.zip", data)})


def _counts() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (Run, Conversation, SteeringVector, Probe))


def test_an_exported_run_reimported_and_replayed_reproduces_its_tokens(
    finished_run: Run, alice: Any, bob: Any
) -> None:
    data = _export(alice, finished_run)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))
    assert manifest["model"]["name"] == "tiny"
    assert manifest["engine"] == finished_run.engine
    assert manifest["sampling"]["seed"] == 99
    assert manifest["recipe"]["version"] == finished_run.recipe_version.number
    assert manifest["adjustments"] == finished_run.adjustments
    assert set(manifest["tensors"]) == set(finished_run.content_hashes)

    # bob, who cannot see alice's private vector and probe, imports it: he gets copies.
    response = _import(bob, data)
    assert response.status_code == 201, response.content
    imported = Run.objects.get(pk=response.json()["id"])
    assert imported.user == bob and imported.tokens == finished_run.tokens
    assert imported.imported["site_run"] == finished_run.pk
    assert sorted(imported.content_hashes.values()) == sorted(finished_run.content_hashes.values())
    assert SteeringVector.objects.filter(owner=bob).count() == 1

    redone = replayed(_client(bob), imported)
    assert redone.status == RunStatus.DONE, redone.error
    assert redone.tokens == finished_run.tokens
    assert redone.text == finished_run.text
    assert redone.adjustments == finished_run.adjustments

    # Importing again reuses bob's copies rather than duplicating them.
    assert _import(bob, data).status_code == 201
    assert SteeringVector.objects.filter(owner=bob).count() == 1


def _altered(data: bytes, change: Any) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    files = {name: source.read(name) for name in source.namelist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


@contextmanager
def safe_open_bytes(data: bytes) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, str]]]:
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    yield load(data), metadata


def _manifest_edit(**fields: Any) -> Any:
    def change(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        manifest.update(fields)
        files["manifest.json"] = json.dumps(manifest).encode()

    return change


def _swap_vector(values: float) -> Any:
    def change(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        ref = next(r for r, e in manifest["tensors"].items() if e["kind"] == "vector")
        if values == values:
            files[f"tensors/{ref}.safetensors"] = to_safetensors_bytes(Vec({1: torch.full((64,), values)}))
            return
        # NaN: the same file with its numbers poisoned (the library never builds such a vector).
        name = f"tensors/{ref}.safetensors"
        with safe_open_bytes(files[name]) as (tensors, metadata):
            files[name] = save({k: torch.full_like(t, values) for k, t in tensors.items()}, metadata=metadata)

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (None, "not a Steerlab run export"),
        (lambda files: files.pop("manifest.json"), "no manifest.json"),
        (lambda files: files.update({"tensors/x.pkl": b"\x80\x04"}), "do not match its manifest"),
        (_manifest_edit(format="other"), "manifest.json: format"),
        (
            _manifest_edit(
                model={
                    "name": "gpt",
                    "source": "",
                    "revision": "",
                    "model_type": "llama",
                    "num_layers": 1,
                    "hidden_size": 1,
                    "vocab_size": 1,
                }
            ),
            "no model 'gpt'",
        ),
        (_manifest_edit(tokens=[10**9]), "outside the model's vocabulary"),
        (_manifest_edit(adjustments=[{"step": 3, "index": 9, "scale": 1.0}]), "intervention index"),
        (_manifest_edit(sampling={"seed": 1}), "sampling parameters are incomplete"),
        (
            _manifest_edit(
                sampling={"max_new_tokens": 12, "temperature": 0.9, "top_p": 1.0, "seed": 99, "stop": [3]}
            ),
            "stop is a string or a list of strings",
        ),
        # Every limit a run started here is held to (the manifest's prompt is 40 tokens or so).
        (_manifest_edit(prompt_tokens=[5] * 5000), "the limit here is"),
        (_manifest_edit(messages=[{"role": "user", "content": "x"}] * 300), "more than 256 messages"),
        (_manifest_edit(messages=[{"role": "user", "content": "x" * 100_001}]), "longer than 100000"),
        (
            _manifest_edit(messages=[{"role": "tool", "content": "x"}, {"role": "user", "content": "hi"}]),
            "role: system|user|assistant",
        ),
        (_manifest_edit(tokens=[5] * 13), "more tokens than its max_new_tokens"),
        (_manifest_edit(adjustments=[{"step": 1, "index": 0, "scale": 1.0}] * 5000), "more than 4096"),
        (
            _manifest_edit(sampling={"max_new_tokens": 10**6, "temperature": 0.9, "top_p": 1.0, "seed": 99}),
            "max_new_tokens must be between 1",
        ),
        (_swap_vector(0.5), "does not match its content hash"),
        (_swap_vector(float("nan")), "is not a readable vector file"),
    ],
)
def test_a_bad_export_is_refused_and_changes_nothing(
    finished_run: Run, alice: Any, bob: Any, change: Any, says: str
) -> None:
    data = b"not a zip" if change is None else _altered(_export(alice, finished_run), change)
    before = _counts()
    response = _import(bob, data)
    assert response.status_code == 400, response.content
    assert says in response.json()["detail"]
    assert _counts() == before


def test_only_the_owner_exports_a_finished_run(finished_run: Run, bob: Any, alice: Any) -> None:
    assert _client(bob).get(f"/api/runs/{finished_run.pk}/export").status_code == 404
    Run.objects.filter(pk=finished_run.pk).update(status=RunStatus.RUNNING)
    response = _client(alice).get(f"/api/runs/{finished_run.pk}/export")
    assert response.status_code == 400
    assert "only finished runs" in response.json()["detail"]


def test_a_share_link_shows_a_run_read_only_until_revoked(finished_run: Run, alice: Any, bob: Any) -> None:
    made = _client(alice).post(f"/api/runs/{finished_run.pk}/share")
    assert made.status_code == 201, made.content
    token = made.json()["token"]
    anonymous = Client()
    shown = anonymous.get(f"/api/shared/{token}")
    assert shown.status_code == 200
    assert shown.json()["run"]["text"] == finished_run.text
    assert shown.json()["run"]["messages"] == [{"role": "user", "content": "Tell me a story"}]
    assert anonymous.post(f"/api/shared/{token}").status_code == 405  # read-only
    link_id = made.json()["id"]
    assert _client(bob).delete(f"/api/share-links/{link_id}").status_code == 404  # not his
    assert anonymous.get(f"/api/shared/{token}").status_code == 200
    assert _client(alice).delete(f"/api/share-links/{link_id}").status_code == 204
    assert anonymous.get(f"/api/shared/{token}").status_code == 404
    assert ShareLink.objects.get(pk=link_id).revoked_at is not None
    assert anonymous.get("/api/shared/shr_guess").status_code == 404


def test_a_board_share_link_needs_an_editor(
    alice: Any, bob: Any, carol: Any, team_t: Any, tiny_deployment: Any
) -> None:
    from webapp.compare.services import create_board
    from webapp.library.services import create_dataset_rows

    rows = [{"text": "a QQQ", "label": "yes"}, {"text": "b", "label": "no"}] * 2
    dataset = create_dataset_rows(alice, "eval", "labelled", rows, team=team_t, visibility="team")
    board = create_board(
        alice, tiny_deployment, name="b", dataset_id=dataset.pk, team=team_t, visibility="team"
    )
    assert _client(carol).post(f"/api/boards/{board.pk}/share").status_code == 404
    made = _client(bob).post(f"/api/boards/{board.pk}/share")  # a team member edits team boards
    assert made.status_code == 201, made.content
    shown = Client().get(f"/api/shared/{made.json()['token']}").json()
    assert shown["kind"] == "board" and shown["board"]["name"] == "b"


def test_a_share_link_s_page_opens_without_logging_in() -> None:
    anonymous = Client()
    page = anonymous.get("/app/shared/shr_anything")
    assert page.status_code in (200, 503), page  # the app shell (503: the app is not built here)
    assert anonymous.get("/app/chat").status_code == 302  # every other page still needs a login

"""Deeply nested JSON at every entry point that reads JSON from a person: a 60 KB run of brackets
(under every size limit; ``json.loads`` answers it with RecursionError) and nesting just past
``webapp.untrusted_json.MAX_DEPTH`` inside an otherwise valid request. Each gets a 4xx or an error
frame, never a 500 or a dropped socket, and changes nothing. (``/v1/chat/completions`` is driven
the same way in ``test_openai_api.py``'s table of bad requests.)"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from typing import Any

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from safetensors.torch import save
from support.live import Socket, run_async

from webapp.asgi import application
from webapp.library.models import Dataset, Probe, Recipe, SteeringVector
from webapp.playground import services
from webapp.playground.models import Conversation, Run
from webapp.untrusted_json import MAX_DEPTH

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

BRACKETS = "[" * 30_000 + "]" * 30_000  # 60 KB: under the frame, body and upload limits
OBJECTS = '{"a":' * 10_000 + "1" + "}" * 10_000  # 60 KB too
DEEP = json.loads("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5))  # parses, but nests too deeply


def _state() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (Dataset, Recipe, SteeringVector, Probe, Run, Conversation))


@pytest.mark.parametrize("path", ["conversation", "/ws/jobs/"])
def test_both_sockets_answer_hostile_nesting_with_an_error_frame_and_stay_open(
    path: str, alice: Any, tiny_deployment: Any, ws_headers: Any, embedded: None
) -> None:
    if path == "conversation":
        path = f"/ws/conversations/{services.create_conversation(alice, tiny_deployment).pk}/"
    frames = [BRACKETS, OBJECTS, json.dumps({"type": "generate", "content": "hi", "overrides": DEEP})]
    headers = ws_headers(alice)
    before = _state()

    async def scenario() -> list[dict[str, Any]]:
        ws = Socket(application, path, headers)
        assert (await ws.connect())[0]
        replies = []
        for frame in frames:
            await ws.send_text(frame)
            replies.append(await ws.receive(timeout=30))
        await ws.send(type="fly")  # still open, and answering
        replies.append(await ws.receive(timeout=30))
        await ws.close()
        return replies

    replies = run_async(scenario())
    for reply in replies[:-1]:
        assert reply["type"] == "error" and reply["code"] == "invalid", reply
        assert "nests deeper than" in reply["message"]
    assert replies[-1]["type"] == "error" and replies[-1]["code"] == "unknown_type"
    assert _state() == before


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "body",
    [
        BRACKETS,
        OBJECTS,
        json.dumps({"deployment": "tiny", "name": "r", "spec": {"interventions": DEEP}}),
    ],
    ids=["brackets", "objects", "nested spec"],
)
def test_the_http_api_answers_hostile_nesting_with_a_400(body: str, alice: Any, tiny_deployment: Any) -> None:
    before = _state()
    for path in ("/api/recipes", "/api/datasets/rows", "/api/teams"):
        reply = _client(alice).post(path, data=body, content_type="application/json")
        assert reply.status_code == 400, (path, reply.content)
        assert "detail" in reply.json()
    assert _state() == before


@pytest.mark.parametrize("line", [BRACKETS, OBJECTS, json.dumps({"text": "a", "label": DEEP})])
def test_a_jsonl_upload_with_hostile_nesting_is_refused_at_its_line(line: str, alice: Any) -> None:
    good = json.dumps({"text": "fine", "label": "x"})
    upload = SimpleUploadedFile("d.jsonl", f"{good}\n{line}\n".encode())
    reply = _client(alice).post("/api/datasets", data={"name": "d", "file": upload})
    assert reply.status_code == 400, reply.content
    assert "line 2" in reply.json()["detail"]
    assert Dataset.objects.count() == 0


def _export_with(manifest_text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", manifest_text)
    return buffer.getvalue()


@pytest.mark.parametrize("manifest", [BRACKETS, json.dumps({"format": "steerlab.run", "spec": {"x": DEEP}})])
def test_a_run_import_with_a_hostile_manifest_is_refused(
    manifest: str, alice: Any, tiny_deployment: Any
) -> None:
    before = _state()
    upload = SimpleUploadedFile("run.zip", _export_with(manifest))
    reply = _client(alice).post("/api/runs/import", data={"file": upload})
    assert reply.status_code == 400, reply.content
    assert "manifest.json" in reply.json()["detail"]
    assert _state() == before


def _with_header(header: dict[str, Any] | str, tensors: bytes) -> bytes:
    """Safetensors bytes whose JSON header is replaced (the tensor data kept)."""
    (length,) = struct.unpack("<Q", tensors[:8])
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + tensors[8 + length :]


def test_probe_and_vector_files_with_hostile_nesting_are_refused(alice: Any, tiny_deployment: Any) -> None:
    hidden = tiny_deployment.hidden_size
    probe = save({"weight": torch.zeros(hidden), "bias": torch.zeros(1)})
    (length,) = struct.unpack("<Q", probe[:8])
    header = json.loads(probe[8 : 8 + length])
    cases = {
        "probe": [
            _with_header('{"__metadata__": ' + OBJECTS + "}", probe),
            _with_header(
                {**header, "__metadata__": {"steerlab.kind": "linear_probe", "steerlab.labels": BRACKETS}},
                probe,
            ),
        ],
        "vector": [_with_header('{"__metadata__": ' + OBJECTS + "}", save({"layer.1": torch.zeros(hidden)}))],
    }
    before = _state()
    for kind, files in cases.items():
        for data in files:
            form = {"deployment": "tiny", "name": "x", "file": SimpleUploadedFile("x.safetensors", data)}
            reply = _client(alice).post(f"/api/{kind}s", data={**form, "layer": "1"})
            assert reply.status_code == 400, (kind, reply.content)
            assert reply.json()["detail"]
    assert _state() == before

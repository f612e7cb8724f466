"""What a client streams is what the run stores: for random byte-level token sequences (multi-byte
characters split over tokens, invalid bytes, runs that end mid-character, stop strings made of
split characters), the token frames' texts and the ``finished`` frame's tail on the conversation
socket, and the content deltas of a ``/v1`` stream read by the official ``openai`` client, each
join to exactly the stored text — on the transformers engine and on the vLLM engine.

The engine is made to generate the drawn tokens by teacher forcing (``forced_tokens``): the run's
request, built by the executor as always, gets them added (the only seam; everything else —
dispatch, engine, executor, channel layer, socket, SSE — is what users run).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.asgi import live_asgi_server
from support.tokens import byte_tokens
from websockets.sync.client import connect

from interventions.tiny import load_tiny
from webapp.accounts.services import create_api_token
from webapp.playground import execution, services, stops
from webapp.playground.models import Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

ALPHABET = "aé€😀中\n ñ"  # 1, 2, 3, 4 and 3 bytes, a newline, a space, 2 bytes


TOKENIZER = load_tiny()[1]
BYTES = byte_tokens(TOKENIZER)
SEGMENTS = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=6).map(lambda b: [BYTES[x] for x in b]),  # any bytes
        st.text(ALPHABET, min_size=1, max_size=5).map(lambda t: [BYTES[x] for x in t.encode()]),
        st.text(ALPHABET + "the", min_size=1, max_size=8).map(
            lambda t: TOKENIZER(t, add_special_tokens=False)["input_ids"]
        ),
    ),
    min_size=1,
    max_size=4,
).map(lambda parts: [int(i) for part in parts for i in part][:24])


@pytest.fixture(params=["hf", "vllm"])
def deployment(request: pytest.FixtureRequest) -> Any:
    if request.param == "vllm":
        return request.getfixturevalue("vllm_deployment")
    request.getfixturevalue("embedded")
    return request.getfixturevalue("tiny_deployment")


@pytest.fixture
def forcing(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[int]], None]:
    """Make the next runs generate ``ids`` (teacher forcing on the request the executor builds)."""
    forced: list[tuple[int, ...]] = [()]
    build = execution.build_request

    def build_forced(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(build(*args, **kwargs), forced_tokens=forced[0])

    monkeypatch.setattr(execution, "build_request", build_forced)

    def force(ids: list[int]) -> None:
        forced[0] = tuple(ids)

    return force


@pytest.fixture
def live(deployment: Any) -> Iterator[str]:
    with live_asgi_server() as url:
        yield url


def _over_socket(
    url: str, headers: list[tuple[bytes, bytes]], conversation: int, sampling: dict[str, Any]
) -> str:
    ws_url = url.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
    extra = [(k.decode(), v.decode()) for k, v in headers if k != b"origin"]
    streamed = ""
    with connect(ws_url, origin=url, additional_headers=extra, open_timeout=30) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "generate", "content": "hi", "sampling": sampling}))
        while True:
            frame = json.loads(ws.recv(timeout=120))
            assert frame["type"] != "error", frame
            if frame["type"] == "token":
                streamed += frame["text"]
            if frame["type"] == "finished":
                assert frame["status"] == RunStatus.DONE, frame
                return streamed + frame["tail"]


def _over_v1(client: openai.OpenAI, model: str, sampling: dict[str, Any]) -> str:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=sampling["max_new_tokens"],
        temperature=0.0,
        seed=1,
        stop=sampling.get("stop"),
        stream=True,
    )
    return "".join(choice.delta.content or "" for chunk in stream for choice in chunk.choices)


def _expected(ids: list[int], stop: list[str]) -> str:
    whole = TOKENIZER.decode(ids, skip_special_tokens=True).replace("\x00", "\ufffd")
    cut = stops.cut(whole, stop)
    return whole if cut is None else whole[:cut]


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(ids=SEGMENTS, stop_at=st.none() | st.integers(0, 30))
@example(ids=[BYTES[b] for b in "café".encode()], stop_at=None)  # é split in two tokens
@example(ids=[BYTES[b] for b in "a😀".encode()[:4]], stop_at=None)  # it ends mid-character
@example(ids=[BYTES[b] for b in "x€😀y".encode()], stop_at=1)  # a stop string of split characters
def test_the_socket_and_v1_streams_join_to_the_stored_text(
    ids: list[int],
    stop_at: int | None,
    deployment: Any,
    live: str,
    forcing: Callable[[list[int]], None],
    alice: Any,
    ws_headers: Any,
) -> None:
    whole = TOKENIZER.decode(ids, skip_special_tokens=True)
    # A stop string of two characters of the text (maybe split characters), where it occurs first.
    stop = [whole[stop_at : stop_at + 2]] if stop_at is not None and stop_at + 2 <= len(whole) else []
    if stop and (stops.problem(stop) is not None or stop[0].isspace()):
        stop = []
    sampling: dict[str, Any] = {"max_new_tokens": len(ids), "temperature": 0.0, "seed": 1}
    if stop:
        sampling["stop"] = stop
    forcing(ids)
    expected = _expected(ids, stop)

    conversation = services.create_conversation(alice, deployment)
    socket_text = _over_socket(live, ws_headers(alice), conversation.pk, sampling)
    socket_run = Run.objects.filter(conversation=conversation).get()

    _, token = create_api_token(alice, name="script")
    client = openai.OpenAI(base_url=f"{live}/v1", api_key=token, max_retries=0, timeout=120)
    api_text = _over_v1(client, deployment.name, sampling)
    api_run = Run.objects.exclude(conversation=conversation).order_by("-pk").first()
    assert api_run is not None

    for run, streamed in ((socket_run, socket_text), (api_run, api_text)):
        assert run.status == RunStatus.DONE, run.error
        assert streamed == run.text == run.answer.content == expected
        assert run.finish_reason == ("stop" if stop and stops.cut(whole, stop) is not None else "length")

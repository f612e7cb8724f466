"""The OpenAI-compatible endpoints (``/v1/``), driven by the official ``openai`` package, unchanged,
against a live server on both stacks (embedded, and a real Celery worker on RabbitMQ + Redis).

The docs/design.md §4 rule: the same messages, recipe and seed give the same tokens through the API as
through the conversation websocket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from support.asgi import live_asgi_server
from support.stops import pick_stop
from websockets.sync.client import connect

from webapp.accounts.services import create_api_token, revoke_api_token
from webapp.playground import services
from webapp.playground.models import Conversation, Run, RunEvent, RunStatus, Source

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

PROMPT = "Tell me about the weather"
SAMPLING = {"max_new_tokens": 10, "temperature": 0.9, "top_p": 1.0, "seed": 1234}


@pytest.fixture
def live_url(stack: Any, stack_deployment: Any) -> Iterator[str]:
    with live_asgi_server() as url:
        yield url


@pytest.fixture
def client_of(live_url: str) -> Callable[[Any], openai.OpenAI]:
    def make(user: Any) -> openai.OpenAI:
        _, raw = create_api_token(user, name="script")
        return openai.OpenAI(base_url=f"{live_url}/v1", api_key=raw, max_retries=0, timeout=120)

    return make


@pytest.fixture
def version(alice: Any, stack_deployment: Any) -> Any:
    from webapp.playground.examples import create_example_recipe

    return create_example_recipe(alice, stack_deployment)


def _websocket_tokens(
    url: str, headers: list[tuple[bytes, bytes]], conversation: Conversation, **sampling: Any
) -> list[int]:
    """Generate ``PROMPT`` on the conversation's websocket (``SAMPLING`` updated with
    ``sampling``); the run's token ids, in order."""
    ws_url = url.replace("http://", "ws://") + f"/ws/conversations/{conversation.pk}/"
    extra = [(k.decode(), v.decode()) for k, v in headers if k != b"origin"]
    with connect(ws_url, origin=url, additional_headers=extra, open_timeout=30) as ws:  # type: ignore[arg-type]
        ws.send(json.dumps({"type": "generate", "content": PROMPT, "sampling": {**SAMPLING, **sampling}}))
        tokens: list[int] = []
        while True:
            frame = json.loads(ws.recv(timeout=120))
            assert frame["type"] != "error", frame
            if frame["type"] == "token":
                tokens.append(frame["token_id"])
            if frame["type"] == "finished":
                assert frame["status"] == RunStatus.DONE, frame
                return tokens


def _ask(client: openai.OpenAI, **options: Any) -> Any:
    """``PROMPT`` completed with the OpenAI ``options`` only."""
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": PROMPT}], **options
    )


def _create(client: openai.OpenAI, options: dict[str, Any] | None = None, **extra_body: Any) -> Any:
    """``PROMPT`` completed with ``SAMPLING`` (and the OpenAI ``options``) by the official client."""
    return client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=SAMPLING["max_new_tokens"],
        temperature=SAMPLING["temperature"],
        top_p=SAMPLING["top_p"],
        seed=SAMPLING["seed"],
        extra_body=extra_body or None,
        **(options or {}),
    )


def test_the_openai_client_streams_a_steered_completion_with_the_websocket_s_tokens(
    live_url: str, client_of: Any, alice: Any, version: Any, ws_headers: Any
) -> None:
    client = client_of(alice)
    stream = _create(
        client,
        {"stream": True, "stream_options": {"include_usage": True}},
        recipe=f"{version.recipe_id}@{version.number}",
        reads=True,
    )
    text, token_ids, reads, finish, usage = [], [], [], None, None
    for chunk in stream:
        extension = (chunk.model_extra or {}).get("steerlab", {})
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        if "index" in extension:  # a token's chunk
            token_ids += extension["token_ids"]
        reads += extension.get("reads", [])
    assert finish == "length"
    assert len(token_ids) == SAMPLING["max_new_tokens"]
    assert usage is not None and usage.completion_tokens == len(token_ids)

    api_run = Run.objects.get(user=alice)
    assert api_run.status == RunStatus.DONE
    assert api_run.tokens == token_ids
    assert api_run.text == "".join(text)
    assert api_run.recipe_version_id == version.pk
    assert api_run.conversation.source == Source.API
    # Reads: the recipe's probe (intervention 1) scored every generated token, the last included.
    generated = [r for r in reads if r["index"] >= 0]
    assert sorted(r["index"] for r in generated) == list(range(len(token_ids)))
    assert all("1" in r["probes"] for r in generated)

    # The same turn through the browser's websocket gives the same tokens.
    conversation = services.create_conversation(alice, version.recipe.deployment, recipe_version=version)
    assert _websocket_tokens(live_url, ws_headers(alice), conversation) == token_ids


def test_a_completion_without_streaming_equals_the_streamed_one(
    client_of: Any, alice: Any, version: Any
) -> None:
    client = client_of(alice)
    ref = f"{version.recipe_id}"  # the latest version
    first = _create(client, recipe=ref)
    again = _create(client, recipe=ref)
    extension = first.model_extra["steerlab"]
    assert first.choices[0].finish_reason == "length"
    assert first.usage.completion_tokens == len(extension["token_ids"]) == SAMPLING["max_new_tokens"]
    assert extension["seed"] == SAMPLING["seed"]
    assert extension["recipe_version"] == version.pk
    assert "reads" not in extension  # not asked for
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.model_extra["steerlab"]["token_ids"] == extension["token_ids"]
    run = Run.objects.get(pk=extension["run"])
    assert run.tokens == extension["token_ids"]
    assert run.text == first.choices[0].message.content


def test_inline_interventions_and_overrides_steer_like_the_recipe(
    client_of: Any, alice: Any, version: Any
) -> None:
    client = client_of(alice)
    strong = [{"index": 0, "scale": 40.0}]
    by_recipe = _create(client, recipe=str(version.recipe_id), overrides=strong).model_extra["steerlab"]
    inline = _create(client, interventions=version.spec["interventions"], overrides=strong).model_extra[
        "steerlab"
    ]
    assert inline["token_ids"] == by_recipe["token_ids"]
    assert Run.objects.get(pk=inline["run"]).recipe_version is None
    # Switching the steering off from the first token gives the plain model's answer.
    plain = _create(client).model_extra["steerlab"]["token_ids"]
    off = _create(client, recipe=str(version.recipe_id), overrides=[{"index": 0, "enabled": False}])
    assert off.model_extra["steerlab"]["token_ids"] == plain
    assert plain != by_recipe["token_ids"]  # the override does steer (else this test could not tell)


def test_a_stop_sequence_ends_the_completion_before_it_on_both_paths(
    live_url: str, client_of: Any, alice: Any, ws_headers: Any, stack_deployment: Any
) -> None:
    client = client_of(alice)
    reference = _create(client, {"logprobs": True}).choices[0]
    stop, kept = pick_stop([t.token for t in reference.logprobs.content])
    expected = reference.message.content[: reference.message.content.index(stop)]
    reference_ids = Run.objects.get(user=alice).tokens

    stream = _create(client, {"stream": True, "stop": stop})
    text, token_ids, finish = [], [], None
    for chunk in stream:
        extension = (chunk.model_extra or {}).get("steerlab", {})
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            assert stop not in "".join(text)  # never shown, not even for a moment
            finish = choice.finish_reason or finish
        if "index" in extension:
            token_ids += extension["token_ids"]
    assert finish == "stop"
    assert "".join(text) == expected
    assert token_ids == reference_ids[:kept]  # the tokens that made the stop string are kept

    answer = _create(client, {"stop": ["never generated", stop]})
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == expected
    assert answer.model_extra["steerlab"]["token_ids"] == token_ids

    conversation = services.create_conversation(alice, stack_deployment)
    assert _websocket_tokens(live_url, ws_headers(alice), conversation, stop=[stop]) == token_ids


def test_top_logprobs_come_with_each_token_streamed_or_not(client_of: Any, alice: Any) -> None:
    client = client_of(alice)
    completion = _create(client, {"logprobs": True, "top_logprobs": 3})
    content = completion.choices[0].logprobs.content
    assert len(content) == SAMPLING["max_new_tokens"]
    for entry in content:
        top = entry.top_logprobs
        assert len(top) == 3 and all(t.logprob <= 0 for t in top)
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert entry.logprob <= top[0].logprob + 1e-4
    # The run's token frames name the top tokens by id too.
    run = Run.objects.get(pk=completion.model_extra["steerlab"]["run"])
    frames = [e.payload for e in RunEvent.objects.filter(run=run, payload__type="token").order_by("seq")]
    assert [[[t.token, t.logprob] for t in e.top_logprobs] for e in content] == [
        [entry[1:] for entry in f["top"]] for f in frames
    ]

    stream = _create(client, {"logprobs": True, "top_logprobs": 3, "stream": True})
    streamed = [e for chunk in stream for c in chunk.choices if c.logprobs for e in c.logprobs.content]
    assert [[(t.token, t.logprob) for t in e.top_logprobs] for e in streamed] == [
        [(t.token, t.logprob) for t in e.top_logprobs] for e in content
    ]

    # Greedy: the token is the most likely one, with the same logprob (one distribution for both).
    greedy = _ask(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    run = Run.objects.get(pk=greedy.model_extra["steerlab"]["run"])
    for f in RunEvent.objects.filter(run=run, payload__type="token"):
        (best, _, logprob), _ = f.payload["top"]
        assert best == f.payload["token_id"] and abs(logprob - f.payload["logprob"]) < 1e-3


def test_models_lists_the_deployments(client_of: Any, alice: Any, stack_deployment: Any) -> None:
    client = client_of(alice)
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["tiny"]
    model = client.models.retrieve("tiny")
    assert model.model_extra["steerlab"]["layers"] == stack_deployment.num_layers
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_script_adjusts_and_stops_its_streaming_completion(
    live_url: str, client_of: Any, alice: Any, version: Any, settings: Any
) -> None:
    import httpx

    client = client_of(alice)
    key = client.api_key
    stream = _ask(client, max_tokens=200, seed=7, stream=True, extra_body={"recipe": str(version.recipe_id)})
    run_id, adjusted, seen = None, None, 0
    headers = {"Authorization": f"Bearer {key}"}
    for chunk in stream:
        extension = (chunk.model_extra or {}).get("steerlab", {})
        run_id = run_id or extension.get("run")
        if "index" in extension:
            seen += 1
            if seen == 2:
                reply = httpx.post(
                    f"{live_url}/v1/runs/{run_id}/adjust",
                    json={"intervention": 0, "scale": 3.5},
                    headers=headers,
                )
                assert reply.status_code == 200, reply.text
        if "adjusted" in extension:
            adjusted = extension["adjusted"]
            reply = httpx.post(f"{live_url}/v1/runs/{run_id}/stop", headers=headers)
            assert reply.status_code == 200, reply.text
    assert adjusted is not None and adjusted["index"] == 0 and adjusted["scale"] == 3.5
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.STOPPED
    assert run.adjustments == [adjusted]
    assert len(run.tokens) < 200


def test_a_client_that_goes_away_stops_its_run(live_url: str, client_of: Any, alice: Any) -> None:
    client = client_of(alice)
    stream = _ask(client, max_tokens=300, stream=True)
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()
    run = Run.objects.get(user=alice)
    for _ in range(300):
        run.refresh_from_db()
        if not run.active:
            break
        import time

        time.sleep(0.1)
    assert run.status == RunStatus.STOPPED
    assert len(run.tokens) < 300


def test_api_conversations_stay_out_of_the_chat_list(
    client_of: Any, alice: Any, stack_deployment: Any
) -> None:
    from django.test import Client

    _create(client_of(alice))
    browser = Client()
    browser.force_login(alice)
    chat = browser.get("/api/conversations").json()
    api = browser.get("/api/conversations?source=api").json()
    assert chat["count"] == 0
    assert [c["source"] for c in api["items"]] == ["api"]
    assert api["items"][0]["title"] == PROMPT


# --------------------------------------------------------------------------------------------
# Refusals: OpenAI's error shape, a clear message, nothing written
# --------------------------------------------------------------------------------------------
@pytest.fixture
def post(alice: Any, tiny_deployment: Any) -> Callable[..., Any]:
    from django.test import Client

    _, raw = create_api_token(alice, name="script")

    def send(body: Any, *, token: str | None = raw, path: str = "/v1/chat/completions") -> Any:
        headers = {} if token is None else {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return Client().post(path, data=data, content_type="application/json", **headers)

    return send


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ("{not json", 400, "not valid JSON"),
        ("[" * 30_000 + "]" * 30_000, 400, "nests deeper than"),  # a RecursionError once: a 500
        (_body(interventions=[json.loads("[" * 40 + "]" * 40)]), 400, "nests deeper than"),
        (_body(frequency_penalty=0.5), 400, "unsupported parameter: frequency_penalty"),
        (_body(n=2), 400, "n must be 1"),
        (_body(stop=["a", "b", "c", "d", "e"]), 400, "at most 4"),
        (_body(stop=""), 400, "1 to 64 characters"),
        (_body(stop=[7]), 400, "stop"),
        (_body(top_logprobs=2), 400, "top_logprobs needs logprobs: true"),
        (_body(logprobs=True, top_logprobs=21), 400, "top_logprobs must be an integer between 0 and 20"),
        (_body(model="gpt-4"), 404, "no model 'gpt-4'"),
        ({"model": "tiny", "messages": []}, 400, "1 to 256 messages"),
        ({"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role"),
        (
            _body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
            400,
            "last",
        ),
        (
            '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "temperature",
        ),
        (_body(top_p=0), 400, "top_p"),
        (_body(seed=-1), 400, "seed"),
        (_body(max_tokens=10**6), 400, "max_tokens is too large: 1000000"),
        (_body(max_completion_tokens=10**6), 400, "max_completion_tokens is too large"),
        (_body(max_tokens=0), 400, "Invalid 'max_tokens': integer below minimum value"),
        (_body(max_tokens=-1), 400, "Expected a value >= 1, but got -1 instead"),
        (_body(max_completion_tokens=0), 400, "Invalid 'max_completion_tokens'"),
        (_body(recipe="12@x"), 400, "'<recipe id>@<version>'"),
        (_body(recipe="999999"), 404, "no recipe that you can see"),
        (_body(interventions=[{"op": "explode", "layer": 0}]), 400, "interventions[0]"),
        (
            _body(interventions=[{"op": "steer", "layer": 99, "point": "resid_post", "vector": "vec_1"}]),
            400,
            "interventions[0]",
        ),
        (_body(overrides=[{"index": 0, "scale": 1.0}]), 400, "intervention index"),
        (_body(recipe="1", interventions=[]), 400, "not both"),
    ],
)
def test_bad_requests_get_a_clear_openai_error_and_change_nothing(
    post: Any, body: Any, status: int, says: str
) -> None:
    runs, conversations = Run.objects.count(), Conversation.objects.count()
    reply = post(body)
    assert reply.status_code == status, reply.content
    error = reply.json()["error"]
    assert says in error["message"], error
    assert set(error) == {"message", "type", "param", "code"}
    assert (Run.objects.count(), Conversation.objects.count()) == (runs, conversations)


def test_someone_else_s_private_recipe_reads_as_unknown(post: Any, bob: Any, tiny_deployment: Any) -> None:
    from webapp.playground.examples import create_example_recipe

    bobs = create_example_recipe(bob, tiny_deployment)
    reply = post(_body(recipe=str(bobs.recipe_id)))
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "no recipe that you can see"
    assert Run.objects.count() == 0


def test_the_api_needs_a_live_token(post: Any, alice: Any) -> None:
    assert post(_body(), token=None).status_code == 401
    assert post(_body(), token="stl_not-a-token").json()["error"]["code"] == "invalid_api_key"
    token, raw = create_api_token(alice, name="old")
    revoke_api_token(alice, token)
    assert post(_body(), token=raw).status_code == 401
    assert post("", token=None, path="/v1/runs/1/stop").status_code == 401
    assert Run.objects.count() == 0


def test_another_user_s_run_cannot_be_controlled(
    post: Any, bob: Any, alice: Any, tiny_deployment: Any
) -> None:
    conversation = services.create_conversation(bob, tiny_deployment)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("webapp.playground.services.dispatch_on_commit", lambda runs: None)
        (run,) = services.start_turn(bob, conversation, "hello")
    for action, body in (("adjust", {"intervention": 0, "scale": 1.0}), ("stop", {})):
        reply = post(body, path=f"/v1/runs/{run.pk}/{action}")
        assert reply.status_code == 404, reply.content
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_an_oversized_body_is_refused(post: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    reply = post(_body(messages=[{"role": "user", "content": "x" * 5000}]))
    assert reply.status_code == 413
    assert Run.objects.count() == 0

"""The OpenAI-compatible endpoints, under ``/v1/``: the official ``openai`` client works unchanged.

* ``GET /v1/models``, ``GET /v1/models/<name>``: the registered model deployments.
* ``POST /v1/chat/completions``: a chat completion, streamed (server-sent events) or not, answered
  by a run on the shared engine (``webapp.playground.completions``).
* ``POST /v1/runs/<id>/adjust`` ``{intervention, scale?, enabled?}`` and ``POST /v1/runs/<id>/stop``:
  live control of a completion still generating (Steerlab's own; the same messages as the socket).

Authentication is a personal API token (``Authorization: Bearer stl_...``, the client's
``api_key``); there is no cookie path, so no CSRF. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.

Steerlab's request fields go in the body beside OpenAI's (the client's ``extra_body``): ``recipe``
(``"<id>"`` or ``"<id>@<version>"``) or ``interventions`` (inline, the recipe language),
``overrides`` (``[{index, scale?, enabled?}]`` from the first token) and ``reads`` (stream per-token
probe scores and logit lens). Responses carry a ``steerlab`` field: the run id, token ids, reads
when asked, the adjustment log, and the seed (so a transcript can be redone).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import pydantic
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field

from webapp import untrusted_json
from webapp.accounts.models import User
from webapp.accounts.services import authenticate_api_token
from webapp.playground import completions, hosting, services
from webapp.playground.follow import follow_run
from webapp.playground.models import Run
from webapp.playground.services import PlaygroundError

log = logging.getLogger(__name__)

STATUS = {"not_found": 404, "model_not_found": 404, "quota": 429, "finished": 409, "too_large": 413}
FINISH_REASONS = {"stop": "stop", "length": "length", "aborted": "stop"}


# --------------------------------------------------------------------------------------------
# The request
# --------------------------------------------------------------------------------------------
class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_chat(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        # "developer" is OpenAI's newer name for the system message.
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatCompletionIn(BaseModel):
    """The OpenAI parameters Steerlab honours, and its own; anything else is refused by name."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=64)
    messages: list[MessageIn]
    stream: bool = False
    stream_options: StreamOptions | None = None
    # OpenAI refuses a limit below 1 (400, its "integer_below_min_value"); so does Steerlab.
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # Steerlab's extensions (the openai client's extra_body).
    recipe: str | int | None = None
    interventions: list[Any] | None = None
    overrides: list[Any] | None = None
    reads: bool = False

    def completion(self) -> completions.Completion:
        if self.n not in (None, 1):
            raise PlaygroundError("invalid", "n must be 1: one completion per request")
        limit = settings.STEERLAB_MAX_NEW_TOKENS
        for name in ("max_completion_tokens", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value > limit:
                raise ParamError(
                    name,
                    f"{name} is too large: {value}. This model supports at most {limit} completion tokens",
                )
        if self.top_logprobs and not self.logprobs:
            raise PlaygroundError("invalid", "top_logprobs needs logprobs: true")
        defaults = services.Sampling()
        return completions.Completion(
            model=self.model,
            messages=[m.as_chat() for m in self.messages],
            sampling=services.Sampling(
                max_new_tokens=self.max_completion_tokens or self.max_tokens or defaults.max_new_tokens,
                # OpenAI's defaults, so a script that sets nothing samples as it would there.
                temperature=1.0 if self.temperature is None else self.temperature,
                top_p=1.0 if self.top_p is None else self.top_p,
                seed=self.seed,
                stop=services.stop_sequences(self.stop),
                top_logprobs=self.top_logprobs or 0,
            ),
            recipe=None if self.recipe is None else str(self.recipe),
            interventions=self.interventions,
            overrides=self.overrides,
        )


class AdjustIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    intervention: int
    scale: float | None = None
    enabled: bool | None = None


# --------------------------------------------------------------------------------------------
# Errors and authentication
# --------------------------------------------------------------------------------------------
def error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> JsonResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JsonResponse(body, status=status)


class ParamError(PlaygroundError):
    """A refused request parameter, named in the error's ``param`` (as OpenAI names it)."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(code, message)
        self.param = param


def refused(exc: PlaygroundError) -> JsonResponse:
    return error(STATUS.get(exc.code, 400), exc.message, code=exc.code, param=getattr(exc, "param", None))


def _invalid_body(exc: pydantic.ValidationError) -> JsonResponse:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return error(400, f"unsupported parameter: {param}", param=param, code="unsupported_parameter")
    if first["type"] == "greater_than_equal":  # OpenAI's words for a number under its minimum
        minimum, got = first.get("ctx", {}).get("ge"), first.get("input")
        return error(
            400,
            f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got {got} instead.",
            param=param,
            code="integer_below_min_value",
        )
    return error(400, f"{param}: {first['msg']}" if param else first["msg"], param=param, code="invalid")


async def _authenticate(request: HttpRequest) -> User | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    user: User | None = await sync_to_async(authenticate_api_token)(token.strip())
    return user


def endpoint(method: str) -> Callable[[Callable[..., Awaitable[HttpResponse]]], Callable[..., Any]]:
    """An endpoint taking ``method`` only, from a live API token's user (passed after the request)."""

    def wrap(view: Callable[..., Awaitable[HttpResponse]]) -> Callable[..., Any]:
        @csrf_exempt  # a bearer token, never a cookie: nothing for CSRF to protect
        @functools.wraps(view)
        async def handler(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != method:
                return error(405, f"use {method}")
            user = await _authenticate(request)
            if user is None:
                return _unauthenticated()
            return await view(request, user, *args, **kwargs)

        return handler

    return wrap


def _unauthenticated() -> JsonResponse:
    return error(
        401,
        "an API token is required: Authorization: Bearer stl_... (create one under Account)",
        code="invalid_api_key",
    )


async def _body(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise PlaygroundError("too_large", "the request body is too large") from None
    try:
        return untrusted_json.loads(raw)
    except untrusted_json.UntrustedJsonError as exc:
        raise PlaygroundError("invalid", f"the request body is refused: {exc}") from None


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def _model_out(deployment: Any) -> dict[str, Any]:
    return {
        "id": deployment.name,
        "object": "model",
        "created": int(deployment.created_at.timestamp()),
        "owned_by": "steerlab",
        "steerlab": {
            "engine": deployment.engine,
            "source": deployment.hf_id_or_path,
            "revision": deployment.revision,
            "layers": deployment.num_layers,
            "hidden_size": deployment.hidden_size,
        },
    }


@endpoint("GET")
async def list_models(request: HttpRequest, user: User) -> HttpResponse:
    found = await sync_to_async(completions.deployments)()
    return JsonResponse({"object": "list", "data": [_model_out(d) for d in found]})


@endpoint("GET")
async def get_model(request: HttpRequest, user: User, name: str) -> HttpResponse:
    found = [d for d in await sync_to_async(completions.deployments)() if d.name == name]
    if not found:
        return error(404, f"no model {name!r}", code="model_not_found")
    return JsonResponse(_model_out(found[0]))


# --------------------------------------------------------------------------------------------
# Chat completions
# --------------------------------------------------------------------------------------------
class _Answer:
    """What a completion's frames say, gathered as they come (for the chunks and the final body)."""

    def __init__(self, run: Run, model: str, want_reads: bool, want_logprobs: bool) -> None:
        self.run = run
        self.id = f"chatcmpl-{run.pk}"
        self.model = model
        self.created = int(time.time())
        self.want_reads = want_reads
        self.want_logprobs = want_logprobs
        self.token_ids: list[int] = []
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.reads: list[dict[str, Any]] = []
        self.adjustments: list[dict[str, Any]] = []
        self.finish: dict[str, Any] | None = None

    def take(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        """Record ``frame``; the extension data a streamed chunk carries for it (None: no chunk)."""
        kind = frame["type"]
        if kind == "token":
            if frame["index"] < len(self.token_ids):
                return None  # a re-run attempt regenerating what was already sent (same seed)
            self.token_ids.append(frame["token_id"])
            self.text.append(frame["text"])
            self.logprobs.append(_logprob(frame))
            return {"token_ids": [frame["token_id"]], "index": frame["index"]}
        if kind == "reads" and self.want_reads:
            read = {k: frame[k] for k in ("index", "position", "probes", "lens")}
            self.reads.append(read)
            return {"reads": [read]}
        if kind == "adjusted":
            entry = {k: v for k, v in frame.items() if k in ("step", "index", "scale", "enabled")}
            self.adjustments.append(entry)
            return {"adjusted": entry}
        if kind in ("finished", "cancelled"):
            self.finish = frame
        return None

    @property
    def content(self) -> str:
        """The answer's text: the run's final text (cut before a stop string), else the tokens'."""
        final = (self.finish or {}).get("text")
        return final if isinstance(final, str) else "".join(self.text)

    @property
    def failed(self) -> str | None:
        if self.finish is not None and self.finish.get("status") == "failed":
            return str(self.finish.get("error") or "the run failed")
        return None

    @property
    def finish_reason(self) -> str:
        reason = (self.finish or {}).get("reason", "aborted")
        return FINISH_REASONS.get(reason, "stop")

    def usage(self) -> dict[str, int]:
        prompt = len(self.run.prompt_tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(self.token_ids),
            "total_tokens": prompt + len(self.token_ids),
        }

    def extension(self, *, with_reads: bool = True) -> dict[str, Any]:
        """The ``steerlab`` field (a stream's first and last chunks: its reads went by as they came)."""
        out: dict[str, Any] = {
            "run": self.run.pk,
            "conversation": self.run.conversation_id,
            "recipe_version": self.run.recipe_version_id,
            "seed": self.run.sampling["seed"],
            "finish_reason": (self.finish or {}).get("reason", "aborted"),
            "token_ids": self.token_ids,
            "adjustments": self.adjustments,
        }
        if self.want_reads and with_reads:
            out["reads"] = self.reads
        return out

    def chunk(
        self,
        delta: dict[str, Any],
        *,
        finish: str | None = None,
        logprobs: Any = None,
        extension: dict[str, Any] | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        }
        if extension is not None:
            body["steerlab"] = extension
        return _event(body)

    def response(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.content},
                    "logprobs": {"content": self.logprobs} if self.want_logprobs else None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
            "steerlab": self.extension(),
        }


def _logprob(frame: dict[str, Any]) -> dict[str, Any]:
    text = frame["text"]
    top = [
        {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        for _, token, logprob in frame.get("top", ())
    ]
    return {"token": text, "logprob": frame["logprob"], "bytes": list(text.encode()), "top_logprobs": top}


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def _follow_limit() -> float:
    # Queue wait included: a run waits for a free engine slot before its own time limit starts.
    return float(settings.STEERLAB_RUN_TIME_LIMIT * 2)


async def _stop_if_unfinished(answer: _Answer) -> None:
    """The client went away before the end: stop the run (as a closed browser's runs stop)."""
    if answer.finish is not None:
        return
    await get_channel_layer().group_send(
        services.control_group(answer.run.pk), {"type": "run.control", "action": "stop"}
    )
    log.info("openai.client_gone", extra={"run": answer.run.pk})


async def _stream(answer: _Answer, include_usage: bool) -> AsyncIterator[str]:
    try:
        yield answer.chunk({"role": "assistant", "content": ""}, extension=answer.extension(with_reads=False))
        async for frame in follow_run(answer.run.pk, answer.run.conversation_id, limit=_follow_limit()):
            extension = answer.take(frame)
            if extension is None:
                continue
            if frame["type"] == "token":
                logprobs = {"content": [answer.logprobs[-1]]} if answer.want_logprobs else None
                # A token's text never splits a character nor shows a stop string (the executor
                # holds such text back until it is whole or cannot be one): it is sent as it is.
                yield answer.chunk({"content": frame["text"]}, logprobs=logprobs, extension=extension)
            else:
                yield answer.chunk({}, extension=extension)
        if answer.failed:
            yield _event(
                {
                    "error": {
                        "message": answer.failed,
                        "type": "server_error",
                        "param": None,
                        "code": "run_failed",
                    }
                }
            )
            return
        if tail := (answer.finish or {}).get("tail"):  # what the token frames held back, at the end
            yield answer.chunk({"content": tail})
        yield answer.chunk({}, finish=answer.finish_reason, extension=answer.extension(with_reads=False))
        if include_usage:
            yield _event(
                {
                    "id": answer.id,
                    "object": "chat.completion.chunk",
                    "created": answer.created,
                    "model": answer.model,
                    "choices": [],
                    "usage": answer.usage(),
                }
            )
        yield "data: [DONE]\n\n"
    except TimeoutError as exc:
        yield _event(
            {"error": {"message": str(exc), "type": "server_error", "param": None, "code": "timeout"}}
        )
    finally:
        await _stop_if_unfinished(answer)


@endpoint("POST")
async def chat_completions(request: HttpRequest, user: User) -> HttpResponse:
    try:
        body = ChatCompletionIn.model_validate(await _body(request))
        completion = body.completion()
        if not settings.CELERY_BROKER_URL:
            hosting.bind_loop(asyncio.get_running_loop())  # embedded: the run publishes on this loop
        run = await sync_to_async(completions.start_completion)(user, completion)
    except pydantic.ValidationError as exc:
        return _invalid_body(exc)
    except PlaygroundError as exc:
        return refused(exc)
    except PermissionDenied as exc:  # a reference the user can no longer see (ReferenceRefused)
        return error(403, str(exc), type_="permission_error", code="forbidden")
    answer = _Answer(run, body.model, body.reads, bool(body.logprobs))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        response = StreamingHttpResponse(_stream(answer, include_usage), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must pass events on at once
        return response
    try:
        async for frame in follow_run(run.pk, run.conversation_id, limit=_follow_limit()):
            answer.take(frame)
    except TimeoutError as exc:
        return error(504, str(exc), type_="server_error", code="timeout")
    finally:
        await _stop_if_unfinished(answer)
    if answer.failed:
        return error(500, answer.failed, type_="server_error", code="run_failed")
    return JsonResponse(answer.response())


# --------------------------------------------------------------------------------------------
# Live control of a running completion
# --------------------------------------------------------------------------------------------
@endpoint("POST")
async def control_run(request: HttpRequest, user: User, run_id: int, action: str) -> HttpResponse:
    try:
        run = await sync_to_async(completions.get_completion_run)(user, run_id)
        if action == "adjust":
            body = AdjustIn.model_validate(await _body(request))
            message = await sync_to_async(services.adjust_message)(
                user, run, body.intervention, body.scale, body.enabled
            )
        else:
            if await sync_to_async(services.stop_run)(user, run):
                return JsonResponse({"run": run.pk, "action": action, "status": "cancelled"})
            message = {"type": "run.control", "action": "stop"}
    except pydantic.ValidationError as exc:
        return _invalid_body(exc)
    except PlaygroundError as exc:
        return refused(exc)
    await get_channel_layer().group_send(services.control_group(run.pk), message)
    return JsonResponse({"run": run.pk, "action": action, "status": "sent"})


urlpatterns = [
    path("models", list_models, name="openai_models"),
    path("models/<str:name>", get_model, name="openai_model"),
    path("chat/completions", chat_completions, name="openai_chat_completions"),
    path("runs/<int:run_id>/adjust", control_run, {"action": "adjust"}, name="openai_run_adjust"),
    path("runs/<int:run_id>/stop", control_run, {"action": "stop"}, name="openai_run_stop"),
]

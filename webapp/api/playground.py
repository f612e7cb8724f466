"""Conversations and runs over HTTP: what the browser app lists and shows around the live socket.

Conversations are private to their owner: anyone else's id reads as 404, like an unknown one. Live
work (generate, adjust, stop, replay) stays on the websocket, which checks every message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import File, Router, Schema, Status, UploadedFile
from ninja.pagination import paginate

from webapp.accounts.models import User
from webapp.api.library import DENIED, DetailOut
from webapp.api.pagination import BoundedLimitOffsetPagination
from webapp.library import services as library
from webapp.library.models import Recipe
from webapp.playground import exports, services
from webapp.playground.models import Conversation, Run, Source

router = Router(tags=["playground"])
RECENT_RUNS = 50  # a conversation's detail holds this many of its latest runs


class ConversationOut(Schema):
    id: int
    title: str
    source: str  # chat (the browser's) or api (one per OpenAI-compatible completion)
    deployment: str
    recipe_id: int | None
    recipe_version: int | None  # the version number new turns use (None: plain chat)
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_deployment(obj: Conversation) -> str:
        return obj.deployment.name

    @staticmethod
    def resolve_recipe_id(obj: Conversation) -> int | None:
        return obj.recipe_version.recipe_id if obj.recipe_version else None

    @staticmethod
    def resolve_recipe_version(obj: Conversation) -> int | None:
        return obj.recipe_version.number if obj.recipe_version else None


class RunOut(Schema):
    id: int
    conversation_id: int
    kind: str
    status: str
    attempt: int
    prompt: str
    compare_group: str | None
    recipe_version: int | None
    interventions: list[dict[str, Any]]
    sampling: dict[str, Any]
    overrides: list[dict[str, Any]]
    adjustments: list[dict[str, Any]]  # {step, index, scale?, enabled?}: the live-adjustment log
    tokens: list[int]
    text: str
    finish_reason: str
    replay_of: int | None
    queued_at: datetime
    finished_at: datetime | None


class ConversationDetailOut(ConversationOut):
    runs: list[RunOut]  # the latest runs, oldest first

    @staticmethod
    def resolve_runs(obj: Conversation) -> list[dict[str, Any]]:
        user = obj.owner
        runs = obj.runs.filter(user=user).select_related("prompt_message").order_by("-id")[:RECENT_RUNS]
        return [run_out(run) for run in reversed(runs)]


class ConversationIn(Schema):
    deployment: str
    recipe_id: int | None = None
    version: int | None = None  # default: the recipe's latest version
    title: str = ""


def _user(request: HttpRequest) -> User:
    user: User = request.auth  # type: ignore[attr-defined]
    return user


def run_out(run: Run) -> dict[str, Any]:
    return {
        **services.run_summary(run),
        "conversation_id": run.conversation_id,
        "prompt": run.prompt_message.content if run.prompt_message_id else "",
        "tokens": run.tokens,
        "queued_at": run.queued_at,
        "finished_at": run.finished_at,
    }


def _conversations(user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user).select_related("deployment", "recipe_version")


@router.get("/conversations", response=list[ConversationOut])
@paginate(BoundedLimitOffsetPagination)
def list_conversations(request: HttpRequest, source: str = Source.CHAT.value) -> QuerySet[Conversation]:
    """The user's conversations of one source: the chat's by default, ``api`` for completions."""
    if source not in Source.values:
        raise services.PlaygroundError("invalid", f"source is one of {', '.join(Source.values)}")
    return _conversations(_user(request)).filter(source=source)


@router.post("/conversations", response={201: ConversationOut, **DENIED})
def create_conversation(request: HttpRequest, payload: ConversationIn) -> Status[object]:
    user = _user(request)
    deployment = library.deployment_named(payload.deployment)
    version = None
    if payload.recipe_id is not None:
        recipe = library.get_visible(user, Recipe, payload.recipe_id)
        version = recipe.versions.get(number=payload.version) if payload.version else recipe.latest_version()
    elif payload.version is not None:
        raise services.PlaygroundError("invalid", "version needs a recipe_id")
    conversation = services.create_conversation(user, deployment, recipe_version=version, title=payload.title)
    return Status(201, _conversations(user).get(pk=conversation.pk))


@router.get("/conversations/{conversation_id}", response={200: ConversationDetailOut, 404: DetailOut})
def get_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    return _conversations(_user(request)).get(pk=conversation_id)


# Before "/runs/{run_id}": ninja would take "import" for a run id.
@router.post("/runs/import", response={201: RunOut, **DENIED, 413: DetailOut})
def import_run(request: HttpRequest, file: File[UploadedFile]) -> Status[object]:
    """A run rebuilt from an export, finished, in your account (replay it to redo it here)."""
    limit = settings.STEERLAB_MAX_UPLOAD_BYTES
    if file.size is not None and file.size > limit:
        raise services.PlaygroundError("too_large", f"the export is over the upload limit of {limit} bytes")
    run = exports.import_run(_user(request), file.read(limit + 1))
    return Status(201, run_out(_own_run(request, run.pk)))


@router.get("/runs/{run_id}", response={200: RunOut, 404: DetailOut})
def get_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return run_out(_own_run(request, run_id))


def _own_run(request: HttpRequest, run_id: int) -> Run:
    return Run.objects.select_related("prompt_message", "deployment").get(pk=run_id, user=_user(request))


@router.get("/runs/{run_id}/export", response={200: bytes, **DENIED})
def export_run(request: HttpRequest, run_id: int) -> HttpResponse:
    """A zip that redoes the run anywhere: manifest.json (model, engine, interventions, seed,
    adjustment log, result) and the vectors and probes it used (safetensors)."""
    name, data = exports.export_run(_user(request), _own_run(request, run_id))
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@router.post("/runs/{run_id}/replay", response={201: RunOut, **DENIED, 429: DetailOut})
def replay_run(request: HttpRequest, run_id: int) -> Status[object]:
    """Redo a finished run: same prompt, seed and overrides, its adjustments at their steps."""
    replay = services.replay_run(_user(request), _own_run(request, run_id))
    return Status(201, run_out(_own_run(request, replay.pk)))

"""Conversations and runs over HTTP: what the browser app lists and shows around the live socket.

Conversations are private to their owner: anyone else's id reads as 404, like an unknown one. Live
work (generate, adjust, stop, replay) stays on the websocket, which checks every message.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.pagination import paginate

from webapp.accounts.models import User
from webapp.api.library import DENIED, DetailOut
from webapp.api.pagination import BoundedLimitOffsetPagination
from webapp.library import services as library
from webapp.library.models import Recipe
from webapp.playground import services
from webapp.playground.models import Conversation, Run

router = Router(tags=["playground"])
RECENT_RUNS = 50  # a conversation's detail holds this many of its latest runs


class ConversationOut(Schema):
    id: int
    title: str
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
        return [_run_out(run) for run in reversed(runs)]


class ConversationIn(Schema):
    deployment: str
    recipe_id: int | None = None
    version: int | None = None  # default: the recipe's latest version
    title: str = ""


def _user(request: HttpRequest) -> User:
    user: User = request.auth  # type: ignore[attr-defined]
    return user


def _run_out(run: Run) -> dict[str, Any]:
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
def list_conversations(request: HttpRequest) -> QuerySet[Conversation]:
    return _conversations(_user(request))


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


@router.get("/runs/{run_id}", response={200: RunOut, 404: DetailOut})
def get_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = Run.objects.select_related("prompt_message").get(pk=run_id, user=_user(request))
    return _run_out(run)

"""Chat completions for scripts (the OpenAI-compatible endpoint): one request, one run.

A completion is a chat turn written from its request: a conversation (``source=api``) holds the
request's messages, and one run answers the last one on the shared engine, as the browser's turns
do — same prompt template, permissions, quotas, recipe resolution and isolation — so the same
messages, recipe and seed give the same tokens on either path. The interventions are a saved recipe
(``"<recipe id>"`` or ``"<recipe id>@<version>"``) or inline, validated like a recipe version.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.accounts.models import User
from webapp.library.models import ModelDeployment, Recipe, RecipeVersion
from webapp.library.services import can_view, validate_recipe_spec
from webapp.playground.models import Conversation, Message, Role, Run, RunKind, Source
from webapp.playground.services import (
    PlaygroundError,
    Sampling,
    check_overrides,
    check_quota,
    dispatch_on_commit,
    new_run,
    not_found,
    prompt_tokens,
)

log = logging.getLogger(__name__)

MAX_MESSAGES = 256
MAX_CHARS = 100_000  # all messages together
RECIPE_REF = re.compile(r"([1-9][0-9]{0,17})(?:@([1-9][0-9]{0,8}))?")


@dataclass(frozen=True)
class Completion:
    """What a completion request asks for, parsed but not yet checked against the library."""

    model: str
    messages: list[dict[str, str]]  # {role: system|user|assistant, content}
    sampling: Sampling
    recipe: str | None = None  # "<id>" or "<id>@<version>"
    interventions: list[Any] | None = None  # inline, instead of a recipe
    overrides: list[Any] | None = None


def deployments() -> list[ModelDeployment]:
    """The models a completion may name (every registered deployment)."""
    return list(ModelDeployment.objects.order_by("name"))


def _deployment(name: str) -> ModelDeployment:
    found = ModelDeployment.objects.filter(name=name).first()
    if found is None:
        raise PlaygroundError("model_not_found", f"no model {name!r}: GET /v1/models lists them")
    return found


def recipe_version(user: User, ref: str, deployment: ModelDeployment) -> RecipeVersion:
    """The version ``ref`` names (``"12"``: recipe 12's latest; ``"12@3"``: its version 3)."""
    match = RECIPE_REF.fullmatch(ref.strip())
    if match is None:
        raise PlaygroundError(
            "invalid", f"recipe must be '<recipe id>' or '<recipe id>@<version>', not {ref!r}"
        )
    recipe = Recipe.objects.filter(pk=int(match.group(1))).first()
    if recipe is None or not can_view(user, recipe):
        raise not_found("recipe")
    version = (
        recipe.versions.filter(number=int(match.group(2))).first()
        if match.group(2)
        else recipe.latest_version()
    )
    if version is None:
        raise not_found("recipe version")
    if recipe.deployment_id != deployment.pk:
        raise PlaygroundError(
            "invalid", f"recipe {recipe.pk} is for model {recipe.deployment.name!r}, not {deployment.name!r}"
        )
    return version


def _interventions(
    user: User, deployment: ModelDeployment, request: Completion
) -> tuple[RecipeVersion | None, dict[str, Any] | None, dict[str, str]]:
    """(version, spec, content hashes) of the request's interventions (all None/empty: plain chat)."""
    if request.recipe is not None and request.interventions is not None:
        raise PlaygroundError("invalid", "give a recipe or inline interventions, not both")
    if request.recipe is not None:
        version = recipe_version(user, request.recipe, deployment)
        return version, version.spec, dict(version.content_hashes)
    if request.interventions is None:
        return None, None, {}
    try:
        spec, objects = validate_recipe_spec(user, deployment, {"interventions": request.interventions})
    except ValidationError as exc:
        errors = getattr(exc, "error_dict", {})
        first = next(iter(errors.items()), None)
        if first is None:
            raise PlaygroundError("invalid", " ".join(exc.messages)) from exc
        path, problems = first
        raise PlaygroundError("invalid", f"{path}: {ValidationError(problems).messages[0]}") from exc
    return None, spec.model_dump(mode="json"), {ref: obj.content_hash for ref, obj in sorted(objects.items())}


def _messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not 1 <= len(messages) <= MAX_MESSAGES:
        raise PlaygroundError("invalid", f"messages must hold 1 to {MAX_MESSAGES} messages")
    if sum(len(m["content"]) for m in messages) > MAX_CHARS:
        raise PlaygroundError("invalid", f"the messages are longer than {MAX_CHARS} characters")
    if messages[-1]["role"] != Role.USER:
        raise PlaygroundError("invalid", "the last message must be the user's: the completion answers it")
    if not messages[-1]["content"].strip():
        raise PlaygroundError("invalid", "the last user message is empty")
    return messages


@transaction.atomic
def start_completion(user: User, request: Completion) -> Run:
    """Write the completion's conversation and its queued run; dispatched on commit."""
    messages = _messages(request.messages)
    deployment = _deployment(request.model)
    version, spec, hashes = _interventions(user, deployment, request)
    sampling = request.sampling.resolved()
    overrides = check_overrides(spec, request.overrides)
    check_quota(user, 1, sampling["max_new_tokens"])
    tokens = prompt_tokens(deployment, messages)
    conversation = Conversation.objects.create(
        owner=user,
        deployment=deployment,
        recipe_version=version,
        source=Source.API,
        title=messages[-1]["content"].strip()[:80],
    )
    rows = Message.objects.bulk_create(
        [Message(conversation=conversation, role=m["role"], content=m["content"]) for m in messages]
    )
    run = new_run(
        user,
        conversation,
        rows[-1],
        RunKind.CHAT,
        version,
        tokens,
        sampling,
        overrides,
        spec=spec,
        content_hashes=hashes,
    )
    dispatch_on_commit([run])
    log.info("playground.completion_started", extra={"conversation": conversation.pk, "run": run.pk})
    return run


def get_completion_run(user: User, run_id: int) -> Run:
    """A run of ``user``'s (for a script that adjusts or stops its completion)."""
    found = Run.objects.filter(pk=run_id, user=user).first()
    if found is None:
        raise not_found("run")
    return found

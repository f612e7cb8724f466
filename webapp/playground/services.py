"""The playground's rules: conversations, chat turns, live control requests, queries.

Everything a websocket message or an HTTP call may do goes through here, checked against the
acting user. Work is dispatched after commit (``dispatch.dispatch_run``): the run row exists
before the task does.
"""

from __future__ import annotations

import logging
import math
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from webapp.accounts.models import User
from webapp.library.models import ModelDeployment, RecipeVersion
from webapp.library.references import check_references
from webapp.library.services import can_view
from webapp.playground import stops
from webapp.playground.models import (
    ACTIVE_STATUSES,
    Conversation,
    Message,
    Role,
    Run,
    RunEvent,
    RunKind,
    RunStatus,
    new_compare_group,
)
from workers.engines.base import MAX_TOP_LOGPROBS

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000
MAX_ABS_SCALE = 1e4


class PlaygroundError(Exception):
    """A refused request; ``code`` is stable for clients (``not_found``, ``invalid``, ``quota``...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(what: str) -> PlaygroundError:
    # Unknown and not-yours read the same: an id reveals nothing about others' objects.
    return PlaygroundError("not_found", f"no {what} that you can see")


# --------------------------------------------------------------------------------------------
# Group names (channel layer): events of a conversation, control of a run.
# --------------------------------------------------------------------------------------------
def conversation_group(conversation_id: int) -> str:
    return f"conv-{conversation_id}"


def control_group(run_id: int) -> str:
    return f"runctl-{run_id}"


def engine_status_key(deployment: str) -> str:
    """Cache key of a deployment's engine status (written by its workers, read by the socket)."""
    return f"steerlab:engine:{deployment}"


# --------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------
def _check_recipe_version(user: User, deployment: ModelDeployment, version: RecipeVersion | None) -> None:
    if version is None:
        return
    if not can_view(user, version.recipe):
        raise not_found("recipe")
    if version.recipe.deployment_id != deployment.pk:
        raise PlaygroundError(
            "invalid", f"recipe {version.recipe.name!r} is for another model than {deployment.name!r}"
        )


def create_conversation(
    user: User, deployment: ModelDeployment, *, recipe_version: RecipeVersion | None = None, title: str = ""
) -> Conversation:
    _check_recipe_version(user, deployment, recipe_version)
    return Conversation.objects.create(
        owner=user, deployment=deployment, recipe_version=recipe_version, title=title.strip()[:200]
    )


def set_recipe_version(user: User, conversation: Conversation, version: RecipeVersion | None) -> Conversation:
    _check_recipe_version(user, conversation.deployment, version)
    conversation.recipe_version = version
    conversation.save(update_fields=["recipe_version", "updated_at"])
    return conversation


def get_conversation(user: User, pk: Any) -> Conversation:
    """The user's own conversation (conversations are private to their owner)."""
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise not_found("conversation")
    found = (
        Conversation.objects.select_related("deployment", "recipe_version__recipe")
        .filter(pk=pk, owner=user)
        .first()
    )
    if found is None:
        raise not_found("conversation")
    return found


def get_run(user: User, conversation: Conversation, pk: Any) -> Run:
    """A run of ``conversation`` that ``user`` owns."""
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise not_found("run")
    found = Run.objects.filter(pk=pk, conversation=conversation, user=user).first()
    if found is None:
        raise not_found("run")
    return found


def get_recipe_version(user: User, pk: Any) -> RecipeVersion:
    if not isinstance(pk, int) or isinstance(pk, bool):
        raise not_found("recipe version")
    found = RecipeVersion.objects.select_related("recipe").filter(pk=pk).first()
    if found is None or not can_view(user, found.recipe):
        raise not_found("recipe version")
    return found


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _tokenizer(source: str, revision: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision or None)


def tokenizer_for(deployment: ModelDeployment) -> Any:
    return _tokenizer(deployment.hf_id_or_path, deployment.revision)


def _history(conversation: Conversation) -> list[dict[str, str]]:
    """The transcript the next turn continues: user messages and the chosen (steered) answers."""
    messages = conversation.messages.filter(
        Q(role=Role.USER) | Q(role=Role.ASSISTANT, answer_of__status__in=[RunStatus.DONE, RunStatus.STOPPED])
    ).order_by("id")
    return [{"role": m.role, "content": m.content} for m in messages]


def prompt_tokens(deployment: ModelDeployment, history: list[dict[str, str]]) -> list[int]:
    """The prompt of a chat turn after ``history``, refused over the prompt limit."""
    tokens = chat_prompt(tokenizer_for(deployment), history)
    limit = settings.STEERLAB_MAX_PROMPT_TOKENS
    if len(tokens) > limit:
        raise PlaygroundError("quota", f"the conversation is {len(tokens)} tokens long; the limit is {limit}")
    return tokens


def chat_prompt(tokenizer: Any, history: list[dict[str, str]]) -> list[int]:
    """The tokens a chat turn sends to the model: the chat template's, or a plain transcript."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    text = "".join(f"{m['role']}: {m['content']}\n" for m in history) + "assistant: "
    return [int(t) for t in tokenizer(text)["input_ids"]]


# --------------------------------------------------------------------------------------------
# Chat turns
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    stop: tuple[str, ...] = ()  # stop sequences (``webapp.playground.stops``)
    top_logprobs: int = 0  # each token comes with this many most likely tokens and their logprobs

    def resolved(self) -> dict[str, Any]:
        max_tokens = settings.STEERLAB_MAX_NEW_TOKENS
        if not 1 <= self.max_new_tokens <= max_tokens:
            raise PlaygroundError("quota", f"max_new_tokens must be between 1 and {max_tokens}")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= 5.0):
            raise PlaygroundError("invalid", "temperature must be between 0 and 5")
        if not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise PlaygroundError("invalid", "top_p must be in (0, 1]")
        seed = secrets.randbelow(1 << 31) if self.seed is None else self.seed
        if not 0 <= seed < 1 << 31:
            raise PlaygroundError("invalid", "seed must be in [0, 2**31)")
        if (why := stops.problem(self.stop)) is not None:
            raise PlaygroundError("invalid", why)
        if (
            isinstance(self.top_logprobs, bool)
            or not isinstance(self.top_logprobs, int)
            or not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS
        ):
            raise PlaygroundError(
                "invalid", f"top_logprobs must be an integer between 0 and {MAX_TOP_LOGPROBS}"
            )
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": seed,
        }
        # Absent rather than empty or 0: runs stored before these settings read the same.
        if self.stop:
            out["stop"] = list(self.stop)
        if self.top_logprobs:
            out["top_logprobs"] = self.top_logprobs
        return out


def stop_sequences(raw: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``, checked: none, a string or a list of strings."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise PlaygroundError("invalid", "stop is a string or a list of strings")
    if (why := stops.problem(raw)) is not None:
        raise PlaygroundError("invalid", why)
    return tuple(raw)


def _check_adjustment(spec: dict[str, Any] | None, index: Any, scale: Any, enabled: Any) -> dict[str, Any]:
    count = len(spec["interventions"]) if spec else 0
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise PlaygroundError("invalid", f"intervention index must be an integer in [0, {count})")
    out: dict[str, Any] = {"index": index}
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise PlaygroundError("invalid", "scale must be a finite number")
        if abs(scale) > MAX_ABS_SCALE:
            raise PlaygroundError("invalid", f"scale must be within ±{MAX_ABS_SCALE:g}")
        out["scale"] = float(scale)
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise PlaygroundError("invalid", "enabled must be true or false")
        out["enabled"] = enabled
    if len(out) == 1:
        raise PlaygroundError("invalid", "give a scale, an enabled flag, or both")
    return out


def check_overrides(spec: dict[str, Any] | None, overrides: Any) -> list[dict[str, Any]]:
    if overrides is None:
        return []
    if not isinstance(overrides, list) or len(overrides) > 64:
        raise PlaygroundError("invalid", "overrides must be a list of at most 64 {index, scale, enabled}")
    out = []
    for item in overrides:
        if not isinstance(item, dict) or set(item) - {"index", "scale", "enabled"}:
            raise PlaygroundError("invalid", "each override is {index, scale?, enabled?}")
        out.append(_check_adjustment(spec, item.get("index"), item.get("scale"), item.get("enabled")))
    return out


def check_quota(user: User, new_runs: int, max_new_tokens: int) -> None:
    active = Run.objects.filter(user=user, status__in=ACTIVE_STATUSES).count()
    limit = settings.STEERLAB_MAX_CONCURRENT_RUNS
    if active + new_runs > limit:
        raise PlaygroundError(
            "quota", f"you have {active} runs in progress; at most {limit} may run at once — stop one first"
        )
    check_token_budget(user, new_runs * max_new_tokens)


def tokens_used_since(user: User, since: Any) -> int:
    """What ``user``'s runs and batch runs started since ``since`` may generate.

    Budgeted by what they may generate (max_new_tokens; prompts x max_new_tokens for a batch run),
    so a quota holds while they run. Every batch run counts: a cancelled one can be resumed.
    """
    from webapp.jobs.models import Job, JobKind  # batch runs are jobs (which build on the playground)

    runs = (
        Run.objects.filter(user=user, queued_at__gte=since)
        .exclude(status=RunStatus.CANCELLED)
        .aggregate(n=Sum("max_new_tokens"))["n"]
        or 0
    )
    batches = Job.objects.filter(owner=user, kind=JobKind.BATCH_RUN, created_at__gte=since)
    return int(runs) + sum(int(p.get("token_budget", 0)) for p in batches.values_list("params", flat=True))


def check_token_budget(user: User, tokens: int, *, what: str = "") -> None:
    """Refuse ``tokens`` more in the last 24 hours over the daily budget (runs and batch runs)."""
    used = tokens_used_since(user, timezone.now() - timedelta(days=1))
    budget = settings.STEERLAB_DAILY_TOKEN_BUDGET
    if used + tokens > budget:
        raise PlaygroundError(
            "quota", f"{what}the daily budget of {budget} tokens would be exceeded ({used} used)"
        )


def new_run(
    user: User,
    conversation: Conversation,
    message: Message,
    kind: str,
    version: RecipeVersion | None,
    tokens: list[int],
    sampling: dict[str, Any],
    overrides: list[dict[str, Any]],
    *,
    spec: dict[str, Any] | None = None,
    content_hashes: dict[str, str] | None = None,
    **extra: Any,
) -> Run:
    """A queued run; its interventions are ``version``'s, or ``spec`` (inline, with its hashes)."""
    answer = None
    if kind in (RunKind.CHAT, RunKind.STEERED):
        answer = Message.objects.create(conversation=conversation, role=Role.ASSISTANT, content="")
    if version is not None:
        spec, content_hashes = version.spec, dict(version.content_hashes)
    return Run.objects.create(
        conversation=conversation,
        user=user,
        deployment=conversation.deployment,
        kind=kind,
        prompt_message=message,
        answer=answer,
        recipe_version=version,
        spec=spec,
        content_hashes=content_hashes or {},
        prompt_tokens=tokens,
        sampling=sampling,
        max_new_tokens=sampling["max_new_tokens"],
        overrides=overrides if spec is not None else [],
        **extra,
    )


@transaction.atomic
def start_turn(
    user: User,
    conversation: Conversation,
    content: Any,
    *,
    sampling: Sampling | None = None,
    overrides: Any = None,
    compare: bool = False,
) -> list[Run]:
    """Add the user's message and queue its answer: one run, or two in compare mode.

    Compare mode generates the unsteered baseline and the steered answer concurrently, with the
    same prompt and seed, so their difference is the recipe's doing.
    """
    if conversation.owner_id != user.pk:
        raise not_found("conversation")
    if not isinstance(content, str) or not content.strip():
        raise PlaygroundError("invalid", "the message is empty")
    if len(content) > MAX_MESSAGE_CHARS:
        raise PlaygroundError("invalid", f"the message is longer than {MAX_MESSAGE_CHARS} characters")
    version = conversation.recipe_version
    if version is not None and not can_view(user, version.recipe):
        raise not_found("recipe")
    if compare and version is None:
        raise PlaygroundError("invalid", "compare mode needs an active recipe to compare against")
    resolved = (sampling or Sampling()).resolved()
    checked = check_overrides(version.spec if version is not None else None, overrides)
    kinds = [RunKind.BASELINE, RunKind.STEERED] if compare else [RunKind.CHAT]
    check_quota(user, len(kinds), resolved["max_new_tokens"])

    Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    history = [*_history(conversation), {"role": Role.USER, "content": content}]
    tokens = prompt_tokens(conversation.deployment, history)
    message = Message.objects.create(conversation=conversation, role=Role.USER, content=content)
    group = new_compare_group() if compare else None
    runs = [
        new_run(
            user,
            conversation,
            message,
            kind,
            None if kind == RunKind.BASELINE else version,
            tokens,
            resolved,
            checked,
            compare_group=group,
        )
        for kind in kinds
    ]
    if not conversation.title:
        conversation.title = content.strip()[:80]
    conversation.save(update_fields=["title", "updated_at"])
    dispatch_on_commit(runs)
    log.info("playground.turn_started", extra={"conversation": conversation.pk, "runs": [r.pk for r in runs]})
    return runs


@transaction.atomic
def replay_run(user: User, run: Run) -> Run:
    """Redo ``run`` from its record: same prompt, seed and overrides, its adjustments at their steps."""
    if run.user_id != user.pk:
        raise not_found("run")
    if run.active:
        raise PlaygroundError("invalid", "the run is still in progress; replay it once it has finished")
    if run.recipe_version is not None and not can_view(user, run.recipe_version.recipe):
        raise not_found("recipe")
    check_quota(user, 1, run.max_new_tokens)
    replay = new_run(
        user,
        run.conversation,
        run.prompt_message,
        RunKind.REPLAY,
        run.recipe_version,
        list(run.prompt_tokens),
        dict(run.sampling),
        list(run.overrides),
        spec=run.spec,  # a run without a recipe version may carry inline interventions (the API's)
        content_hashes=dict(run.content_hashes),
        replay_of=run,
        scheduled=list(run.adjustments),
    )
    dispatch_on_commit([replay])
    return replay


def dispatch_on_commit(runs: list[Run]) -> None:
    """Hand ``runs`` to a worker once the transaction commits: the one path every run takes.

    First each run's user must still see every object it uses (a refusal names it and, raised
    inside the caller's transaction, writes nothing); the worker checks again when it claims it.
    """
    from webapp.playground.dispatch import dispatch_run

    for run in runs:
        check_references(run.user, run.references())
    for run in runs:
        transaction.on_commit(lambda run_id=run.pk: dispatch_run(run_id))


# --------------------------------------------------------------------------------------------
# Live control (the consumer sends the checked message on the run's control group)
# --------------------------------------------------------------------------------------------
def adjust_message(user: User, run: Run, index: Any, scale: Any, enabled: Any) -> dict[str, Any]:
    if run.user_id != user.pk:
        raise not_found("run")
    if not run.active:
        raise PlaygroundError("finished", f"run {run.pk} has finished ({run.status})")
    if run.spec is None:
        raise PlaygroundError("invalid", f"run {run.pk} has no interventions to adjust")
    adjustment = _check_adjustment(run.spec, index, scale, enabled)
    return {"type": "run.control", "action": "adjust", "adjustment": adjustment}


def stop_run(user: User, run: Run) -> bool:
    """Stop ``run``. True: it was still queued and is now cancelled (no worker needs telling)."""
    if run.user_id != user.pk:
        raise not_found("run")
    if not run.active:
        raise PlaygroundError("finished", f"run {run.pk} has finished ({run.status})")
    now = timezone.now()
    cancelled = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=now, finish_reason="aborted"
    )
    return bool(cancelled)


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------
def events_after(run_id: int, attempt: int, seq: int, *, limit: int = 5000) -> list[dict[str, Any]]:
    """Persisted event frames of run ``run_id`` after ``(attempt, seq)``, in order.

    The caller has authorised the run (the consumer does when a socket starts or resumes it).
    """
    rows = (
        RunEvent.objects.filter(run_id=run_id)
        .filter(Q(attempt__gt=attempt) | Q(attempt=attempt, seq__gt=seq))
        .order_by("attempt", "seq")
        .values_list("payload", flat=True)[:limit]
    )
    return list(rows)


def queue_position(run: Run) -> int:
    """How many runs of the same model were queued before this one and still wait (0: next)."""
    return Run.objects.filter(deployment=run.deployment, status=RunStatus.QUEUED, pk__lt=run.pk).count()


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "kind": run.kind,
        "status": run.status,
        "attempt": run.attempt,
        "compare_group": str(run.compare_group) if run.compare_group else None,
        "recipe_version": run.recipe_version_id,
        "interventions": (run.spec or {}).get("interventions", []),
        "sampling": run.sampling,
        "overrides": run.overrides,
        "adjustments": run.adjustments,
        "text": run.text,
        "finish_reason": run.finish_reason,
        "replay_of": run.replay_of_id,
    }

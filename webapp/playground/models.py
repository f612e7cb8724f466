"""Conversations, messages and runs (one generation each), and the events runs stream.

A ``Run`` is written before its work is dispatched and pins everything needed to redo it: the
recipe version, the content hashes of the vectors/probes it resolved to, the prompt tokens, the
sampling parameters and seed, the per-turn overrides and the live-adjustment log with the step
each adjustment took effect at.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.library import references
from webapp.library.models import ModelDeployment, RecipeVersion
from webapp.library.references import Reference


class Source(models.TextChoices):
    CHAT = "chat", "chat"  # the browser's conversations
    API = "api", "api"  # one per OpenAI-compatible completion: its request's messages and its run
    IMPORT = "import", "import"  # one per imported run export


class Conversation(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="conversations")
    # The recipe version new turns use (None: plain chat). Changing it never touches past runs.
    recipe_version = models.ForeignKey(
        RecipeVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.CHAT)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"conversation {self.pk}"


class Role(models.TextChoices):
    SYSTEM = "system", "system"  # API requests only: the browser's chat has no system messages
    USER = "user", "user"
    ASSISTANT = "assistant", "assistant"


class Message(models.Model):
    """One chat message. An assistant message is the answer of exactly one run (its ``run``)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["conversation_id", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"  # stopped by a stop token or the length limit
    STOPPED = "stopped", "stopped"  # stopped by its user (or its closed browser)
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"  # stopped before any worker took it


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class RunKind(models.TextChoices):
    CHAT = "chat", "chat"
    BASELINE = "baseline", "baseline"  # compare mode: the same prompt without the recipe
    STEERED = "steered", "steered"  # compare mode: the same prompt with the recipe
    REPLAY = "replay", "replay"  # a run redone from another run's adjustment log


class Run(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="runs")
    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.CHAT)
    # The prompt's user message and the answer this run writes.
    prompt_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="runs")
    answer = models.OneToOneField(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="answer_of"
    )
    # Compare mode: the baseline and steered runs of one turn share a group id.
    compare_group = models.UUIDField(null=True, blank=True, db_index=True)
    replay_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replays"
    )

    # What runs, frozen when the run is written.
    recipe_version = models.ForeignKey(
        RecipeVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    spec = models.JSONField(null=True, blank=True)  # the version's spec (None: no interventions)
    content_hashes = models.JSONField(default=dict)  # library id -> content hash
    prompt_tokens = models.JSONField(default=list)
    sampling = models.JSONField(default=dict)  # max_new_tokens, temperature, top_p, seed
    max_new_tokens = models.PositiveIntegerField(default=0)  # = sampling's, for quota sums
    overrides = models.JSONField(default=list)  # per-turn [{index, scale, enabled}] before step 0
    # Replays only: the adjustment log to apply at the recorded steps.
    scheduled = models.JSONField(default=list)

    # Execution.
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # Results of the last attempt.
    adjustments = models.JSONField(default=list)  # [{step, index, scale, enabled}] as acknowledged
    tokens = models.JSONField(default=list)
    text = models.TextField(blank=True, default="")
    finish_reason = models.CharField(max_length=16, blank=True, default="")
    error = models.TextField(blank=True, default="")
    # Per-token probe scores: float16 [positions, len(read_columns)], row-major, little-endian.
    reads = models.BinaryField(default=b"")
    read_columns = models.JSONField(default=list)  # intervention index of each column
    # The engine that generated it: {"engine": "hf"|"vllm", "version": ...} (exports name it).
    engine = models.JSONField(default=dict, blank=True)
    # An imported run: where its export came from (its site's run id, model, engine, export time).
    imported = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="playground_run_lease"),
            models.Index(fields=["user", "status"], name="playground_run_user_status"),
            models.Index(fields=["deployment", "status", "id"], name="playground_run_queue"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def references(self) -> set[Reference]:
        """The library objects this run uses: its recipe, and every vector and probe of its spec."""
        out = references.of_spec(self.spec, self.content_hashes)
        if self.recipe_version_id is not None:
            out.add(Reference("recipe", self.recipe_version.recipe_id))  # type: ignore[union-attr]
        return out


class RunEvent(models.Model):
    """A streamed event, persisted for resume; ``(run, attempt, seq)`` identifies it."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    attempt = models.PositiveIntegerField()
    seq = models.PositiveIntegerField()
    payload = models.JSONField()

    class Meta:
        ordering = ["run_id", "attempt", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["run", "attempt", "seq"], name="playground_runevent_unique_seq")
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.attempt}.{self.seq}"


def new_compare_group() -> uuid.UUID:
    return uuid.uuid4()

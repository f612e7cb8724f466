"""The library: model deployments, steering vectors, probes, datasets and versioned recipes.

Business rules live in ``services.py``; these models add only what must hold whatever the caller:

* a ``team``-visible object names its team (a database check constraint);
* a :class:`RecipeVersion` never changes once written: ``save()`` on a stored version,
  ``delete()`` of one and ``QuerySet.update()`` / ``QuerySet.delete()`` on versions all raise
  :class:`ImmutableError` (deleting a whole :class:`Recipe` still cascades to its versions);
* a vector or probe that any recipe version references cannot be deleted: every reference is a
  :class:`RecipeVersionRef` row whose foreign keys are ``PROTECT`` (the services check first and
  give a clear message; the constraint is the backstop for every other path, the admin included).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from interventions.sites import ModelShape

VECTOR_PREFIX = "vec_"
PROBE_PREFIX = "prb_"


class ImmutableError(Exception):
    """An attempt to change or delete a recipe version, which never changes once written."""


class Engine(models.TextChoices):
    HF = "hf", "transformers (reference)"
    VLLM = "vllm", "vLLM"


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private"
    TEAM = "team", "Team"
    PUBLIC = "public", "Public"


class Point(models.TextChoices):
    RESID_PRE = "resid_pre", "resid_pre"
    RESID_POST = "resid_post", "resid_post"
    ATTN_OUT = "attn_out", "attn_out"
    MLP_OUT = "mlp_out", "mlp_out"
    MLP_ACT = "mlp_act", "mlp_act"


class DatasetKind(models.TextChoices):
    LABELLED = "labelled", "Labelled prompts"
    CONTRASTIVE = "contrastive", "Contrastive pairs"


class ModelDeployment(models.Model):
    """A served model: where its weights come from, which engine serves it, and its geometry."""

    name = models.SlugField(max_length=64, unique=True)
    hf_id_or_path = models.CharField(max_length=500)
    revision = models.CharField(max_length=100, blank=True, default="")
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.HF)
    model_type = models.CharField(max_length=64)
    hidden_size = models.PositiveIntegerField()
    num_layers = models.PositiveIntegerField()
    mlp_size = models.PositiveIntegerField()
    vocab_size = models.PositiveIntegerField()
    queue_name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def shape(self) -> ModelShape:
        return ModelShape(
            model_type=self.model_type,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            mlp_size=self.mlp_size,
            vocab_size=self.vocab_size,
        )


class Owned(models.Model):
    """Owner, optional team and visibility: what every user-made library object shares."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="%(app_label)s_%(class)s_owned"
    )
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="%(app_label)s_%(class)s_set",
    )
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(
                condition=~Q(visibility=Visibility.TEAM) | Q(team__isnull=False),
                name="%(app_label)s_%(class)s_team_visibility_needs_team",
            )
        ]


class SteeringVector(Owned):
    """Per-layer directions for one deployment, stored as safetensors bytes (``layer.<i>`` tensors)."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="vectors")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    method = models.CharField(max_length=32)
    provenance = models.JSONField(default=dict, blank=True)
    layers = models.JSONField(default=list)
    hidden_size = models.PositiveIntegerField()
    tensors = models.BinaryField()
    # SHA-256 of the tensors (``interventions.vectors.SteeringVector.content_hash``); not unique:
    # two people may upload the same vector, or fork one.
    content_hash = models.CharField(max_length=64)
    forked_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )

    class Meta(Owned.Meta):
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "content_hash"], name="library_vector_hash_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    @property
    def public_id(self) -> str:
        """The id recipes use: ``vec_<pk>``."""
        return f"{VECTOR_PREFIX}{self.pk}"


class Probe(Owned):
    """A linear probe ``h·w + b`` reading one site of one deployment (weights as safetensors bytes)."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="probes")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    layer = models.PositiveIntegerField()
    point = models.CharField(max_length=16, choices=Point.choices, default=Point.RESID_POST)
    width = models.PositiveIntegerField()
    weight = models.BinaryField()
    bias = models.FloatField()
    label_names = models.JSONField(default=list)
    metrics = models.JSONField(default=dict, blank=True)
    provenance = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    forked_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )

    class Meta(Owned.Meta):
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "content_hash"], name="library_probe_hash_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.public_id})"

    @property
    def public_id(self) -> str:
        """The id recipes use: ``prb_<pk>``."""
        return f"{PROBE_PREFIX}{self.pk}"


class Dataset(Owned):
    """Labelled prompts (``text``, ``label``) or contrastive pairs (``positive``, ``negative``)."""

    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=DatasetKind.choices)
    rows = models.JSONField(default=list)
    row_count = models.PositiveIntegerField()
    content_hash = models.CharField(max_length=64, db_index=True)
    provenance = models.JSONField(default=dict, blank=True)
    forked_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )

    class Meta(Owned.Meta):
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name


class Recipe(Owned):
    """A named, versioned recipe for one deployment; its content lives in its versions."""

    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="recipes")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    forked_from_version = models.ForeignKey(
        "RecipeVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="forks"
    )

    class Meta(Owned.Meta):
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> RecipeVersion | None:
        return self.versions.order_by("-number").first()


class RecipeVersionQuerySet(models.QuerySet["RecipeVersion"]):
    def update(self, **kwargs: Any) -> int:
        raise ImmutableError("recipe versions are immutable: create a new version instead of updating")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise ImmutableError("recipe versions are immutable and cannot be deleted one by one")


class RecipeVersion(models.Model):
    """One immutable state of a recipe: its validated spec and the content hashes it resolved to."""

    recipe = models.ForeignKey(Recipe, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    # Library id -> content hash of every vector/probe the spec referenced when it was written.
    content_hashes = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="recipe_versions"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects: ClassVar[models.Manager[RecipeVersion]] = RecipeVersionQuerySet.as_manager()

    class Meta:
        ordering = ["recipe_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["recipe", "number"], name="library_recipeversion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.recipe} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise ImmutableError(f"recipe version {self} is immutable: create a new version instead")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableError(f"recipe version {self} is immutable and cannot be deleted on its own")


class RecipeVersionRef(models.Model):
    """One vector or probe that a recipe version references; ``PROTECT`` keeps it from deletion."""

    version = models.ForeignKey(RecipeVersion, on_delete=models.CASCADE, related_name="refs")
    ref = models.CharField(max_length=128)
    vector = models.ForeignKey(
        SteeringVector, on_delete=models.PROTECT, null=True, blank=True, related_name="recipe_refs"
    )
    probe = models.ForeignKey(
        Probe, on_delete=models.PROTECT, null=True, blank=True, related_name="recipe_refs"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(vector__isnull=False) & Q(probe__isnull=True))
                | (Q(vector__isnull=True) & Q(probe__isnull=False)),
                name="library_recipeversionref_one_target",
            ),
            models.UniqueConstraint(fields=["version", "ref"], name="library_recipeversionref_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.version} -> {self.ref}"

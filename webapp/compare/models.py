"""Probe comparison boards: a team's probes for one concept, side by side on one evaluation dataset.

A board names a deployment, a labelled evaluation dataset (and which label is positive) and the
probes to compare — anyone's that the person adding them can see, any layers. Evaluating it is a
job (``webapp.jobs``, kind ``evaluate``) whose result is the board's table: every re-run is a new
job, so earlier results stay readable.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.library.models import Dataset, ModelDeployment, Owned, Probe


class Pooling(models.TextChoices):
    LAST = "last", "last token"
    MEAN = "mean", "mean over tokens"


class Board(Owned):
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="boards")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="boards")
    positive_label = models.CharField(max_length=100)
    # An example's score: its last token's probe score, or the mean over its tokens (a linear
    # probe's mean score is the score of the mean activation).
    pooling = models.CharField(max_length=8, choices=Pooling.choices, default=Pooling.LAST)
    probes = models.ManyToManyField(Probe, through="BoardProbe", related_name="boards")

    class Meta(Owned.Meta):
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.name


class BoardProbe(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="entries")
    probe = models.ForeignKey(Probe, on_delete=models.CASCADE, related_name="board_entries")
    added_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["board_id", "id"]
        constraints = [models.UniqueConstraint(fields=["board", "probe"], name="compare_boardprobe_unique")]

    def __str__(self) -> str:
        return f"{self.board} <- {self.probe}"

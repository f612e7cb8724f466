"""Jobs: work on the shared engine that is not a chat turn, done in resumable batches.

A job (building a steering vector, training a probe, evaluating a comparison board, a steering
sweep, a batch run) is written before it is dispatched, like a run, and executed by the worker
that hosts its model's engine, under a heartbeat lease (``webapp.leases``). Its input is split
into batches in a fixed order; each finished batch is stored as a :class:`JobBatch` row, so a job
whose worker died resumes from its completed batches instead of starting over. Jobs are owned and
shared like library objects (owner, team, visibility), and what a job makes inherits its sharing.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from webapp.library import references
from webapp.library.models import Dataset, ModelDeployment, Owned, Probe, SteeringVector
from webapp.library.references import Reference


class JobKind(models.TextChoices):
    BUILD_VECTOR = "build_vector", "build a steering vector"
    TRAIN_PROBE = "train_probe", "train a probe"
    EVALUATE = "evaluate", "evaluate a board"
    SWEEP = "sweep", "steering sweep"
    BATCH_RUN = "batch_run", "batch run"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(Owned):
    deployment = models.ForeignKey(ModelDeployment, on_delete=models.PROTECT, related_name="jobs")
    kind = models.CharField(max_length=16, choices=JobKind.choices)
    name = models.CharField(max_length=100)
    # Validated parameters, with the content hashes of every input they name (a job never reads
    # an input that changed after it was written: it fails instead).
    params = models.JSONField(default=dict)
    dataset = models.ForeignKey(
        Dataset, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"
    )
    board = models.ForeignKey(
        "compare.Board", on_delete=models.CASCADE, null=True, blank=True, related_name="jobs"
    )

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    attempt = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    done_batches = models.PositiveIntegerField(default=0)
    total_batches = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    result = models.JSONField(default=dict, blank=True)
    vector = models.ForeignKey(
        SteeringVector, on_delete=models.SET_NULL, null=True, blank=True, related_name="made_by_jobs"
    )
    probe = models.ForeignKey(
        Probe, on_delete=models.SET_NULL, null=True, blank=True, related_name="made_by_jobs"
    )

    class Meta(Owned.Meta):
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "lease_expires_at"], name="jobs_job_lease")]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATUSES

    def references(self) -> set[Reference]:
        """The library objects this job uses, read from its pinned params whatever its kind: its
        dataset, a sweep's vector, the probes it scores with, a batch run's recipe and its spec's
        vectors and probes."""
        params = self.params
        out = references.of_spec(params.get("spec"), params.get("content_hashes"))
        if self.dataset_id is not None:
            out.add(Reference("dataset", self.dataset_id))
        if params.get("vector_id") is not None:
            out.add(Reference("vector", int(params["vector_id"])))
        out.update(Reference("probe", int(probe["id"])) for probe in params.get("probes", []))
        if params.get("recipe"):
            out.add(Reference("recipe", int(params["recipe"]["id"])))
        return out


class JobBatch(models.Model):
    """One completed batch of a job: its output (safetensors or JSON bytes, the kind decides)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="batches")
    index = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField()  # the attempt that computed it (resume keeps earlier ones)
    data = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="jobs_jobbatch_unique_index")]

    def __str__(self) -> str:
        return f"job {self.job_id} batch {self.index}"

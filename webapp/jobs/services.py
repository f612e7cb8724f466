"""Starting, reading, cancelling and resuming jobs (the web side; ``runner`` is the worker side).

Every start checks the user's rights on each input (a dataset, vector or probe they cannot see
reads as unknown), validates the parameters against the deployment (layers in range, labels
present, sizes bounded), pins the inputs' content hashes, writes the job and dispatches it when
the transaction commits. Bad input raises ``ValidationError`` keyed by the field and writes
nothing. Jobs are shared like library objects (``webapp.library.services`` visibility rules);
cancelling and resuming need edit rights.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import Team, User
from webapp.jobs.models import Job, JobKind, JobStatus
from webapp.library import services as library
from webapp.library.models import (
    Dataset,
    DatasetKind,
    ModelDeployment,
    Point,
    Probe,
    Recipe,
    RecipeVersion,
    SteeringVector,
)
from webapp.library.references import check_references
from webapp.playground.exports import model_entry
from webapp.playground.services import PlaygroundError, check_overrides, check_token_budget, stop_sequences

log = logging.getLogger(__name__)

METHODS = ("mean_diff", "pca_diff", "pca_center")
REDUCTIONS = ("last", "mean")
MAX_VECTOR_LAYERS = 128
MAX_SWEEP_CELLS = 64
MAX_SWEEP_PROMPTS = 64
MAX_SWEEP_PROBES = 16
MAX_SCALE = 1e4
MAX_SWEEP_TOKENS = 256


def _error(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


def _layer(deployment: ModelDeployment, value: Any, field: str) -> int:
    n = deployment.num_layers
    if isinstance(value, bool) or not isinstance(value, int) or not -n <= value < n:
        raise _error(field, f"layer {value!r} is out of range: {deployment.name} has {n} layers (0..{n - 1})")
    return value % n


def visible_dataset(user: User, dataset_id: Any, kind: str, field: str = "dataset_id") -> Dataset:
    dataset = (
        library.visible_to(user, Dataset.objects.all()).filter(pk=dataset_id).first()
        if isinstance(dataset_id, int)
        else None
    )
    if dataset is None:
        raise _error(field, f"no dataset {dataset_id!r} that you can see")
    if dataset.kind != kind:
        raise _error(field, f"dataset {dataset.name!r} holds {dataset.kind} rows; this needs {kind} rows")
    if dataset.row_count < 2:
        raise _error(field, f"dataset {dataset.name!r} has {dataset.row_count} row(s); at least 2 are needed")
    return dataset


def visible_probes(
    user: User, deployment: ModelDeployment, ids: Any, field: str = "probe_ids"
) -> list[Probe]:
    """The probes ``ids`` in order, each one visible to ``user`` and of ``deployment``."""
    if not isinstance(ids, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
        raise _error(field, "a list of probe ids")
    if len(set(ids)) != len(ids):
        raise _error(field, "a probe is named twice")
    found = {p.pk: p for p in library.visible_to(user, Probe.objects.all()).filter(pk__in=ids)}
    for pk in ids:
        probe = found.get(pk)
        if probe is None:
            raise _error(field, f"no probe prb_{pk} that you can see")
        if probe.deployment_id != deployment.pk:
            raise _error(field, f"probe prb_{pk} reads another deployment than {deployment.name!r}")
    return [found[pk] for pk in ids]


def labels_of(dataset: Dataset) -> list[str]:
    return sorted({row["label"] for row in dataset.rows})


def binary_labels(dataset: Dataset, positive: Any, field: str = "positive_label") -> tuple[str, str]:
    """(negative, positive) label names; the dataset must hold exactly two labels."""
    labels = labels_of(dataset)
    if len(labels) != 2:
        raise _error(
            "dataset_id", f"a probe separates two labels; dataset {dataset.name!r} has {len(labels)}"
        )
    if positive is None:
        positive = labels[1]
    if positive not in labels:
        raise _error(field, f"{positive!r} is not a label of the dataset ({' or '.join(labels)})")
    return (labels[0] if positive == labels[1] else labels[1]), positive


@transaction.atomic
def create_job(
    user: User,
    deployment: ModelDeployment,
    kind: str,
    name: str,
    params: dict[str, Any],
    *,
    team: Team | None,
    visibility: str,
    dataset: Dataset | None = None,
    board: Any = None,
) -> Job:
    vis = library.check_sharing(user, team, visibility)
    _check_quota(user)
    job = Job.objects.create(
        owner=user,
        team=team,
        visibility=vis,
        deployment=deployment,
        kind=kind,
        name=library.clean_name(name),
        params=params,
        dataset=dataset,
        board=board,
    )
    dispatch_on_commit(job, user)
    log.info("jobs.created", extra={"job": job.pk, "kind": kind, "user_id": user.pk})
    return job


def _check_quota(user: User) -> None:
    """Jobs hold engine capacity for long: each person has a few active at a time."""
    limit = settings.STEERLAB_MAX_ACTIVE_JOBS
    if Job.objects.filter(owner=user, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).count() >= limit:
        raise PlaygroundError("quota", f"you have {limit} jobs queued or running: wait for one to end")


def dispatch_on_commit(job: Job, user: User) -> None:
    """Hand ``job`` to a worker once the transaction commits: the one path every job takes.

    The person starting or resuming it and the job's owner (whose rights it runs under) must
    both still see every object it uses; a refusal names it and, raised inside the caller's
    transaction, writes nothing. The worker checks again when it claims the job.
    """
    from webapp.jobs.dispatch import dispatch_job

    references = job.references()
    for person in {user.pk: user, job.owner_id: job.owner}.values():
        check_references(person, references)
    transaction.on_commit(lambda: dispatch_job(job.pk))


@transaction.atomic
def build_vector(
    user: User,
    deployment: ModelDeployment,
    *,
    dataset_id: int,
    name: str,
    layers: list[int],
    method: str = "mean_diff",
    reduce: str = "last",
    team: Team | None = None,
    visibility: str = "private",
) -> Job:
    """Start a job that builds a steering vector from a contrastive dataset."""
    dataset = visible_dataset(user, dataset_id, DatasetKind.CONTRASTIVE)
    if method not in METHODS:
        raise _error("method", f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if reduce not in REDUCTIONS:
        raise _error("reduce", f"unknown reduction {reduce!r}: use last or mean")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_VECTOR_LAYERS:
        raise _error("layers", f"between 1 and {MAX_VECTOR_LAYERS} layers")
    absolute = sorted({_layer(deployment, layer, "layers") for layer in layers})
    if len(absolute) != len(layers):
        raise _error("layers", "a layer is named twice")
    params = {
        "dataset_hash": dataset.content_hash,
        "layers": absolute,
        "method": method,
        "reduce": reduce,
    }
    return create_job(
        user,
        deployment,
        JobKind.BUILD_VECTOR,
        name,
        params,
        team=team,
        visibility=visibility,
        dataset=dataset,
    )


@transaction.atomic
def train_probe(
    user: User,
    deployment: ModelDeployment,
    *,
    dataset_id: int,
    name: str,
    layer: int,
    point: str = "resid_post",
    reduce: str = "last",
    positive_label: str | None = None,
    heldout_fraction: float = 0.2,
    l2: float = 1e-3,
    seed: int = 0,
    team: Team | None = None,
    visibility: str = "private",
) -> Job:
    """Start a job that trains a probe on a labelled dataset, with a held-out split."""
    dataset = visible_dataset(user, dataset_id, DatasetKind.LABELLED)
    negative, positive = binary_labels(dataset, positive_label)
    if point not in Point.values:
        raise _error("point", f"unknown point {point!r}: use one of {', '.join(Point.values)}")
    if reduce not in REDUCTIONS:
        raise _error("reduce", f"unknown reduction {reduce!r}: use last or mean")
    if not (isinstance(heldout_fraction, int | float) and 0.0 < heldout_fraction < 0.9):
        raise _error("heldout_fraction", "the held-out fraction must be in (0, 0.9)")
    counts = [sum(row["label"] == label for row in dataset.rows) for label in (negative, positive)]
    if min(counts) < 2:
        raise _error("dataset_id", f"each label needs at least 2 examples for a held-out split, got {counts}")
    if not (isinstance(l2, int | float) and math.isfinite(l2) and 0.0 <= l2 <= 1e6):
        raise _error("l2", "l2 must be a finite number in [0, 1e6]")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 31:
        raise _error("seed", "seed must be an integer in [0, 2**31)")
    params = {
        "dataset_hash": dataset.content_hash,
        "layer": _layer(deployment, layer, "layer"),
        "point": point,
        "reduce": reduce,
        "positive_label": positive,
        "negative_label": negative,
        "heldout_fraction": float(heldout_fraction),
        "l2": float(l2),
        "seed": seed,
    }
    return create_job(
        user, deployment, JobKind.TRAIN_PROBE, name, params, team=team, visibility=visibility, dataset=dataset
    )


def probe_refs(probes: list[Probe]) -> list[dict[str, Any]]:
    return [{"id": p.pk, "content_hash": p.content_hash, "layer": p.layer, "point": p.point} for p in probes]


@transaction.atomic
def sweep(
    user: User,
    deployment: ModelDeployment,
    *,
    vector_id: int,
    name: str,
    layers: list[int],
    scales: list[float],
    prompts: list[str],
    probe_ids: list[int],
    max_new_tokens: int = 32,
    normalize: str = "none",
    positions: str = "all",
    seed: int = 0,
    team: Team | None = None,
    visibility: str = "private",
) -> Job:
    """Start a steering sweep: ``vector`` at every (layer, scale), on every prompt."""
    vector = library.visible_to(user, SteeringVector.objects.all()).filter(pk=vector_id).first()
    if vector is None or vector.deployment_id != deployment.pk:
        raise _error("vector_id", f"no vector vec_{vector_id} of {deployment.name!r} that you can see")
    if not isinstance(layers, list) or not layers:
        raise _error("layers", "at least one layer")
    absolute = [_layer(deployment, layer, "layers") for layer in layers]
    missing = [layer for layer in absolute if layer not in vector.layers]
    if missing or len(set(absolute)) != len(absolute):
        raise _error("layers", f"the vector has directions for layers {vector.layers}; each layer once")
    if not isinstance(scales, list) or not scales or len(set(scales)) != len(scales):
        raise _error("scales", "at least one scale, each once")
    if any(
        isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or abs(s) > MAX_SCALE
        for s in scales
    ):
        raise _error("scales", f"scales are finite numbers within ±{MAX_SCALE:g}")
    if len(absolute) * len(scales) > MAX_SWEEP_CELLS:
        raise _error("scales", f"at most {MAX_SWEEP_CELLS} cells (layers × scales)")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_SWEEP_PROMPTS:
        raise _error("prompts", f"between 1 and {MAX_SWEEP_PROMPTS} prompts")
    if any(not isinstance(p, str) or not p.strip() or len(p) > 4000 for p in prompts):
        raise _error("prompts", "each prompt is non-empty text of at most 4000 characters")
    if len(probe_ids) > MAX_SWEEP_PROBES:
        raise _error("probe_ids", f"at most {MAX_SWEEP_PROBES} probes")
    probes = visible_probes(user, deployment, probe_ids)
    limit = min(MAX_SWEEP_TOKENS, settings.STEERLAB_MAX_NEW_TOKENS)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= limit
    ):
        raise _error("max_new_tokens", f"between 1 and {limit}")
    if normalize not in ("none", "unit", "resid_norm"):
        raise _error("normalize", "none, unit or resid_norm")
    if positions not in ("all", "prompt", "generated"):
        raise _error("positions", "all, prompt or generated")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 31:
        raise _error("seed", "seed must be an integer in [0, 2**31)")
    params = {
        "vector_id": vector.pk,
        "vector_hash": vector.content_hash,
        "layers": absolute,
        "scales": [float(s) for s in scales],
        "prompts": prompts,
        "probes": probe_refs(probes),
        "max_new_tokens": max_new_tokens,
        "normalize": normalize,
        "positions": positions,
        "seed": seed,
    }
    return create_job(user, deployment, JobKind.SWEEP, name, params, team=team, visibility=visibility)


def _batch_recipe(
    user: User, deployment: ModelDeployment, recipe_id: Any, version: Any
) -> RecipeVersion | None:
    """The recipe version a batch run applies (``version`` None: the latest), or None for none."""
    if recipe_id is None:
        if version is not None:
            raise _error("version", "a version needs a recipe_id")
        return None
    recipe = (
        library.visible_to(user, Recipe.objects.all()).filter(pk=recipe_id).first()
        if isinstance(recipe_id, int) and not isinstance(recipe_id, bool)
        else None
    )
    if recipe is None:
        raise _error("recipe_id", f"no recipe {recipe_id!r} that you can see")
    if recipe.deployment_id != deployment.pk:
        raise _error("recipe_id", f"recipe {recipe.name!r} is for another model than {deployment.name!r}")
    found = recipe.latest_version() if version is None else recipe.versions.filter(number=version).first()
    if found is None:
        raise _error("version", f"recipe {recipe.name!r} has no version {version!r}")
    return found


def _batch_sampling(
    max_new_tokens: Any, temperature: Any, top_p: Any, seed: Any, stop: Any
) -> dict[str, Any]:
    """A chat turn's sampling parameters, checked field by field (``seed`` None: a random one)."""

    def number(value: Any) -> bool:
        return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)

    limit = settings.STEERLAB_MAX_NEW_TOKENS
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= limit
    ):
        raise _error("max_new_tokens", f"between 1 and {limit}")
    if not number(temperature) or not 0.0 <= temperature <= 5.0:
        raise _error("temperature", "temperature must be a number between 0 and 5")
    if not number(top_p) or not 0.0 < top_p <= 1.0:
        raise _error("top_p", "top_p must be a number in (0, 1]")
    if seed is None:
        seed = secrets.randbelow(1 << 31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 31:
        raise _error("seed", "seed must be an integer in [0, 2**31)")
    try:
        stop = stop_sequences(stop)
    except PlaygroundError as exc:
        raise _error("stop", exc.message) from None
    sampling = {
        "max_new_tokens": max_new_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": seed,
    }
    if stop:  # as a chat run's: absent rather than empty
        sampling["stop"] = list(stop)
    return sampling


@transaction.atomic
def batch_run(
    user: User,
    deployment: ModelDeployment,
    *,
    dataset_id: int,
    name: str,
    recipe_id: int | None = None,
    version: int | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int | None = None,
    stop: Any = None,
    overrides: Any = None,
    reads: bool = True,
    team: Team | None = None,
    visibility: str = "private",
) -> Job:
    """Start a batch run: a recipe (or none) on every prompt of a labelled dataset, each prompt a
    one-message chat turn (``webapp.jobs.batch``). Its params pin everything that redoes it: the
    dataset's hash, the recipe version's spec and content hashes, the model, the sampling and seed,
    the overrides."""
    dataset = visible_dataset(user, dataset_id, DatasetKind.LABELLED)
    limit = settings.STEERLAB_BATCH_MAX_PROMPTS
    if dataset.row_count > limit:
        raise _error(
            "dataset_id",
            f"dataset {dataset.name!r} has {dataset.row_count} prompts; a batch run takes at most {limit}",
        )
    found = _batch_recipe(user, deployment, recipe_id, version)
    spec = found.spec if found is not None else None
    sampling = _batch_sampling(max_new_tokens, temperature, top_p, seed, stop)
    try:
        checked = check_overrides(spec, overrides)
    except PlaygroundError as exc:
        raise _error("overrides", exc.message) from None
    if not isinstance(reads, bool):
        raise _error("reads", "reads is true or false")
    tokens = dataset.row_count * sampling["max_new_tokens"]
    check_token_budget(user, tokens, what=f"this batch run may generate {tokens} tokens: ")
    params = {
        "dataset_hash": dataset.content_hash,
        "prompts": dataset.row_count,
        "recipe": None
        if found is None
        else {
            "id": found.recipe_id,
            "name": found.recipe.name,
            "version": found.number,
            "version_id": found.pk,
        },
        "spec": spec,
        "content_hashes": dict(found.content_hashes) if found is not None else {},
        "model": model_entry(deployment).model_dump(),
        "sampling": sampling,
        "overrides": checked,
        "reads": reads,
        "token_budget": tokens,
    }
    return create_job(
        user, deployment, JobKind.BATCH_RUN, name, params, team=team, visibility=visibility, dataset=dataset
    )


def _finished_batch_run(job: Job) -> None:
    if job.kind != JobKind.BATCH_RUN or job.status != JobStatus.DONE:
        raise ValidationError(
            f"Results are downloaded from a finished batch run; job {job.pk} is a {job.kind} job "
            f"({job.status})."
        )


def batch_jsonl(job: Job, *, asynchronous: bool = False) -> Iterator[bytes] | AsyncIterator[bytes]:
    """A finished batch run's results as JSON Lines, one prompt per line (checked now, read
    lazily; ``asynchronous`` for an ASGI server)."""
    from webapp.jobs.batch import ajsonl_lines, jsonl_lines

    _finished_batch_run(job)
    return ajsonl_lines(job) if asynchronous else jsonl_lines(job)


def export_batch_run(user: User, job: Job) -> tuple[str, bytes]:
    """(file name, zip) of a finished batch run: what redoes it and what it gave.

    ``manifest.json`` holds the job's pinned params (model, recipe version and spec, content hashes,
    sampling with its seed and the per-row seed rule, overrides, reads), the engines that ran it and
    the dataset's hash; ``dataset.jsonl`` the prompts; ``results.jsonl`` the results;
    ``tensors/<ref>.safetensors`` the vectors and probes (as in a run export).
    """
    from webapp.jobs.batch import jsonl_lines
    from webapp.playground.exports import tensor_files, zip_export

    _finished_batch_run(job)
    dataset = job.dataset
    if dataset is None or dataset.content_hash != job.params.get("dataset_hash"):
        raise ValidationError("The batch run's dataset was deleted or changed since: it cannot be exported.")
    try:
        entries, files = tensor_files(user, job.params.get("content_hashes", {}))
    except PlaygroundError as exc:
        raise ValidationError(exc.message) from None
    manifest = BatchManifest(
        exported_at=timezone.now().isoformat(),
        site_job=job.pk,
        name=job.name,
        params={k: v for k, v in job.params.items() if k != "token_budget"},
        seed_rule="row i is sampled with seed (sampling.seed + i) mod 2**31",
        engines=list((job.result or {}).get("engines", [])),
        tensors={ref: entry.model_dump() for ref, entry in entries.items()},
        dataset={"name": dataset.name, "content_hash": dataset.content_hash, "rows": dataset.row_count},
    )
    rows = b"".join(json.dumps(row).encode() + b"\n" for row in dataset.rows)
    extra = {"dataset.jsonl": rows, "results.jsonl": b"".join(jsonl_lines(job))}
    log.info("jobs.batch_exported", extra={"job": job.pk})
    return f"steerlab-batch-{job.pk}.zip", zip_export(manifest, files, extra)


class BatchManifest(pydantic.BaseModel):
    """A batch-run export's manifest (``export_batch_run``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    format: str = "steerlab.batch_run"
    format_version: int = 1
    exported_at: str
    site_job: int
    name: str
    params: dict[str, Any]
    seed_rule: str
    engines: list[dict[str, str]]
    tensors: dict[str, dict[str, Any]]
    dataset: dict[str, Any]


def batch_parquet(job: Job) -> bytes:
    """A finished batch run's results as a Parquet file."""
    from webapp.jobs.batch import parquet_file

    _finished_batch_run(job)
    return parquet_file(job)


def get_job(user: User, pk: int) -> Job:
    """A job ``user`` may see (``Job.DoesNotExist`` otherwise: a 404 that reveals nothing)."""
    return library.get_visible(user, Job, pk)


def cell_transcripts(job: Job, cell: int) -> list[dict[str, Any]]:
    """A finished sweep's cell (``cell`` indexes ``result.cells``): each prompt's texts beside the
    baseline's. A missing cell is ``Job.DoesNotExist`` (404)."""
    from webapp.jobs.sweep import transcripts

    if job.kind != JobKind.SWEEP or job.status != JobStatus.DONE:
        raise ValidationError("Transcripts are read from a finished sweep.")
    cells = job.result.get("cells", [])
    if not 0 <= cell < len(cells):
        raise Job.DoesNotExist
    batches = [bytes(b.data) for b in job.batches.order_by("index")]
    return transcripts(batches, cells[cell]["layer"], cells[cell]["scale"])


def cancel_job(user: User, job: Job) -> Job:
    """Cancel a queued or running job: its worker stops before the next batch; stored batches stay."""
    if not library.can_edit(user, job):
        raise PermissionDenied("You cannot change this job.")
    if not Job.objects.filter(pk=job.pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=JobStatus.CANCELLED, finished_at=timezone.now(), lease_expires_at=None
    ):
        raise ValidationError(f"Job {job.pk} has already ended ({job.status}).")
    _announce(job.pk)
    job.refresh_from_db()
    return job


@transaction.atomic
def resume_job(user: User, job: Job) -> Job:
    """Queue a failed or cancelled job again: it goes on from its stored batches."""
    if not library.can_edit(user, job):
        raise PermissionDenied("You cannot change this job.")
    _check_quota(user)
    if not Job.objects.filter(pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
        status=JobStatus.QUEUED, attempt=0, error="", finished_at=None, lease_owner=""
    ):
        raise ValidationError(f"Only a failed or cancelled job can be resumed; job {job.pk} is {job.status}.")
    dispatch_on_commit(job, user)
    job.refresh_from_db()
    return job


def _announce(job_id: int) -> None:
    """Tell the job's watchers its new state (the worker publishes its own progress)."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from webapp.jobs.runner import job_frame, job_group

    frame = job_frame(job_id)
    layer = get_channel_layer()
    if frame is None or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(job_group(job_id), {"type": "run.events", "frames": [frame]})
    except Exception:  # watchers also read the state when they (re)connect
        log.exception("jobs.announce_failed")

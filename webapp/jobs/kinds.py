"""What each kind of job computes: its batches on the engine, and what it makes from them.

* ``build_vector``: contrastive pairs -> activations of both sides at the chosen layers (last
  token or mean, float32) -> ``from_contrastive`` (mean difference or PCA) -> a library vector
  whose provenance names the job, dataset and method.
* ``train_probe``: labelled prompts -> activations at one site -> ``train_probe`` with a stratified
  held-out split -> a library probe whose metrics are the held-out ones (with bootstrap intervals).
* ``evaluate``: a comparison board (``webapp.compare.evaluation``).
* ``sweep``: steering sweeps (``webapp.jobs.sweep``).
* ``batch_run``: a recipe applied to a dataset's prompts (``webapp.jobs.batch``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from interventions.evaluation import Evaluation, evaluate_probes
from interventions.probes import ProbeMetrics, train_probe
from interventions.vectors import from_contrastive
from webapp.jobs.models import Job, JobKind
from webapp.jobs.runner import JobContext, JobFailed, Kind
from webapp.library import services as library
from webapp.library.models import Dataset, Probe

COLLECT_BATCH = 16  # prompts per batch: one stored, resumable unit of work


def dataset_rows(job: Job, kind: str) -> list[dict[str, str]]:
    """The job's dataset rows, refused if the dataset is gone or changed since the job was written."""
    dataset: Dataset | None = job.dataset
    if dataset is None:
        raise JobFailed("the job's dataset was deleted")
    if dataset.content_hash != job.params.get("dataset_hash") or dataset.kind != kind:
        raise JobFailed("the job's dataset changed after the job was created: start a new job")
    return list(dataset.rows)


def made_by(job: Job, **extra: Any) -> dict[str, Any]:
    """The provenance of an object a job made."""
    dataset = job.dataset
    return {
        "source": "job",
        "job": job.pk,
        "kind": job.kind,
        "dataset": None
        if dataset is None
        else {"id": dataset.pk, "name": dataset.name, "content_hash": dataset.content_hash},
        "deployment": job.deployment.name,
        "params": {k: v for k, v in job.params.items() if not k.endswith("_hash")},
        **extra,
    }


def labelled_items(job: Job) -> list[tuple[str, int]]:
    """A labelled dataset's rows as (text, 1 if the row has the job's positive label else 0)."""
    positive = job.params["positive_label"]
    return [(row["text"], int(row["label"] == positive)) for row in dataset_rows(job, "labelled")]


def pinned_probes(job: Job) -> list[Probe]:
    """The probes the job's params name, in their order, refused if any vanished or changed."""
    wanted = job.params["probes"]
    found = {
        p.pk: p
        for p in Probe.objects.select_related("deployment", "owner").filter(pk__in=[w["id"] for w in wanted])
    }
    out = []
    for w in wanted:
        probe = found.get(w["id"])
        if probe is None or probe.content_hash != w["content_hash"]:
            raise JobFailed(f"probe prb_{w['id']} was deleted or changed after the job was started")
        out.append(probe)
    return out


def json_number(value: float) -> float | None:
    """A statistic for JSON: rounded, and null where it is undefined (JSON has no NaN or inf)."""
    return None if math.isnan(value) or math.isinf(value) else round(float(value), 6)


def intervals_json(evaluation: Evaluation) -> dict[str, list[float | None]]:
    """An evaluation's confidence intervals as ``{metric: [low, high]}``."""
    return {name: [json_number(iv.low), json_number(iv.high)] for name, iv in evaluation.intervals.items()}


def metrics_json(metrics: ProbeMetrics) -> dict[str, Any]:
    """Metrics as JSON (an undefined AUROC is null: JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(metrics).items()}


def _cat(blobs: list[bytes], key: str) -> torch.Tensor:
    return torch.cat([load_tensors(b)[key] for b in blobs]).float()


class BuildVector:
    batch_size = COLLECT_BATCH // 2  # pairs: both sides of each pair go in one batch

    def items(self, job: Job) -> list[Any]:
        return [(row["positive"], row["negative"]) for row in dataset_rows(job, "contrastive")]

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes:
        layers = ctx.job.params["layers"]
        sites = [(layer, "resid_post") for layer in layers]
        prompts = [ctx.tokens(p) for p, _ in items] + [ctx.tokens(n) for _, n in items]
        acts = ctx.collect(prompts, sites, ctx.job.params["reduce"])
        k = len(items)
        out: dict[str, torch.Tensor] = {}
        for site in sites:
            out[f"pos.{site[0]}"] = torch.stack([a[site] for a in acts[:k]])
            out[f"neg.{site[0]}"] = torch.stack([a[site] for a in acts[k:]])
        return save_tensors(out)

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        job, params = ctx.job, ctx.job.params
        layers = params["layers"]
        pos = {layer: _cat(batches, f"pos.{layer}") for layer in layers}
        neg = {layer: _cat(batches, f"neg.{layer}") for layer in layers}
        vector = from_contrastive(pos, neg, params["method"], model=job.deployment.name)
        job.vector = library.save_vector(
            job.owner,
            job.deployment,
            job.name,
            vector,
            provenance=made_by(job, pairs=len(pos[layers[0]])),
            description=f"Built by job {job.pk} ({params['method']}, {params['reduce']} token) from contrastive pairs.",
            team=job.team,
            visibility=job.visibility,
        )
        job.result = {
            "vector_id": job.vector.pk,
            "public_id": job.vector.public_id,
            "pairs": len(pos[layers[0]]),
            "norms": {str(layer): round(float(vector.directions[layer].norm()), 6) for layer in layers},
        }


class TrainProbe:
    batch_size = COLLECT_BATCH

    def items(self, job: Job) -> list[Any]:
        return labelled_items(job)

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes:
        site = (ctx.job.params["layer"], ctx.job.params["point"])
        acts = ctx.collect([ctx.tokens(text) for text, _ in items], [site], ctx.job.params["reduce"])
        return save_tensors({"x": torch.stack([a[site] for a in acts])})

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        job, params = ctx.job, ctx.job.params
        x = _cat(batches, "x")
        y = torch.tensor([label for _, label in items], dtype=torch.int64)
        try:
            trained = train_probe(
                x,
                y,
                l2=params["l2"],
                heldout_fraction=params["heldout_fraction"],
                seed=params["seed"],
                labels=(params["negative_label"], params["positive_label"]),
            )
        except ValueError as exc:
            raise JobFailed(f"the probe cannot be trained: {exc}") from exc
        metrics: dict[str, Any] = {
            "train": metrics_json(trained.train),
            "n_train": trained.n_train,
            "n_heldout": trained.n_heldout,
        }
        if trained.heldout is not None:
            metrics["heldout"] = metrics_json(trained.heldout)
            held = trained.heldout_rows
            assert held is not None
            heldout = evaluate_probes(trained.probe.score(x[held]).detach().unsqueeze(0), y[held])[0]
            metrics["heldout_intervals"] = intervals_json(heldout)  # 95%, bootstrap
        job.probe = library.save_probe(
            job.owner,
            job.deployment,
            job.name,
            trained.probe,
            layer=params["layer"],
            point=params["point"],
            metrics=metrics,
            provenance=made_by(job),
            description=f"Trained by job {job.pk} on {params['reduce']}-token activations.",
            team=job.team,
            visibility=job.visibility,
        )
        job.result = {"probe_id": job.probe.pk, "public_id": job.probe.public_id, "metrics": metrics}


def kind_of(kind: str) -> Kind:
    from webapp.compare.evaluation import EvaluateBoard
    from webapp.jobs.batch import BatchRun
    from webapp.jobs.sweep import Sweep

    kinds: dict[str, Kind] = {
        JobKind.BUILD_VECTOR: BuildVector(),
        JobKind.TRAIN_PROBE: TrainProbe(),
        JobKind.EVALUATE: EvaluateBoard(),
        JobKind.SWEEP: Sweep(),
        JobKind.BATCH_RUN: BatchRun(),
    }
    if kind not in kinds:
        raise JobFailed(f"unknown job kind {kind!r}")
    return kinds[kind]

"""Evaluating a board (the ``evaluate`` job kind): every probe on the same examples, in one pass.

Each batch runs one collect request per example with every site the board's probes read (one
forward pass whatever the number of probes or layers), keeps every token's activations only long
enough to score them with one :class:`~interventions.probes.ProbeBank` per site (one matmul for
all of that site's probes), and stores each example's pooled score (its last token's, or the
mean over its tokens) and its per-token scores (float16, the last ``TRACE_TOKENS`` tokens) with
the token ids: the per-example traces the board shows. Finishing computes accuracy, AUROC, F1 and calibration error with paired bootstrap intervals, the
pairwise agreement and the ROC curves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from sklearn.metrics import roc_curve

from interventions.evaluation import agreement, evaluate_probes
from interventions.probes import ProbeBank
from webapp.jobs.kinds import (
    COLLECT_BATCH,
    intervals_json,
    json_number,
    labelled_items,
    metrics_json,
    pinned_probes,
)
from webapp.jobs.models import Job
from webapp.jobs.runner import JobContext, JobFailed
from webapp.library.services import load_probe

ROC_POINTS = 101  # a curve is kept to at most this many points (enough for a plot)
TRACE_TOKENS = 512  # an example's per-token trace keeps its last this many tokens


class EvaluateBoard:
    batch_size = COLLECT_BATCH

    def items(self, job: Job) -> list[Any]:
        return labelled_items(job)

    def _banks(self, ctx: JobContext) -> dict[tuple[int, str], tuple[ProbeBank, list[int]]]:
        """Per site: a bank of the probes reading it, and their columns in the board's order."""
        if "banks" not in ctx.cache:
            columns: dict[tuple[int, str], list[int]] = {}
            probes = pinned_probes(ctx.job)
            for column, probe in enumerate(probes):
                columns.setdefault((probe.layer, probe.point), []).append(column)
            ctx.cache["banks"] = {
                site: (ProbeBank([load_probe(probes[c]) for c in cols]), cols)
                for site, cols in columns.items()
            }
            ctx.cache["width"] = len(probes)
        banks: dict[tuple[int, str], tuple[ProbeBank, list[int]]] = ctx.cache["banks"]
        return banks

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes:
        banks = self._banks(ctx)
        prompts = [ctx.tokens(text) for text, _ in items]
        acts = ctx.collect(prompts, sorted(banks), "none")
        pooling = ctx.job.params["pooling"]
        out: dict[str, torch.Tensor] = {}
        for i, (tokens, example) in enumerate(zip(prompts, acts, strict=True)):
            scores = torch.empty(len(tokens), ctx.cache["width"])
            for site, (bank, cols) in banks.items():
                scores[:, cols] = bank.score(example[site].float())
            out[f"pooled.{i}"] = scores[-1].clone() if pooling == "last" else scores.mean(0)
            out[f"scores.{i}"] = scores[-TRACE_TOKENS:].half()
            out[f"tokens.{i}"] = torch.tensor(tokens[-TRACE_TOKENS:], dtype=torch.int32)
        return save_tensors(out)

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        job = ctx.job
        probes = pinned_probes(job)
        labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        pooled = torch.stack(list(_pooled(batches))).T  # [P, n]
        if pooled.shape[1] != labels.shape[0]:
            raise JobFailed("the stored batches do not cover the dataset")
        evaluations = evaluate_probes(pooled, labels, seed=0)
        agree = agreement(pooled)
        y = labels.numpy()
        both = 0 < int(y.sum()) < len(y)
        job.result = {
            "n": len(y),
            "positives": int(y.sum()),
            "positive_label": job.params["positive_label"],
            "pooling": job.params["pooling"],
            "batch_size": self.batch_size,
            "probes": [
                {
                    "id": probe.pk,
                    "public_id": probe.public_id,
                    "name": probe.name,
                    "owner": probe.owner.get_username(),
                    "layer": probe.layer,
                    "point": probe.point,
                    "metrics": metrics_json(evaluation.metrics),
                    "intervals": intervals_json(evaluation),
                    "roc": _roc(y, pooled[p].numpy()) if both else None,
                }
                for p, (probe, evaluation) in enumerate(zip(probes, evaluations, strict=True))
            ],
            "agreement": {
                "correlation": _matrix(agree.correlation),
                "kappa": _matrix(agree.kappa),
            },
        }


def _pooled(batches: list[bytes]) -> Any:
    """Each example's pooled probe scores ``[P]``, in order."""
    for blob in batches:
        tensors = load_tensors(blob)
        i = 0
        while f"pooled.{i}" in tensors:
            yield tensors[f"pooled.{i}"]
            i += 1


def example_trace(batches: dict[int, bytes], batch_size: int, example: int) -> tuple[list[int], torch.Tensor]:
    """Token ids and per-token scores ``[tokens, P]`` of one example (its last ``TRACE_TOKENS``)."""
    blob = batches.get(example // batch_size)
    if blob is None:
        raise KeyError(example)
    tensors = load_tensors(blob)
    key = example % batch_size
    if f"tokens.{key}" not in tensors:
        raise KeyError(example)
    return tensors[f"tokens.{key}"].tolist(), tensors[f"scores.{key}"].float()


def _matrix(m: torch.Tensor) -> list[list[float | None]]:
    return [[json_number(float(v)) for v in row] for row in m.tolist()]


def _roc(y: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(y, scores)
    if len(fpr) > ROC_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}

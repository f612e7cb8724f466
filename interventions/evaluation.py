"""Comparing probes on the same evaluation data: metrics with bootstrap confidence intervals,
and pairwise agreement between probes (what a team's comparison board shows).

* :func:`evaluate_probes` scores ``P`` probes' scores on one labelled set: each probe's accuracy,
  AUROC, F1 and calibration error (:func:`interventions.probes.probe_metrics`) with percentile
  bootstrap intervals. The bootstrap is *paired*: every probe is measured on the same resampled
  rows, so two probes' intervals differ only because the probes do.
* :func:`agreement` gives the ``P x P`` score correlation (Pearson) and Cohen's kappa of the
  probes' predictions.

Resampled metrics are computed for all resamples of a probe at once (numpy over ``[B, n]``), never
row by row; AUROC per resample is the Mann-Whitney statistic on average ranks, which equals
scikit-learn's ``roc_auc_score`` (ties included).

This module is part of the pure library: torch, numpy, scipy and scikit-learn only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from interventions.probes import ProbeError, ProbeMetrics, probe_metrics

__all__ = ["Agreement", "Evaluation", "Interval", "agreement", "evaluate_probes"]

METRICS = ("accuracy", "auroc", "f1", "ece")
MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class Interval:
    """A confidence interval; both ends are NaN when the metric was undefined in every resample."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Evaluation:
    """One probe on one labelled set: point metrics and an interval for each of ``METRICS``."""

    metrics: ProbeMetrics
    intervals: Mapping[str, Interval]


@dataclass(frozen=True)
class Agreement:
    """Pairwise agreement of ``P`` probes on the same rows (both ``[P, P]``, symmetric).

    Args:
        correlation: Pearson correlation of the scores (NaN where a probe's scores are constant).
        kappa: Cohen's kappa of the predictions ``score > threshold`` (1.0 for identical
            predictions, even constant ones).
    """

    correlation: Tensor
    kappa: Tensor


def _scores_matrix(scores: Tensor) -> np.ndarray:
    if not isinstance(scores, Tensor):
        raise ProbeError(f"scores must be a tensor, got {type(scores).__name__}")
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ProbeError(f"scores must be 2-D [probes, rows] with both >= 1, got {tuple(scores.shape)}")
    if not (scores.is_floating_point() and bool(torch.isfinite(scores).all())):
        raise ProbeError("scores must be finite floating-point values")
    return scores.detach().cpu().to(torch.float64).numpy()


def _thresholds(thresholds: Sequence[float] | None, count: int) -> np.ndarray:
    if thresholds is None:
        return np.zeros(count)
    values = np.asarray(list(thresholds), dtype=np.float64)
    if values.shape != (count,) or not np.isfinite(values).all():
        raise ProbeError(f"thresholds must be {count} finite numbers, one per probe")
    return values


def _labels(labels: Tensor, n: int) -> np.ndarray:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        raise ProbeError(f"labels must be a 1-D tensor of {n} values")
    y = labels.detach().cpu()
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ProbeError("labels must be 0 or 1")
    values = y.to(torch.float64).numpy()
    if not np.isin(values, (0.0, 1.0)).all():
        raise ProbeError("labels must be 0 or 1")
    return values.astype(np.int64)


def _resampled(s: np.ndarray, y: np.ndarray, threshold: float, bins: int) -> dict[str, np.ndarray]:
    """Each metric over ``B`` resamples at once: ``s`` and ``y`` are ``[B, n]``."""
    b, n = s.shape
    pred = s > threshold
    positive = y == 1
    tp = (pred & positive).sum(1)
    fp = (pred & ~positive).sum(1)
    fn = (~pred & positive).sum(1)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    accuracy = (pred == positive).mean(1)

    npos = positive.sum(1)
    nneg = n - npos
    ranks = rankdata(s, axis=1)  # average ranks: ties count half, as in roc_auc_score
    u = (ranks * positive).sum(1) - npos * (npos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.where((npos > 0) & (nneg > 0), u / (npos * nneg), np.nan)

    # ECE, positive-class reliability form (as probe_metrics): sum over bins of |sum y - sum p| / n.
    prob = 1.0 / (1.0 + np.exp(-s))
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], prob, side="left") + bins * np.arange(b)[:, None]
    gap = np.bincount(index.ravel(), weights=(y - prob).ravel(), minlength=b * bins).reshape(b, bins)
    ece = np.abs(gap).sum(1) / n
    return {"accuracy": accuracy, "auroc": auroc, "f1": f1, "ece": ece}


def _interval(values: np.ndarray, confidence: float) -> Interval:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return Interval(math.nan, math.nan)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(float(low), float(high))


def evaluate_probes(
    scores: Tensor,
    labels: Tensor,
    *,
    thresholds: Sequence[float] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    bins: int = 10,
) -> list[Evaluation]:
    """Metrics with paired percentile-bootstrap intervals for each of ``P`` probes.

    Args:
        scores: finite logits ``[P, n]``, row ``p`` being probe ``p``'s score on each example.
        labels: ``[n]`` in {0, 1}, shared by every probe.
        thresholds: per probe, the logit above which an example is predicted positive (default 0).
        resamples: bootstrap resamples, 1 to 100000 (the same row indices for every probe).
        confidence: the intervals' coverage, in (0, 1).
        seed: seeds the resampling, so a board's intervals are reproducible.
        bins: calibration-error bins, >= 1.
    """
    s = _scores_matrix(scores)
    count, n = s.shape
    y = _labels(labels, n)
    limits = _thresholds(thresholds, count)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or not 1 <= resamples <= MAX_RESAMPLES:
        raise ProbeError(f"resamples must be an integer in [1, {MAX_RESAMPLES}], got {resamples!r}")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ProbeError(f"confidence must be a float in (0, 1), got {confidence!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ProbeError(f"bins must be an integer >= 1, got {bins!r}")

    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    y_resampled = y[rows]
    out = []
    for p in range(count):
        point = probe_metrics(
            torch.from_numpy(s[p]), torch.from_numpy(y), threshold=float(limits[p]), bins=bins
        )
        spread = _resampled(s[p][rows], y_resampled, float(limits[p]), bins)
        out.append(Evaluation(point, {name: _interval(spread[name], confidence) for name in METRICS}))
    return out


def agreement(scores: Tensor, thresholds: Sequence[float] | None = None) -> Agreement:
    """Pairwise score correlation and prediction kappa of ``P`` probes on the same ``n`` rows.

    Args:
        scores: finite logits ``[P, n]``.
        thresholds: per probe, the logit above which a row is predicted positive (default 0).
    """
    s = _scores_matrix(scores)
    count, n = s.shape
    limits = _thresholds(thresholds, count)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = s - s.mean(1, keepdims=True)
        norms = np.sqrt((centred**2).sum(1))
        correlation = (centred @ centred.T) / np.outer(norms, norms)
    np.fill_diagonal(correlation, np.where(norms > 0, 1.0, np.nan))

    pred = (s > limits[:, None]).astype(np.float64)
    observed = (pred @ pred.T + (1 - pred) @ (1 - pred).T) / n
    rate = pred.mean(1)
    expected = np.outer(rate, rate) + np.outer(1 - rate, 1 - rate)
    # Chance agreement is 1 only for two identical constant predictions: they agree fully.
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(expected < 1.0, (observed - expected) / (1.0 - expected), 1.0)
    return Agreement(torch.from_numpy(np.clip(correlation, -1.0, 1.0)), torch.from_numpy(kappa))

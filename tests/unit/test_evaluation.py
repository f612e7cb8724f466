"""Comparing probes: bootstrap intervals and pairwise agreement (interventions.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from interventions.evaluation import METRICS, _resampled, agreement, evaluate_probes
from interventions.probes import ProbeError, probe_metrics, train_probe

HIDDEN = 32


def _planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations whose label is planted along one direction (the answer is known)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(HIDDEN, generator=g)
    direction /= direction.norm()
    y = (torch.rand(n, generator=g) < 0.5).long()
    x = torch.randn(n, HIDDEN, generator=g) + (2 * y - 1)[:, None].float() * 1.5 * direction
    return x, y, direction


def test_a_trained_probe_and_a_random_one_have_intervals_that_separate() -> None:
    x, y, planted = _planted(1000, seed=1)
    trained = train_probe(x[:400], y[:400], heldout_fraction=0.0).probe
    # A random direction carrying no label information (orthogonal to the planted one: in few
    # dimensions a random direction would overlap it by chance).
    random = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(100))
    random -= (random @ planted) * planted
    heldout_x, heldout_y = x[400:], y[400:]
    scores = torch.stack([heldout_x @ trained.weight.float() + trained.bias, heldout_x @ random])

    good, chance = evaluate_probes(scores, heldout_y, resamples=500, seed=3)
    assert good.metrics.auroc > 0.95
    assert abs(chance.metrics.auroc - 0.5) < 0.1
    for evaluation in (good, chance):
        for name in METRICS:
            interval = evaluation.intervals[name]
            assert interval.contains(getattr(evaluation.metrics, name)), (name, interval)
    assert good.intervals["auroc"].low > chance.intervals["auroc"].high
    assert chance.intervals["auroc"].contains(0.5)


def test_the_bootstrap_is_paired_seeded_and_matches_the_point_metrics() -> None:
    x, y, direction = _planted(200, seed=4)
    score = x @ direction
    same = evaluate_probes(torch.stack([score, score]), y, resamples=200, seed=9)
    assert same[0].intervals == same[1].intervals  # the same rows for every probe
    again = evaluate_probes(torch.stack([score, score]), y, resamples=200, seed=9)
    assert again[0].intervals == same[0].intervals
    other = evaluate_probes(score[None], y, resamples=200, seed=10)
    assert other[0].intervals != same[0].intervals
    assert same[0].metrics == probe_metrics(score, y)


@given(
    st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 1)), min_size=2, max_size=40),
    st.floats(-2, 2),
)
def test_resampled_metrics_equal_scikit_learns_ties_included(
    rows: list[tuple[int, int]], threshold: float
) -> None:
    s = np.array([[float(v) / 2 for v, _ in rows]])  # few distinct values: many ties
    y = np.array([[label for _, label in rows]])
    got = _resampled(s, y, threshold, bins=10)
    pred = s[0] > threshold
    assert got["accuracy"][0] == pytest.approx(accuracy_score(y[0], pred))
    assert got["f1"][0] == pytest.approx(f1_score(y[0], pred, zero_division=0.0))
    point = probe_metrics(torch.tensor(s[0]), torch.tensor(y[0]), threshold=threshold)
    assert got["ece"][0] == pytest.approx(point.ece)
    if 0 < y.sum() < y.size:
        assert got["auroc"][0] == pytest.approx(roc_auc_score(y[0], s[0]))
    else:
        assert math.isnan(got["auroc"][0])


def test_agreement_matches_pearson_and_cohens_kappa() -> None:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(4000, generator=g, dtype=torch.float64)
    scores = torch.stack(
        [
            base,
            base + 0.1 * torch.randn(4000, generator=g, dtype=torch.float64),
            -base,
            torch.randn(4000, generator=g, dtype=torch.float64),
        ]
    )
    result = agreement(scores)
    assert torch.allclose(result.correlation, torch.from_numpy(np.corrcoef(scores.numpy())), atol=1e-12)
    assert torch.allclose(result.correlation, result.correlation.T)
    pred = (scores > 0).numpy()
    for i in range(4):
        for j in range(4):
            assert result.kappa[i, j].item() == pytest.approx(cohen_kappa_score(pred[i], pred[j]), abs=1e-12)
    assert result.kappa[0, 0].item() == pytest.approx(1.0)
    assert result.kappa[0, 2].item() < -0.99  # opposite predictions
    assert abs(result.kappa[0, 3].item()) < 0.1  # independent probes agree by chance only


def test_agreement_of_constant_probes() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -1.0]])
    result = agreement(scores)
    assert result.kappa[0, 1] == 1.0  # the same constant prediction
    assert result.kappa[0, 2] == 0.0  # opposite constants: no agreement beyond chance
    assert torch.isnan(result.correlation[0, 1])  # undefined for constant scores


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        (torch.zeros(3), torch.tensor([0, 1, 0]), {}, "2-D"),
        (torch.tensor([[0.0, math.nan, 1.0]]), torch.tensor([0, 1, 0]), {}, "finite"),
        (torch.tensor([[0.0, math.inf, 1.0]]), torch.tensor([0, 1, 0]), {}, "finite"),
        (torch.zeros(1, 3), torch.tensor([0, 1]), {}, "labels"),
        (torch.zeros(1, 3), torch.tensor([0, 2, 1]), {}, "0 or 1"),
        (torch.zeros(1, 3), torch.tensor([0.0, math.nan, 1.0]), {}, "0 or 1"),
        (torch.zeros(1, 3), torch.tensor([0, 1, 0]), {"resamples": 0}, "resamples"),
        (torch.zeros(1, 3), torch.tensor([0, 1, 0]), {"confidence": 1.0}, "confidence"),
        (torch.zeros(1, 3), torch.tensor([0, 1, 0]), {"thresholds": [0.0, 1.0]}, "thresholds"),
        (torch.zeros(1, 3), torch.tensor([0, 1, 0]), {"thresholds": [math.nan]}, "thresholds"),
        (torch.zeros(1, 3), torch.tensor([0, 1, 0]), {"bins": 0}, "bins"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_error(
    scores: torch.Tensor, labels: torch.Tensor, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ProbeError, match=message):
        evaluate_probes(scores, labels, **kwargs)  # type: ignore[arg-type]

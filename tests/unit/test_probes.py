"""Tests of interventions.probes: scoring, training, metrics, safetensors I/O and probe banks."""

from __future__ import annotations

import io
import itertools
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from torch.overrides import TorchFunctionMode

from interventions.probes import (
    LinearProbe,
    ProbeBank,
    ProbeError,
    ProbeMetrics,
    from_safetensors_bytes,
    probe_metrics,
    safetensors_metadata,
    to_safetensors_bytes,
    train_probe,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _direction(hidden: int, strength: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(hidden, generator=g)
    return d / d.norm() * strength


def _sample(d: torch.Tensor, n: int, pos_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Planted-direction data: x = noise + 2 * y * d, with P(y = 1) = pos_frac."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < pos_frac).long()
    x = torch.randn(n, d.shape[0], generator=g) + 2 * y[:, None] * d
    return x, y


def _random_probe(hidden: int, seed: int, labels: tuple[str, str] = ("negative", "positive")) -> LinearProbe:
    g = torch.Generator().manual_seed(seed)
    return LinearProbe(torch.randn(hidden, generator=g), float(torch.randn(1, generator=g)), labels)


def _raises(fn: Callable[[], object], *substrings: str) -> None:
    with pytest.raises(ProbeError) as info:
        fn()
    for s in substrings:
        assert s in str(info.value), f"{s!r} not in {str(info.value)!r}"


# --------------------------------------------------------------------------------------------
# LinearProbe
# --------------------------------------------------------------------------------------------


def test_score_equals_hand_computed_dot_product() -> None:
    probe = _random_probe(8, seed=1)
    h = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    scores = probe.score(h)
    assert scores.shape == (5,)
    assert scores.dtype == torch.float32
    w = probe.weight.tolist()
    for i in range(5):
        expected = sum(float(h[i, j]) * w[j] for j in range(8)) + probe.bias
        assert abs(float(scores[i]) - expected) <= 1e-6

    # Leading dimensions are kept, and any real dtype is scored in float32.
    h3 = h.reshape(5, 1, 8).to(torch.float64)
    assert probe.score(h3).shape == (5, 1)
    assert probe.score(h3).dtype == torch.float32
    assert torch.equal(probe.score(h3).reshape(5), scores)


def test_probe_canonicalises_weight_and_bias_to_float32_copies() -> None:
    w = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    probe = LinearProbe(w, 0.1)
    assert probe.weight.dtype == torch.float32
    assert not probe.weight.requires_grad
    assert probe.bias == float(np.float32(0.1))
    assert probe.hidden_size == 3
    # A private copy: later edits to the caller's tensor do not reach the probe.
    src = torch.ones(3)
    p2 = LinearProbe(src, 0.0)
    src[0] = 5.0
    assert float(p2.weight[0]) == 1.0


def test_content_hash_is_stable_and_sensitive_to_every_field() -> None:
    probe = _random_probe(16, seed=3)
    h = probe.content_hash()
    assert len(h) == 64
    assert all(c in "0123456789abcdef" for c in h)
    same = LinearProbe(probe.weight.clone(), probe.bias, probe.labels)
    assert same.content_hash() == h
    assert same == probe
    assert hash(same) == hash(probe)

    w = probe.weight.clone()
    w[7] = torch.nextafter(w[7], torch.tensor(math.inf))
    assert LinearProbe(w, probe.bias).content_hash() != h
    assert LinearProbe(probe.weight, probe.bias + 1.0).content_hash() != h
    assert LinearProbe(probe.weight, probe.bias, ("negative", "Positive")).content_hash() != h
    # Explicit lengths in the canonical bytes: the label boundary cannot be shifted.
    a = LinearProbe(probe.weight, probe.bias, ("a", "bc"))
    b = LinearProbe(probe.weight, probe.bias, ("ab", "c"))
    assert a.content_hash() != b.content_hash()


@pytest.mark.parametrize(
    ("weight", "bias", "labels", "message"),
    [
        (torch.tensor([1.0, float("nan")]), 0.0, ("n", "p"), "weight must be finite, found 1 NaN"),
        (torch.tensor([1.0, float("inf")]), 0.0, ("n", "p"), "weight must be finite, found 0 NaN and 1 Inf"),
        (
            torch.tensor([1.0, 1e300], dtype=torch.float64),
            0.0,
            ("n", "p"),
            "weight (as float32) must be finite",
        ),
        (torch.ones(2, 3), 0.0, ("n", "p"), "weight must be 1-D [hidden]"),
        (torch.ones(0), 0.0, ("n", "p"), "weight must be 1-D [hidden] with hidden >= 1"),
        (torch.ones(2, dtype=torch.bool), 0.0, ("n", "p"), "weight must have a real dtype"),
        ([1.0, 2.0], 0.0, ("n", "p"), "weight must be a torch.Tensor"),
        (torch.ones(2), float("nan"), ("n", "p"), "bias must be finite"),
        (torch.ones(2), 1e300, ("n", "p"), "bias must be finite (as float32)"),
        (torch.ones(2), "0", ("n", "p"), "bias must be a real number"),
        (torch.ones(2), 0.0, ("same", "same"), "labels must differ"),
        (torch.ones(2), 0.0, ("only",), "labels must be a pair"),
        (torch.ones(2), 0.0, ("", "p"), "labels must be non-empty"),
    ],
)
def test_linear_probe_refuses_bad_input(weight: Any, bias: Any, labels: Any, message: str) -> None:
    _raises(lambda: LinearProbe(weight, bias, labels), message)


def test_score_refuses_wrong_width() -> None:
    probe = _random_probe(8, seed=0)
    _raises(lambda: probe.score(torch.ones(3, 7)), "h must have shape [..., 8]", "(3, 7)")
    _raises(lambda: probe.score(torch.tensor(1.0)), "h must have shape [..., 8]")


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def test_train_probe_finds_planted_direction() -> None:
    d = _direction(32, strength=3.0, seed=0)
    x, y = _sample(d, 500, pos_frac=0.5, seed=1)
    result = train_probe(x, y, labels=("honest", "deceptive"))
    assert result.heldout is not None
    assert result.heldout.accuracy >= 0.95
    assert result.heldout.auroc >= 0.98
    assert result.n_train + result.n_heldout == 500
    assert result.train.n == result.n_train
    assert result.heldout.n == result.n_heldout
    assert result.probe.labels == ("honest", "deceptive")
    cosine = torch.nn.functional.cosine_similarity(result.probe.weight, d, dim=0)
    assert float(cosine) >= 0.9
    assert isinstance(result.train, ProbeMetrics)


def test_heldout_split_is_stratified_by_class() -> None:
    y = torch.tensor([1] * 20 + [0] * 80)
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0)) + y[:, None].float()
    result = train_probe(x, y, heldout_fraction=0.25)
    assert result.heldout is not None
    assert (result.n_train, result.n_heldout) == (75, 25)
    assert result.heldout.positives == 5
    assert result.train.positives == 15


def test_train_probe_is_deterministic_given_seed() -> None:
    d = _direction(16, strength=1.0, seed=4)
    x, y = _sample(d, 300, pos_frac=0.4, seed=5)
    a = train_probe(x, y, seed=7)
    b = train_probe(x, y, seed=7)
    assert torch.equal(a.probe.weight, b.probe.weight)
    assert a.probe.bias == b.probe.bias
    assert a.probe.content_hash() == b.probe.content_hash()
    assert a.heldout == b.heldout
    # Another seed draws another split, so other weights.
    c = train_probe(x, y, seed=8)
    assert not torch.equal(a.probe.weight, c.probe.weight)


def test_heldout_fraction_zero_trains_on_every_row() -> None:
    y = torch.tensor([0, 1, 0, 1])
    x = torch.tensor([[0.0], [1.0], [0.2], [0.9]])
    result = train_probe(x, y, heldout_fraction=0.0)
    assert result.heldout is None
    assert (result.n_train, result.n_heldout) == (4, 0)
    assert result.train.n == 4


def test_class_balance_raises_balanced_accuracy_on_imbalanced_data() -> None:
    # Weak signal, 10% positives: without balancing the probe leans towards the majority class.
    d = _direction(16, strength=0.6, seed=10)
    x, y = _sample(d, 1000, pos_frac=0.1, seed=11)
    x_test, y_test = _sample(d, 5000, pos_frac=0.1, seed=12)
    balanced = train_probe(x, y, class_balance=True, heldout_fraction=0.0).probe
    unbalanced = train_probe(x, y, class_balance=False, heldout_fraction=0.0).probe

    def bal_acc(p: LinearProbe) -> float:
        return float(balanced_accuracy_score(y_test.numpy(), (p.score(x_test) > 0).long().numpy()))

    def recall(p: LinearProbe) -> float:
        return float(((p.score(x_test) > 0) & (y_test == 1)).sum() / (y_test == 1).sum())

    assert bal_acc(balanced) >= bal_acc(unbalanced) + 0.1
    assert recall(balanced) >= recall(unbalanced) + 0.3


def test_larger_l2_gives_smaller_weight_norm() -> None:
    d = _direction(16, strength=2.0, seed=20)
    x, y = _sample(d, 400, pos_frac=0.5, seed=21)
    norms = [
        float(train_probe(x, y, l2=l2, heldout_fraction=0.0).probe.weight.norm())
        for l2 in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    ]
    assert all(a > b for a, b in itertools.pairwise(norms)), norms


def test_training_minimises_the_documented_objective_on_raw_activations() -> None:
    # Features with scales from 0.01 to 100 and an offset: the internal standardisation must be
    # folded back so that (w, b) is a stationary point of the raw-space objective
    #   sum_i s_i * BCE(x_i·w + b, y_i) / sum_i s_i + l2/2 * ||w||^2.
    g = torch.Generator().manual_seed(30)
    n, hidden, l2 = 300, 12, 1e-2
    y = (torch.rand(n, generator=g) < 0.3).long()
    x = (torch.randn(n, hidden, generator=g) + 0.5 * y[:, None]) * torch.logspace(-2, 2, hidden) + 5.0
    for class_balance in (True, False):
        probe = train_probe(x, y, l2=l2, class_balance=class_balance, heldout_fraction=0.0).probe
        w = probe.weight.double().requires_grad_(True)
        b = torch.tensor(probe.bias, dtype=torch.float64, requires_grad=True)
        counts = torch.bincount(y).double()
        s = (n / (2 * counts))[y] if class_balance else torch.ones(n, dtype=torch.float64)
        data = torch.nn.functional.binary_cross_entropy_with_logits(
            x.double() @ w + b, y.double(), weight=s / s.sum(), reduction="sum"
        )
        grad_w, grad_b = torch.autograd.grad(data + 0.5 * l2 * (w**2).sum(), [w, b])
        # Float32 rounding of w times feature scales of 100 leaves gradients of order 1e-6.
        assert float(grad_w.abs().max()) < 2e-5
        assert abs(float(grad_b)) < 1e-6


def test_training_is_translation_invariant() -> None:
    # The bias is unpenalised, so shifting every activation only moves the bias; scores on the
    # shifted activations must match (this catches a wrong fold-back of the centring).
    d = _direction(8, strength=0.5, seed=40)
    x, y = _sample(d, 300, pos_frac=0.5, seed=41)
    shift = torch.linspace(-10, 10, 8)
    a = train_probe(x, y, heldout_fraction=0.0).probe
    b = train_probe(x + shift, y, heldout_fraction=0.0).probe
    assert torch.allclose(a.weight, b.weight, atol=1e-5)
    assert torch.allclose(a.score(x), b.score(x + shift), atol=1e-4)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (torch.ones(4), torch.tensor([0, 1, 0, 1]), {}, "x must be 2-D [n, hidden]"),
        (torch.ones(4, 2), torch.tensor([0, 1, 2, 1]), {}, "y must be binary (0 or 1)"),
        (torch.ones(4, 2), torch.tensor([0.0, 1.0, 0.5, 1.0]), {}, "y must be binary"),
        (torch.ones(4, 2), torch.tensor([1, 1, 1, 1]), {}, "y must contain both classes"),
        (torch.ones(4, 2), torch.tensor([0, 1, 0]), {}, "x and y differ in length: 4 rows vs 3 labels"),
        (torch.ones(3, 2), torch.tensor([0, 1, 0]), {}, "at least 2 examples per class"),
        (torch.tensor([[float("nan")], [0.0]]), torch.tensor([0, 1]), {}, "x must be finite, found 1 NaN"),
        (
            torch.tensor([[float("inf")], [0.0]]),
            torch.tensor([0, 1]),
            {},
            "x must be finite, found 0 NaN and 1 Inf",
        ),
        (torch.ones(4, 2), torch.tensor([0, 1, 0, 1]), {"l2": -1.0}, "l2 must be a finite number >= 0"),
        (torch.ones(4, 2), torch.tensor([0, 1, 0, 1]), {"heldout_fraction": 1.0}, "heldout_fraction"),
        (torch.ones(4, 2), torch.tensor([0, 1, 0, 1]), {"max_iter": 0}, "max_iter must be an integer >= 1"),
        (torch.ones(4, 2), torch.tensor([0, 1, 0, 1]), {"labels": ("a", "a")}, "labels must differ"),
    ],
)
def test_train_probe_refuses_bad_input(
    x: torch.Tensor, y: torch.Tensor, kwargs: dict[str, Any], message: str
) -> None:
    _raises(lambda: train_probe(x, y, **kwargs), message)


def test_single_class_per_side_is_fine_without_heldout() -> None:
    x = torch.tensor([[0.0], [1.0]])
    result = train_probe(x, torch.tensor([0, 1]), heldout_fraction=0.0)
    assert float(result.probe.score(torch.tensor([1.0]))) > float(result.probe.score(torch.tensor([0.0])))


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def test_accuracy_and_f1_on_a_hand_made_example() -> None:
    scores = torch.tensor([2.0, -1.0, 0.5, -0.5, 3.0, -2.0, 0.1, -0.1])
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])
    # predictions (score > 0): 1 0 1 0 1 0 1 0 -> TP = 3, FP = 1, FN = 1, TN = 3
    m = probe_metrics(scores, labels)
    assert m.accuracy == 6 / 8
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1), abs=1e-15)
    assert m.n == 8
    assert m.positives == 4
    pred = (scores > 0).long().numpy()
    assert m.accuracy == accuracy_score(labels.numpy(), pred)
    assert m.f1 == f1_score(labels.numpy(), pred)


def test_threshold_is_strict_and_applies_to_logits() -> None:
    scores = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    labels = torch.tensor([0, 0, 1, 1])
    assert probe_metrics(scores, labels).accuracy == 1.0
    # score == threshold is predicted negative
    assert probe_metrics(scores, labels, threshold=1.0).accuracy == 0.75
    assert probe_metrics(scores, labels, threshold=-1.0).accuracy == 0.75


def test_auroc_matches_a_hand_computed_pair_count() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # Positives {0.35, 0.8, 0.4} vs negatives {0.1, 0.4}: a win counts 1, a tie 1/2.
    #   0.35: beats 0.1, loses to 0.4           -> 1
    #   0.8 : beats both                        -> 2
    #   0.4 : beats 0.1, ties 0.4               -> 1.5
    expected = (1 + 2 + 1.5) / (3 * 2)
    m = probe_metrics(scores, labels)
    assert m.auroc == pytest.approx(expected, abs=1e-12)
    assert m.auroc == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_auroc_is_nan_when_only_one_class_is_present() -> None:
    m = probe_metrics(torch.tensor([0.5, -0.5, 1.0]), torch.tensor([1, 1, 1]))
    assert math.isnan(m.auroc)
    assert m.accuracy == 2 / 3
    assert m.positives == 3
    none = probe_metrics(torch.tensor([-0.5, -1.0]), torch.tensor([0, 0]))
    assert math.isnan(none.auroc)
    assert none.f1 == 0.0  # no true and no predicted positives
    assert none.accuracy == 1.0


def test_ece_on_a_hand_computed_example() -> None:
    # sigmoid(ln 1/4) = 0.2 and sigmoid(ln 4) = 0.8: with 2 bins they land in bins [0, .5] and (.5, 1].
    lo, hi = math.log(0.25), math.log(4.0)
    scores = torch.tensor([lo, lo, hi, hi])
    labels = torch.tensor([0, 1, 1, 1])
    # bin 0: conf 0.2, fraction positive 0.5 -> 2/4 * 0.3; bin 1: conf 0.8, fraction 1.0 -> 2/4 * 0.2
    assert probe_metrics(scores, labels, bins=2).ece == pytest.approx(0.25, abs=1e-6)
    # One bin: |mean(y) - mean(p)| = |0.75 - 0.5|
    assert probe_metrics(scores, labels, bins=1).ece == pytest.approx(0.25, abs=1e-6)
    # Ten bins: 0.2 falls in (0.1, 0.2] and 0.8 in (0.7, 0.8]; the same two groups.
    assert probe_metrics(scores, labels, bins=10).ece == pytest.approx(0.25, abs=1e-6)


def test_ece_bin_edges_are_right_closed() -> None:
    # p = 0.5 (score 0) belongs to bin 0 = [0, 0.5] with 2 bins, not to (0.5, 1].
    scores = torch.tensor([0.0, math.log(4.0)])
    labels = torch.tensor([1, 0])
    # separate bins: 1/2 * |1 - 0.5| + 1/2 * |0 - 0.8| = 0.65 (one merged bin would give 0.15)
    assert probe_metrics(scores, labels, bins=2).ece == pytest.approx(0.65, abs=1e-6)


def test_perfectly_calibrated_scores_have_small_ece() -> None:
    g = torch.Generator().manual_seed(50)
    scores = torch.randn(20000, generator=g) * 2
    labels = (torch.rand(20000, generator=g) < torch.sigmoid(scores)).long()
    assert probe_metrics(scores, labels).ece < 0.02
    # Over-confident scores (logits times 4) are visibly miscalibrated.
    assert probe_metrics(scores * 4, labels).ece > 0.1


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        (torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]), {}, "scores must be finite"),
        (torch.tensor([0.0, float("inf")]), torch.tensor([0, 1]), {}, "scores must be finite"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), {}, "scores must be 1-D"),
        (torch.zeros(2), torch.tensor([0, 3]), {}, "labels must be binary"),
        (torch.zeros(3), torch.tensor([0, 1]), {}, "differ in length: 3 vs 2"),
        (torch.zeros(0), torch.zeros(0, dtype=torch.long), {}, "at least one row"),
        (torch.zeros(2), torch.tensor([0, 1]), {"bins": 0}, "bins must be an integer >= 1"),
        (
            torch.zeros(2),
            torch.tensor([0, 1]),
            {"threshold": float("nan")},
            "threshold must be a finite number",
        ),
    ],
)
def test_probe_metrics_refuses_bad_input(
    scores: torch.Tensor, labels: torch.Tensor, kwargs: dict[str, Any], message: str
) -> None:
    _raises(lambda: probe_metrics(scores, labels, **kwargs), message)


# --------------------------------------------------------------------------------------------
# ProbeBank
# --------------------------------------------------------------------------------------------


def test_bank_of_1000_probes_equals_individual_scores() -> None:
    hidden = 64
    probes = [_random_probe(hidden, seed=1000 + i) for i in range(1000)]
    bank = ProbeBank(probes)
    assert len(bank) == 1000
    assert bank.hidden_size == hidden
    assert bank.weight.shape == (1000, hidden)

    g = torch.Generator().manual_seed(0)
    h2 = torch.randn(7, hidden, generator=g)
    expected2 = torch.stack([p.score(h2) for p in probes], dim=-1)
    out2 = bank.score(h2)
    assert out2.shape == (7, 1000)
    assert torch.allclose(out2, expected2, atol=1e-5, rtol=0)

    h3 = torch.randn(2, 5, hidden, generator=g)
    expected3 = torch.stack([p.score(h3) for p in probes], dim=-1)
    out3 = bank.score(h3)
    assert out3.shape == (2, 5, 1000)
    assert torch.allclose(out3, expected3, atol=1e-5, rtol=0)


class _CallCounter(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        self.calls.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def test_bank_score_is_a_single_matmul_whatever_the_number_of_probes() -> None:
    hidden = 16
    h = torch.randn(3, 4, hidden)
    traces = []
    for n_probes in (1, 1000):
        bank = ProbeBank.from_tensors(torch.randn(n_probes, hidden), torch.randn(n_probes))
        with _CallCounter() as counter:
            out = bank.score(h)
        assert out.shape == (3, 4, n_probes)
        traces.append(counter.calls)
    # The same torch calls for 1 and 1000 probes: no loop over probes; exactly one addmm.
    assert traces[0] == traces[1]
    assert traces[1].count("addmm") == 1
    assert not {"matmul", "mm", "mv", "dot", "einsum"} & set(traces[1])


def test_bank_from_tensors_and_to() -> None:
    probes = [_random_probe(8, seed=i) for i in range(3)]
    bank = ProbeBank(probes)
    again = ProbeBank.from_tensors(bank.weight, bank.bias)
    h = torch.randn(4, 8)
    assert torch.equal(again.score(h), bank.score(h))
    b64 = bank.to(dtype=torch.float64)
    assert b64.weight.dtype == torch.float64
    assert b64.score(h).dtype == torch.float64
    assert torch.allclose(b64.score(h), bank.score(h).double(), atol=1e-5)
    assert bank.weight.dtype == torch.float32  # to() returns a copy
    _raises(lambda: bank.to(dtype=torch.int64), "dtype must be floating")
    _raises(
        lambda: ProbeBank.from_tensors(torch.full((2, 3), 1e6), torch.zeros(2)).to(dtype=torch.float16), "Inf"
    )


def test_bank_refuses_bad_input() -> None:
    _raises(
        lambda: ProbeBank([_random_probe(8, 0), _random_probe(8, 1), _random_probe(9, 2)]), "probe 2 has 9"
    )
    _raises(lambda: ProbeBank([]), "at least one probe")
    _raises(lambda: ProbeBank([_random_probe(8, 0), "nope"]), "probe 1 is a str")  # type: ignore[list-item]
    _raises(
        lambda: ProbeBank.from_tensors(torch.ones(8), torch.ones(1)), "weight must be 2-D [probes, hidden]"
    )
    _raises(lambda: ProbeBank.from_tensors(torch.ones(2, 8), torch.ones(3)), "bias must have shape [2]")
    _raises(
        lambda: ProbeBank.from_tensors(torch.tensor([[1.0, float("nan")]]), torch.zeros(1)),
        "weight must be finite",
    )
    _raises(
        lambda: ProbeBank.from_tensors(torch.ones(2, 8), torch.tensor([0.0, float("inf")])),
        "bias must be finite",
    )
    _raises(lambda: ProbeBank.from_tensors(torch.ones(2, 8, dtype=torch.long), torch.ones(2)), "floating")
    bank = ProbeBank([_random_probe(8, 0)])
    _raises(lambda: bank.score(torch.ones(2, 9)), "h must have shape [..., 8]", "(2, 9)")


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def test_safetensors_round_trip_is_bit_exact() -> None:
    probe = _random_probe(32, seed=60, labels=("calm", "angry ☂"))
    data = to_safetensors_bytes(probe, {"layer": "12", "site": "resid_post"})
    # The bytes may differ between calls (safetensors orders metadata keys by hash), the probe never.
    assert from_safetensors_bytes(to_safetensors_bytes(probe)).content_hash() == probe.content_hash()
    back = from_safetensors_bytes(data)
    assert torch.equal(back.weight, probe.weight)
    assert struct.pack("<f", back.bias) == struct.pack("<f", probe.bias)
    assert back.labels == ("calm", "angry ☂")
    assert back.content_hash() == probe.content_hash()
    meta = safetensors_metadata(data)
    assert meta["layer"] == "12"
    assert meta["site"] == "resid_post"
    assert meta["steerlab.kind"] == "linear_probe"


def test_safetensors_refuses_reserved_metadata_keys() -> None:
    probe = _random_probe(4, seed=0)
    _raises(
        lambda: to_safetensors_bytes(probe, {"steerlab.labels": "[]"}),
        "metadata key 'steerlab.labels' is reserved",
    )


def _good_meta() -> dict[str, str]:
    return {"steerlab.kind": "linear_probe", "steerlab.labels": '["negative", "positive"]'}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: to_safetensors_bytes(_random_probe(8, 0))[:-3], "truncated or corrupt"),
        (lambda: to_safetensors_bytes(_random_probe(8, 0))[:40], "truncated?"),
        (lambda: b"\x01\x02", "too short for a header"),
        (lambda: struct.pack("<Q", 5) + b"nope!", "header is not JSON"),
        (
            lambda: st_save(
                {"weight": torch.tensor([1.0, float("nan")]), "bias": torch.zeros(1)}, _good_meta()
            ),
            "weight must be finite, found 1 NaN",
        ),
        (
            lambda: st_save({"weight": torch.ones(2), "bias": torch.tensor([float("inf")])}, _good_meta()),
            "bias must be finite",
        ),
        (
            lambda: st_save({"weight": torch.ones(2, 2), "bias": torch.zeros(1)}, _good_meta()),
            "must be 1-D [hidden]",
        ),
        (
            lambda: st_save({"weight": torch.ones(2), "bias": torch.zeros(2)}, _good_meta()),
            "must have shape [1]",
        ),
        (
            lambda: st_save(
                {"weight": torch.ones(2, dtype=torch.float16), "bias": torch.zeros(1)}, _good_meta()
            ),
            "must be float32",
        ),
        (
            lambda: st_save(
                {"weight": torch.ones(2), "bias": torch.zeros(1), "x": torch.zeros(1)}, _good_meta()
            ),
            "exactly the tensors 'weight' and 'bias'",
        ),
        (lambda: st_save({"weight": torch.ones(2), "bias": torch.zeros(1)}), "not a linear probe file"),
        (
            lambda: st_save(
                {"weight": torch.ones(2), "bias": torch.zeros(1)}, {"steerlab.kind": "linear_probe"}
            ),
            "'steerlab.labels' is missing",
        ),
        (
            lambda: st_save(
                {"weight": torch.ones(2), "bias": torch.zeros(1)},
                {"steerlab.kind": "linear_probe", "steerlab.labels": '["x", "x"]'},
            ),
            "labels must differ",
        ),
    ],
)
def test_from_safetensors_refuses_bad_bytes(make: Callable[[], bytes], message: str) -> None:
    _raises(lambda: from_safetensors_bytes(make()), message)


def test_pickled_probe_is_refused_not_unpickled() -> None:
    buf = io.BytesIO()
    torch.save({"weight": torch.ones(4), "bias": torch.zeros(1)}, buf)
    _raises(lambda: from_safetensors_bytes(buf.getvalue()), "invalid safetensors data")

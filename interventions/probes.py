"""Linear probes on activations: training, metrics, safetensors I/O and probe banks.

A probe is a logistic-regression read-out of one site's activation. Its *score* for a row ``h`` is
the logit ``h·w + b`` on the raw activation (docs/design.md §3); the probability
of the positive class is ``sigmoid(score)``. Everything that streams scores to a browser or gates a
write on a threshold uses the logit, so a threshold of 0 means "probability 0.5".

* :class:`LinearProbe` is one probe (weight ``[hidden]``, bias, the names of its two classes) with a
  content hash that identifies it across processes.
* :func:`to_safetensors_bytes` / :func:`from_safetensors_bytes` are the only (de)serialisation:
  safetensors, never pickle; NaN/Inf are refused on the way in and out.
* :func:`train_probe` fits a probe in torch (full-batch L-BFGS) with a stratified held-out split.
* :func:`probe_metrics` computes accuracy, AUROC, F1 and calibration error of a set of scores.
* :class:`ProbeBank` scores many probes with one matmul (docs/design.md §6: "a bank of 1,000 probes at one
  layer: one matmul, not a loop").

This module is part of the pure library: torch, numpy, safetensors and scikit-learn only.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch import Tensor

__all__ = [
    "LinearProbe",
    "ProbeBank",
    "ProbeError",
    "ProbeMetrics",
    "TrainResult",
    "from_safetensors_bytes",
    "probe_metrics",
    "safetensors_metadata",
    "to_safetensors_bytes",
    "train_probe",
]

DEFAULT_LABELS: tuple[str, str] = ("negative", "positive")
# Metadata keys this module writes itself; user metadata may not shadow them.
_META_KIND_KEY = "steerlab.kind"
_META_KIND = "linear_probe"
_META_LABELS_KEY = "steerlab.labels"
_RESERVED_META_KEYS = frozenset({_META_KIND_KEY, _META_LABELS_KEY})
# Bumped if the canonical byte layout behind content_hash ever changes, so old and new hashes
# can never collide by accident.
_HASH_DOMAIN = b"steerlab.linear_probe.v1\x00"
_MAX_LABEL_CHARS = 256


class ProbeError(ValueError):
    """Bad input to a probe function: wrong shapes, non-finite values, invalid labels or bytes."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_labels(labels: object) -> tuple[str, str]:
    """Validate a pair of class names and return it as a tuple.

    Args:
        labels: names for class 0 and class 1.
    """
    if not isinstance(labels, (tuple, list)) or len(labels) != 2:
        raise ProbeError(f"labels must be a pair of strings (class 0, class 1), got {labels!r}")
    neg, pos = labels
    if not isinstance(neg, str) or not isinstance(pos, str):
        raise ProbeError(f"labels must be strings, got {labels!r}")
    if not neg or not pos or len(neg) > _MAX_LABEL_CHARS or len(pos) > _MAX_LABEL_CHARS:
        raise ProbeError(f"labels must be non-empty and at most {_MAX_LABEL_CHARS} characters")
    if neg == pos:
        raise ProbeError(f"labels must differ, got {neg!r} twice")
    return (neg, pos)


def _check_real_tensor(t: object, name: str) -> Tensor:
    """Reject non-tensors and bool/complex tensors, which have no meaning as activations or weights.

    Args:
        t: the object to check.
        name: the argument's name, for the error message.
    """
    if not isinstance(t, Tensor):
        raise ProbeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise ProbeError(f"{name} must have a real dtype, got {t.dtype}")
    return t


def _check_finite(t: Tensor, name: str) -> None:
    """Raise ProbeError if ``t`` holds NaN or Inf.

    Args:
        t: tensor to check (any real dtype).
        name: the argument's name, for the error message.
    """
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ProbeError(f"{name} must be finite, found {n_nan} NaN and {n_inf} Inf values")


def _check_binary(y: object, name: str) -> Tensor:
    """Validate a 1-D tensor of class labels in {0, 1} and return it as int64 on the CPU.

    Args:
        y: the labels (bool, integer or float tensor holding exactly 0 and 1).
        name: the argument's name, for the error message.
    """
    if not isinstance(y, Tensor):
        raise ProbeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1:
        raise ProbeError(f"{name} must be 1-D, got shape {tuple(y.shape)}")
    if y.is_complex():
        raise ProbeError(f"{name} must have a real dtype, got {y.dtype}")
    y_cpu = y.detach().cpu()
    # Compare as float64 so that 0.5 or NaN cannot round to a valid class on the way to int64.
    as_f = y_cpu.to(torch.float64)
    bad = ~((as_f == 0) | (as_f == 1))
    if bool(bad.any()):
        found = sorted({float(v) for v in as_f[bad].unique()[:5].tolist()})
        raise ProbeError(f"{name} must be binary (0 or 1), found other values such as {found}")
    return as_f.to(torch.int64)


# --------------------------------------------------------------------------------------------
# LinearProbe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LinearProbe:
    """One linear probe: ``score(h) = h·weight + bias`` on the raw activation.

    The constructor canonicalises its inputs so that a probe survives a safetensors round trip
    bit-exactly and its :meth:`content_hash` is stable: ``weight`` becomes a detached, contiguous,
    private float32 copy (on the device it came from) and ``bias`` is rounded to the nearest float32.
    Do not mutate ``weight`` in place; the hash would no longer describe it.

    Equality and hashing follow :meth:`content_hash` (bit-level equality of weight, bias and labels).

    Args:
        weight: float tensor ``[hidden]``, finite after conversion to float32.
        bias: finite real number.
        labels: names of class 0 and class 1.
    """

    weight: Tensor
    bias: float
    labels: tuple[str, str] = DEFAULT_LABELS

    def __post_init__(self) -> None:
        w = _check_real_tensor(self.weight, "weight")
        if w.dim() != 1 or w.numel() == 0:
            raise ProbeError(f"weight must be 1-D [hidden] with hidden >= 1, got shape {tuple(w.shape)}")
        # Check before and after the cast: float64 values beyond float32's range become Inf.
        _check_finite(w, "weight")
        w32 = w.detach().to(torch.float32).contiguous().clone()
        _check_finite(w32, "weight (as float32)")
        if isinstance(self.bias, bool) or not isinstance(self.bias, (int, float, np.floating, np.integer)):
            raise ProbeError(f"bias must be a real number, got {type(self.bias).__name__}")
        with np.errstate(over="ignore"):  # overflow to Inf is reported just below, as a ProbeError
            b32 = float(np.float32(self.bias))
        if not math.isfinite(b32):
            raise ProbeError(f"bias must be finite (as float32), got {self.bias!r}")
        # frozen=True forbids plain assignment; these writes only canonicalise fields once, here.
        object.__setattr__(self, "weight", w32)
        object.__setattr__(self, "bias", b32)
        object.__setattr__(self, "labels", _check_labels(self.labels))

    @property
    def hidden_size(self) -> int:
        """Width of the activation this probe reads."""
        return int(self.weight.shape[0])

    def score(self, h: Tensor) -> Tensor:
        """Logits ``h·w + b`` for every row of ``h``, computed in float32.

        Args:
            h: activations ``[..., hidden]`` (any real dtype, cast to float32), on the probe's device.

        Returns:
            float32 tensor ``[...]`` (the leading dimensions of ``h``).
        """
        h = _check_real_tensor(h, "h")
        if h.dim() < 1 or h.shape[-1] != self.hidden_size:
            raise ProbeError(
                f"h must have shape [..., {self.hidden_size}] for this probe, got {tuple(h.shape)}"
            )
        if h.device != self.weight.device:
            raise ProbeError(f"h is on {h.device} but the probe is on {self.weight.device}")
        return torch.matmul(h.to(torch.float32), self.weight) + self.bias

    def to(self, device: torch.device | str) -> LinearProbe:
        """A copy of this probe with its weight on ``device`` (the dtype stays float32).

        Args:
            device: target device.
        """
        return LinearProbe(self.weight.to(device), self.bias, self.labels)

    def canonical_bytes(self) -> bytes:
        """The bytes :meth:`content_hash` digests.

        Layout: a domain tag, hidden size (uint64 LE), weight (float32 LE), bias (float32 LE), then each
        label as uint32 LE byte length + UTF-8. Lengths are explicit so that no two different probes
        (e.g. labels ``("a", "bc")`` vs ``("ab", "c")``) share bytes.
        """
        w = self.weight.detach().cpu().numpy().astype("<f4", copy=False)
        parts = [_HASH_DOMAIN, struct.pack("<Q", w.shape[0]), w.tobytes(), struct.pack("<f", self.bias)]
        for label in self.labels:
            enc = label.encode("utf-8")
            parts.append(struct.pack("<I", len(enc)))
            parts.append(enc)
        return b"".join(parts)

    def content_hash(self) -> str:
        """Hex SHA-256 of :meth:`canonical_bytes` (64 lowercase hex characters, no prefix)."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinearProbe):
            return NotImplemented
        return self.canonical_bytes() == other.canonical_bytes()

    def __hash__(self) -> int:
        return hash(self.content_hash())


# --------------------------------------------------------------------------------------------
# safetensors I/O
# --------------------------------------------------------------------------------------------


def to_safetensors_bytes(p: LinearProbe, metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise a probe as safetensors: tensors ``weight`` [H] and ``bias`` [1] (float32).

    The class names go in the metadata under ``steerlab.labels`` (a JSON list) with
    ``steerlab.kind = "linear_probe"``; extra ``metadata`` is stored alongside.

    The bytes are *not* canonical: safetensors 0.8 writes the metadata keys in hash-map order, which
    varies between calls. Identify a probe by :meth:`LinearProbe.content_hash`, never by a digest of
    these bytes.

    Args:
        p: the probe.
        metadata: extra string-to-string metadata; may not use the ``steerlab.*`` keys above.
    """
    if not isinstance(p, LinearProbe):
        raise ProbeError(f"expected a LinearProbe, got {type(p).__name__}")
    meta: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ProbeError(f"metadata must map str to str, got {key!r}: {type(value).__name__}")
        if key in _RESERVED_META_KEYS:
            raise ProbeError(f"metadata key {key!r} is reserved")
        meta[key] = value
    meta[_META_KIND_KEY] = _META_KIND
    meta[_META_LABELS_KEY] = json.dumps(list(p.labels), ensure_ascii=False)
    tensors = {
        "weight": p.weight.detach().cpu().contiguous(),
        "bias": torch.tensor([p.bias], dtype=torch.float32),
    }
    return bytes(_st_save(tensors, metadata=meta))


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (its JSON header), without reading tensors.

    Args:
        data: the safetensors bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProbeError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < 8:
        raise ProbeError(f"invalid safetensors data: {len(raw)} bytes is too short for a header")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > len(raw) - 8:
        raise ProbeError(
            f"invalid safetensors data (truncated?): header says {header_len} bytes, only {len(raw) - 8} left"
        )
    try:
        header = json.loads(raw[8 : 8 + header_len].decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
        raise ProbeError(f"invalid safetensors data: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ProbeError("invalid safetensors data: header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ProbeError("invalid safetensors data: __metadata__ must map strings to strings")
    return dict(meta)


def from_safetensors_bytes(data: bytes) -> LinearProbe:
    """Load a probe written by :func:`to_safetensors_bytes`; never unpickles anything.

    Refuses truncated or malformed bytes, missing or extra tensors, dtypes other than float32,
    wrong shapes, NaN/Inf and missing or invalid labels, with a :class:`ProbeError`.

    Args:
        data: the safetensors bytes.
    """
    meta = safetensors_metadata(data)
    try:
        tensors = _st_load(bytes(data))
    except SafetensorError as exc:
        raise ProbeError(f"invalid safetensors data (truncated or corrupt?): {exc}") from exc
    if set(tensors) != {"weight", "bias"}:
        raise ProbeError(f"a probe file holds exactly the tensors 'weight' and 'bias', got {sorted(tensors)}")
    weight, bias = tensors["weight"], tensors["bias"]
    for name, t in (("weight", weight), ("bias", bias)):
        # Strict: this module only writes float32, so anything else was made by something else.
        if t.dtype != torch.float32:
            raise ProbeError(f"probe tensor {name!r} must be float32, got {t.dtype}")
    if weight.dim() != 1 or weight.numel() == 0:
        raise ProbeError(f"probe tensor 'weight' must be 1-D [hidden], got shape {tuple(weight.shape)}")
    if tuple(bias.shape) != (1,):
        raise ProbeError(f"probe tensor 'bias' must have shape [1], got {tuple(bias.shape)}")
    _check_finite(weight, "weight")
    _check_finite(bias, "bias")
    if meta.get(_META_KIND_KEY) != _META_KIND:
        raise ProbeError(
            f"not a linear probe file: metadata {_META_KIND_KEY!r} is {meta.get(_META_KIND_KEY)!r}"
        )
    try:
        labels = json.loads(meta[_META_LABELS_KEY])
    except (KeyError, ValueError, RecursionError):
        raise ProbeError(f"probe metadata {_META_LABELS_KEY!r} is missing or not JSON") from None
    return LinearProbe(weight, float(bias[0]), _check_labels(labels))


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeMetrics:
    """Quality of a probe's scores on one set of labelled rows (see :func:`probe_metrics`).

    Args:
        accuracy: fraction of rows where ``score > threshold`` equals the label.
        auroc: area under the ROC curve of the scores; NaN when only one class is present.
        f1: F1 of the positive class (0.0 when there are no true and no predicted positives).
        ece: expected calibration error of ``sigmoid(score)`` (positive-class reliability form).
        n: number of rows.
        positives: number of rows labelled 1.
    """

    accuracy: float
    auroc: float
    f1: float
    ece: float
    n: int
    positives: int


def _expected_calibration_error(prob: np.ndarray, y: np.ndarray, bins: int) -> float:
    """ECE of positive-class probabilities with ``bins`` equal-width bins on [0, 1].

    Args:
        prob: predicted P(y = 1), float64 ``[n]``.
        y: labels in {0, 1}, ``[n]``.
        bins: number of bins.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Same bin assignment as sklearn.calibration.calibration_curve(strategy="uniform"):
    # bin 0 is [0, e1], bin k is (e_k, e_{k+1}].
    idx = np.searchsorted(edges[1:-1], prob, side="left")
    n = prob.shape[0]
    ece = 0.0
    for k in range(bins):  # loops over bins (<= a few dozen), not over rows
        mask = idx == k
        count = int(mask.sum())
        if count:
            ece += count / n * abs(float(y[mask].mean()) - float(prob[mask].mean()))
    return ece


def probe_metrics(scores: Tensor, labels: Tensor, *, threshold: float = 0.0, bins: int = 10) -> ProbeMetrics:
    """Accuracy, AUROC, F1 and ECE of probe scores (logits) against binary labels.

    * Predictions are ``score > threshold`` (strict), so the default threshold 0 means p > 0.5.
    * AUROC is threshold-free and is ``float("nan")`` when ``labels`` holds only one class (it is
      undefined then; this is not an error, so that metrics of a one-class slice can still be shown).
    * F1 is the positive class's; it is 0.0 when there are neither true nor predicted positives.
    * ECE uses ``sigmoid(score)`` as the predicted probability of the *positive* class and
      ``bins`` equal-width bins on [0, 1] (bin 0 is [0, 1/bins], bin k is (k/bins, (k+1)/bins], as in
      ``sklearn.calibration.calibration_curve``): ``ECE = sum_b |B_b|/n * |mean(y in B_b) - mean(p in
      B_b)|``. This is the binary "positive-class reliability" form, which is what a reliability
      diagram shows; it differs from the multi-class "top-label confidence" form, which bins
      ``max(p, 1-p)`` against the accuracy of the predicted class.

    Args:
        scores: finite logits ``[n]``.
        labels: labels ``[n]`` in {0, 1}.
        threshold: finite logit above which a row is predicted positive.
        bins: number of ECE bins, >= 1.
    """
    scores = _check_real_tensor(scores, "scores")
    if scores.dim() != 1:
        raise ProbeError(f"scores must be 1-D [n], got shape {tuple(scores.shape)}")
    y = _check_binary(labels, "labels")
    if scores.shape[0] != y.shape[0]:
        raise ProbeError(f"scores and labels differ in length: {scores.shape[0]} vs {y.shape[0]}")
    if scores.shape[0] == 0:
        raise ProbeError("probe_metrics needs at least one row")
    _check_finite(scores, "scores")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ProbeError(f"threshold must be a finite number, got {threshold!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ProbeError(f"bins must be an integer >= 1, got {bins!r}")

    s = scores.detach().cpu().to(torch.float64).numpy()
    yn = y.numpy()
    pred = (s > threshold).astype(np.int64)
    positives = int(yn.sum())
    n = int(yn.shape[0])
    both_classes = 0 < positives < n
    auroc = float(roc_auc_score(yn, s)) if both_classes else float("nan")
    # Sigmoid in float64 so that large logits do not all collapse to exactly 0 or 1.
    prob = 1.0 / (1.0 + np.exp(-s))
    return ProbeMetrics(
        accuracy=float(accuracy_score(yn, pred)),
        auroc=auroc,
        f1=float(f1_score(yn, pred, zero_division=0.0)),
        ece=_expected_calibration_error(prob, yn, bins),
        n=n,
        positives=positives,
    )


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_probe` returns.

    Args:
        probe: the trained probe (scores raw activations).
        train: metrics on the training rows.
        heldout: metrics on the held-out rows; None when ``heldout_fraction`` was 0.
        n_train: number of training rows.
        n_heldout: number of held-out rows.
        heldout_rows: indices of the held-out rows (sorted), for further evaluation of the split.
    """

    probe: LinearProbe
    train: ProbeMetrics
    heldout: ProbeMetrics | None
    n_train: int
    n_heldout: int
    heldout_rows: Tensor | None = None


def _stratified_split(y: Tensor, heldout_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of training and held-out rows, stratified by class and deterministic in ``seed``.

    Each class contributes ``round(fraction * n_class)`` held-out rows, clamped so that it keeps at
    least one row on each side of the split.

    Args:
        y: int64 labels ``[n]`` in {0, 1}.
        heldout_fraction: fraction of each class held out, in [0, 1).
        seed: seed of the permutation.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    train_parts: list[Tensor] = []
    held_parts: list[Tensor] = []
    for cls in (0, 1):
        idx = torch.nonzero(y == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_held = 0
        if heldout_fraction > 0:
            n_held = min(idx.numel() - 1, max(1, math.floor(heldout_fraction * idx.numel() + 0.5)))
        held_parts.append(idx[:n_held])
        train_parts.append(idx[n_held:])
    # Sorted so that row order (and so the floating-point summation order) does not depend on the class
    # interleaving, only on which rows were chosen.
    return torch.cat(train_parts).sort().values, torch.cat(held_parts).sort().values


def _fit_logistic(
    x: Tensor, y: Tensor, *, l2: float, class_balance: bool, max_iter: int
) -> tuple[Tensor, float]:
    """Minimise the weighted logistic loss plus ``l2/2 * ||w||^2`` on raw ``x``; return (w, b) in float64.

    Objective: ``sum_i s_i * BCE(x_i·w + b, y_i) / sum_i s_i + l2/2 * ||w||^2``, with ``s_i = 1`` or,
    when balancing, ``s_i = n / (2 * n_{y_i})``. The bias is not penalised.

    For conditioning, L-BFGS runs on standardised features ``z = (x - mu) / sigma`` with parameters
    (v, c); since ``x·w + b = z·v + c`` for ``w = v / sigma`` and ``b = c - mu·w``, and the penalty is
    written on ``w = v / sigma``, this is the same objective under a change of variables: the
    minimiser maps back to the raw-space minimiser exactly (up to rounding).

    Args:
        x: float64 ``[n, hidden]`` on the CPU.
        y: int64 labels ``[n]``.
        l2: L2 penalty on the raw-space weight.
        class_balance: weight rows inversely to their class frequency.
        max_iter: maximum L-BFGS iterations.
    """
    n, hidden = x.shape
    yf = y.to(torch.float64)
    if class_balance:
        counts = torch.bincount(y, minlength=2).to(torch.float64)
        sample_w = (n / (2.0 * counts))[y]
    else:
        sample_w = torch.ones(n, dtype=torch.float64)
    sample_w = sample_w / sample_w.sum()

    mu = x.mean(dim=0)
    sigma = x.std(dim=0, correction=0)
    # Any positive scale is a valid change of variables; near-constant features keep scale 1 so that
    # dividing by ~0 cannot blow up z.
    tiny = 1e-8 * max(float(sigma.max()), 1e-300)
    scale = torch.where(sigma > tiny, sigma, torch.ones_like(sigma))
    z = (x - mu) / scale

    v = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [v, c],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        # The loss is a normalised mean of order 1, so a change below 1e-16 is float64 round-off: stop
        # only then. Looser (e.g. torch's default 1e-9) stops while the gradient is still visibly
        # non-zero, most on features with a large scale.
        tolerance_grad=1e-10,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ v + c
        data = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yf, weight=sample_w, reduction="sum"
        )
        loss = data + 0.5 * l2 * torch.sum((v / scale) ** 2)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        w = v.detach() / scale
        b = float(c.detach()) - float(mu @ w)
    return w, b


def train_probe(
    x: Tensor,
    y: Tensor,
    *,
    l2: float = 1e-3,
    class_balance: bool = True,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 500,
    labels: tuple[str, str] = DEFAULT_LABELS,
) -> TrainResult:
    """Train a logistic-regression probe on activations ``x`` with binary labels ``y``.

    The held-out split is stratified by class and depends only on ``seed``; training is full-batch
    L-BFGS from zeros, in float64 on the CPU, so the same inputs and seed give bit-identical weights.
    The objective (see :func:`_fit_logistic`) is the class-weighted mean logistic loss plus
    ``l2/2 * ||w||^2`` on the raw-space weight (the bias is not penalised). The returned probe
    scores raw activations: ``probe.score(h) == h·w + b``.

    With ``l2 = 0`` on separable data the optimum is at infinity; the weights then grow until
    ``max_iter`` stops L-BFGS. Memory: ``x`` is copied once as float64 (8 bytes per element).

    Args:
        x: finite activations ``[n, hidden]``.
        y: labels ``[n]`` in {0, 1} (bool, integer or float).
        l2: finite L2 penalty >= 0 on the weights.
        class_balance: weight each row by ``n / (2 * n_class)`` so both classes count equally.
        heldout_fraction: fraction of each class held out for evaluation, in [0, 1). 0 trains on all
            rows and returns ``heldout=None``; otherwise every class needs at least 2 rows.
        seed: seed of the held-out split.
        max_iter: maximum L-BFGS iterations, >= 1.
        labels: names of class 0 and class 1, stored on the probe.
    """
    x = _check_real_tensor(x, "x")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ProbeError(f"x must be 2-D [n, hidden] with n, hidden >= 1, got shape {tuple(x.shape)}")
    _check_finite(x, "x")
    yi = _check_binary(y, "y")
    if yi.shape[0] != x.shape[0]:
        raise ProbeError(f"x and y differ in length: {x.shape[0]} rows vs {yi.shape[0]} labels")
    labels = _check_labels(labels)
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not math.isfinite(l2) or l2 < 0:
        raise ProbeError(f"l2 must be a finite number >= 0, got {l2!r}")
    if (
        isinstance(heldout_fraction, bool)
        or not isinstance(heldout_fraction, (int, float))
        or not 0 <= heldout_fraction < 1
    ):
        raise ProbeError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ProbeError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ProbeError(f"seed must be an integer, got {seed!r}")

    counts = torch.bincount(yi, minlength=2).tolist()
    if min(counts) == 0:
        raise ProbeError(f"y must contain both classes (0 and 1), got counts {counts}")
    if heldout_fraction > 0 and min(counts) < 2:
        raise ProbeError(
            f"a held-out split needs at least 2 examples per class, got counts {counts}; "
            "use heldout_fraction=0 to train on every row"
        )

    train_idx, held_idx = _stratified_split(yi, float(heldout_fraction), seed)
    x64 = x.detach().cpu().to(torch.float64)
    w, b = _fit_logistic(
        x64[train_idx], yi[train_idx], l2=float(l2), class_balance=class_balance, max_iter=max_iter
    )
    probe = LinearProbe(w.to(torch.float32), b, labels)

    # Metrics use the float32 probe exactly as it will be deployed, not the float64 fit.
    x_cpu = x.detach().cpu()
    train_metrics = probe_metrics(probe.score(x_cpu[train_idx]), yi[train_idx])
    held_metrics = probe_metrics(probe.score(x_cpu[held_idx]), yi[held_idx]) if held_idx.numel() else None
    return TrainResult(
        probe=probe,
        train=train_metrics,
        heldout=held_metrics,
        n_train=int(train_idx.numel()),
        n_heldout=int(held_idx.numel()),
        heldout_rows=held_idx,
    )


# --------------------------------------------------------------------------------------------
# ProbeBank
# --------------------------------------------------------------------------------------------


class ProbeBank:
    """Many probes of one site, scored together with a single matmul.

    Holds ``weight [P, H]`` and ``bias [P]``; ``score(h)`` is ``h @ weight.T + bias`` via one
    ``torch.addmm`` over the flattened rows, with no Python loop over probes or rows.

    Args:
        probes: at least one probe, all of the same hidden size (their order is the output order).
    """

    __slots__ = ("_bias", "_weight")

    def __init__(self, probes: Sequence[LinearProbe]) -> None:
        if isinstance(probes, LinearProbe) or not isinstance(probes, Sequence):
            raise ProbeError("ProbeBank takes a sequence of LinearProbe")
        if len(probes) == 0:
            raise ProbeError("ProbeBank needs at least one probe")
        for i, p in enumerate(probes):
            if not isinstance(p, LinearProbe):
                raise ProbeError(f"probe {i} is a {type(p).__name__}, not a LinearProbe")
        hidden = probes[0].hidden_size
        for i, p in enumerate(probes):
            if p.hidden_size != hidden:
                raise ProbeError(
                    f"all probes in a bank must have the same hidden size: probe 0 has {hidden}, "
                    f"probe {i} has {p.hidden_size}"
                )
        device = probes[0].weight.device
        self._weight = torch.stack([p.weight.to(device) for p in probes])
        self._bias = torch.tensor([p.bias for p in probes], dtype=torch.float32, device=device)

    @classmethod
    def from_tensors(cls, weight: Tensor, bias: Tensor) -> ProbeBank:
        """A bank from stacked tensors, kept in their own (floating) dtype and device.

        Args:
            weight: finite floating ``[P, H]``, P, H >= 1.
            bias: finite ``[P]``, same dtype and device as ``weight``.
        """
        weight = _check_real_tensor(weight, "weight")
        bias = _check_real_tensor(bias, "bias")
        if not weight.is_floating_point():
            raise ProbeError(f"weight must be a floating tensor, got {weight.dtype}")
        if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
            raise ProbeError(f"weight must be 2-D [probes, hidden] with both >= 1, got {tuple(weight.shape)}")
        if tuple(bias.shape) != (weight.shape[0],):
            raise ProbeError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
        if bias.device != weight.device:
            raise ProbeError(f"bias is on {bias.device} but weight is on {weight.device}")
        _check_finite(weight, "weight")
        _check_finite(bias, "bias")
        bank = cls.__new__(cls)
        bank._weight = weight.detach().contiguous().clone()
        bank._bias = bias.detach().to(weight.dtype).contiguous().clone()
        return bank

    @property
    def weight(self) -> Tensor:
        """The stacked weights ``[P, H]`` (do not mutate)."""
        return self._weight

    @property
    def bias(self) -> Tensor:
        """The biases ``[P]`` (do not mutate)."""
        return self._bias

    @property
    def hidden_size(self) -> int:
        """Width of the activation the bank reads."""
        return int(self._weight.shape[1])

    def __len__(self) -> int:
        return int(self._weight.shape[0])

    def score(self, h: Tensor) -> Tensor:
        """Scores of every probe for every row: ``[..., H] -> [..., P]``.

        ``h`` is cast to the bank's dtype (so a float16 bank on a GPU reads float16 activations
        without another copy); it must be on the bank's device.

        Args:
            h: activations ``[..., H]``.
        """
        if not isinstance(h, Tensor):
            raise ProbeError(f"h must be a torch.Tensor, got {type(h).__name__}")
        if h.dim() < 1 or h.shape[-1] != self.hidden_size:
            raise ProbeError(
                f"h must have shape [..., {self.hidden_size}] for this bank, got {tuple(h.shape)}"
            )
        if h.device != self._weight.device:
            raise ProbeError(f"h is on {h.device} but the bank is on {self._weight.device}")
        flat = h.reshape(-1, self.hidden_size).to(self._weight.dtype)
        out = torch.addmm(self._bias, flat, self._weight.t())
        return out.reshape(*h.shape[:-1], len(self))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ProbeBank:
        """A copy of the bank on ``device`` and/or in floating ``dtype``.

        Args:
            device: target device (unchanged when None).
            dtype: target floating dtype (unchanged when None).
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ProbeError(f"a probe bank's dtype must be floating, got {dtype}")
        bank = ProbeBank.__new__(ProbeBank)
        bank._weight = self._weight.to(device=device, dtype=dtype)
        bank._bias = self._bias.to(device=device, dtype=dtype)
        # Casting down (e.g. float32 values beyond float16's range) must not smuggle Inf into scores.
        _check_finite(bank._weight, "weight (after cast)")
        _check_finite(bank._bias, "bias (after cast)")
        return bank

    def __repr__(self) -> str:
        return (
            f"ProbeBank(probes={len(self)}, hidden={self.hidden_size}, "
            f"dtype={self._weight.dtype}, device={self._weight.device})"
        )

"""Steering vectors from contrastive pairs, per layer, and the file formats they travel in.

A :class:`SteeringVector` maps a layer index to one float32 direction ``[hidden]``. The layer index
is **0-based and names the decoder block whose output (``resid_post``) the direction is added to**
— the convention of repeng (``ControlModule`` wraps ``model.layers[layer]`` and adds to its
output) and of llama.cpp's control-vector loader (see "GGUF" below).

Training (:func:`from_contrastive`), from per-layer activations of positive and negative prompts:

* ``mean_diff``: ``mean(pos) - mean(neg)``. **Not normalised**: its length is the average
  separation of the two sets, which is a meaningful default scale for steering (as in the
  steering-vectors library's mean aggregator; llama.cpp's ``cvector-generator --method mean``
  normalises instead).
* ``pca_diff``: repeng's default. First principal component of the paired differences
  ``pos_i - neg_i`` **after centring them** (repeng fits ``sklearn.decomposition.PCA``, which
  subtracts the mean). It therefore finds the axis along which the *size* of the difference
  varies most, not the mean difference itself: if every pair differs by exactly the same vector
  there is no variance and it is refused (use ``mean_diff`` or ``pca_center``).
* ``pca_center``: repeng's other method. Each pair is centred on its own midpoint and PCA runs on
  the stacked centred activations ``[(pos_i - neg_i)/2; -(pos_i - neg_i)/2]``. Those rows have
  zero mean, so this is the *uncentred* top component of the differences — the same direction the
  steering-vectors library's ``pca_aggregator`` computes.

PCA directions are unit-norm (like ``PCA.components_``). Their sign follows repeng: flipped so
that in most pairs the positive example projects higher than the negative one; a tie is broken by
the mean projection (positive higher on average), and an exact tie of that by making the largest
component positive, so the result never depends on the SVD routine's arbitrary sign. PCA runs in
float64 with ``torch.linalg.svd`` (deterministic; no randomised solver), so results agree with
repeng's float32 sklearn computation up to rounding.

File formats (each reader refuses bad input with :class:`VectorError`, never unpickles, and
changes nothing):

* safetensors (:func:`to_safetensors_bytes`): tensors ``layer.<i>`` ``[hidden]`` float32; metadata
  ``steerlab_format="steering_vector/1"``, ``method``, ``model`` (when set) and the vector's own
  metadata. The reader also takes a foreign file holding one tensor: ``[layers, hidden]`` (row
  ``i`` is layer ``i``) or ``[hidden]`` with an explicit ``layer=``.
* GGUF (:func:`to_gguf_bytes`): llama.cpp / repeng control vectors, see below.
* ``.npy`` (:func:`from_npy_bytes`, import only): ``[hidden]`` with ``layer=``, or ``[layers, hidden]``.

GGUF control vectors — the layer convention
-------------------------------------------
Our layer ``L`` is stored as the tensor ``direction.L``: the mapping is the identity, and it is the
one both producers and the consumer of these files agree on.

* llama.cpp ``common/common.cpp`` ``common_control_vector_load_one``: parses ``direction.<k>``,
  rejects ``k == 0`` (``"invalid (zero) direction tensor layer index"``) and stores the tensor at
  ``result.data + n_embd * (layer_idx - 1)  // layer 1 at [0]``.
* llama.cpp ``src/llama-adapter.cpp`` ``llama_adapter_cvec::apply``: ``for (il = 1; il < n_layer;
  il++)`` copies ``data + n_embd * (il - 1)`` into ``tensors[il]`` — so ``tensors[k]`` holds
  ``direction.k``; ``init`` pushes ``nullptr`` for layer 0 ("there's never a tensor for layer 0").
* llama.cpp ``src/models/llama.cpp`` ``llm_build_llama`` (and every other architecture): inside
  ``for (int il = 0; il < n_layer; ++il)``, after the block's last residual add,
  ``cur = build_cvec(cur, il); cb(cur, "l_out", il);`` — ``tensors[il]`` is added to the output of
  0-based block ``il``.
* repeng ``repeng/extract.py``: ``read_representations`` reads ``out.hidden_states[layer + 1]``
  (the output of ``model.layers[layer]``), ``export_gguf`` writes ``direction.{layer}`` and
  ``controlvector.model_hint`` / ``controlvector.layer_count`` (uint32); ``repeng/control.py``
  adds the direction to the output of ``model.layers[layer]``.

Consequences: llama.cpp cannot steer block 0's output, and it rejects a whole file that contains
``direction.0``, so :func:`to_gguf_bytes` refuses layer 0 unless ``allow_layer_zero=True`` (a file
only repeng and this module can read). Beware that llama.cpp's own ``cvector-generator`` extracts
block ``k-1``'s ``l_out`` and names it ``direction.k`` (``mean.hpp``: ``"direction.%zu", il+1``),
so its vectors are applied one block after the one they were measured at; we read every file at
face value (``direction.k`` -> layer ``k``, where llama.cpp applies it).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gguf
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

__all__ = [
    "FORMAT",
    "IMPORTED",
    "MAX_HIDDEN",
    "MAX_LAYERS",
    "METHODS",
    "SteeringVector",
    "VectorError",
    "from_contrastive",
    "from_gguf_bytes",
    "from_npy_bytes",
    "from_safetensors_bytes",
    "mean_difference",
    "pca_direction",
    "to_gguf_bytes",
    "to_safetensors_bytes",
    "validate_direction",
]


class VectorError(ValueError):
    """Bad input to a steering-vector function: shapes, dtypes, NaN/Inf, layers, or file bytes."""


METHODS: tuple[str, ...] = ("mean_diff", "pca_diff", "pca_center")
# The method of a vector read from a file that does not say how it was made (repeng GGUF, .npy).
IMPORTED = "imported"
FORMAT = "steering_vector/1"
# Sanity bounds, far above any real model (hundreds of layers, hidden sizes in the tens of
# thousands); they turn absurd headers into clear errors before anything is allocated.
MAX_LAYERS = 4096
MAX_HIDDEN = 1 << 20

_ALLOWED_METHODS = frozenset((*METHODS, IMPORTED))
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# safetensors metadata keys this module writes itself; a vector's own metadata may not shadow them.
_META_FORMAT = "steerlab_format"
_META_METHOD = "method"
_META_MODEL = "model"
_RESERVED_META_KEYS = frozenset((_META_FORMAT, _META_METHOD, _META_MODEL))
# Bumped if the canonical byte layout behind content_hash ever changes.
_HASH_DOMAIN = b"steerlab.steering_vector.v1\x00"
_LAYER_KEY = re.compile(r"layer\.(0|[1-9][0-9]{0,8})")
_GGUF_TENSOR = re.compile(r"direction\.(0|[1-9][0-9]{0,8})")
_GGUF_ARCH = "controlvector"
_GGUF_STEERLAB = "steerlab."
_GGUF_META = "steerlab.meta."


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _where(layer: int | None) -> str:
    return "" if layer is None else f"layer {layer}: "


def _check_layer(key: object) -> int:
    """Validate a layer index (a non-negative int below MAX_LAYERS) and return it as an int.

    Args:
        key: the candidate layer index.
    """
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise VectorError(f"layer indices must be ints, got {key!r} ({type(key).__name__})")
    layer = int(key)
    if not 0 <= layer < MAX_LAYERS:
        # Negative indices count from the end in recipes, but a stored vector is not tied to a
        # layer count, so it must name absolute layers.
        raise VectorError(f"layer index {layer} is out of range: expected 0 <= layer < {MAX_LAYERS}")
    return layer


def _check_float_tensor(t: object, what: str) -> Tensor:
    """Reject non-tensors, non-float dtypes, sparse and meta tensors.

    Args:
        t: the object to check.
        what: how to name it in the error message.
    """
    if not isinstance(t, Tensor):
        raise VectorError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise VectorError(f"{what} must be a dense tensor, got layout {t.layout}")
    if t.dtype not in _FLOAT_DTYPES:
        raise VectorError(
            f"{what} has unsupported dtype {t.dtype}: expected float16, bfloat16, float32 or float64"
        )
    if t.device.type == "meta":
        raise VectorError(f"{what} is a meta tensor and holds no values")
    return t


def _nonfinite_message(t: Tensor) -> str:
    bad = ~torch.isfinite(t)
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    index = first[0] if len(first) == 1 else first
    return f"{n_nan} NaN and {n_inf} Inf values (first at index {index})"


def validate_direction(t: Tensor, hidden_size: int | None = None, *, layer: int | None = None) -> Tensor:
    """Check one direction and return it as a CPU float32 contiguous tensor.

    float16, bfloat16 and float64 are converted (float64 values beyond float32's range are refused,
    as they would become Inf). The result may share memory with ``t`` when ``t`` is already a CPU
    float32 contiguous tensor.

    Args:
        t: a 1-D float tensor ``[hidden]``.
        hidden_size: the width it must have, if known.
        layer: the layer it belongs to, named in error messages.
    """
    where = _where(layer)
    _check_float_tensor(t, f"{where}direction")
    if t.dim() != 1:
        raise VectorError(f"{where}a direction must be 1-D [hidden], got shape {tuple(t.shape)}")
    width = int(t.shape[0])
    if width == 0:
        raise VectorError(f"{where}a direction must not be empty (width 0)")
    if width > MAX_HIDDEN:
        raise VectorError(f"{where}direction width {width} exceeds the limit of {MAX_HIDDEN}")
    if hidden_size is not None:
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise VectorError(f"hidden_size must be a positive int, got {hidden_size!r}")
        if width != hidden_size:
            raise VectorError(f"{where}direction width {width} does not match hidden size {hidden_size}")
    src = t.detach()
    if not bool(torch.isfinite(src).all()):
        raise VectorError(f"{where}direction contains {_nonfinite_message(src)}")
    out = src.to(device="cpu", dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(out).all()):
        raise VectorError(f"{where}direction overflows float32: {_nonfinite_message(out)} after conversion")
    return out


def _check_metadata(metadata: object) -> dict[str, str]:
    """Validate a vector's metadata (str -> str, no reserved keys) and return a plain copy.

    Args:
        metadata: the candidate mapping.
    """
    if not isinstance(metadata, Mapping):
        raise VectorError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise VectorError(f"metadata must map non-empty str keys to str values, got {key!r}: {value!r}")
        if key in _RESERVED_META_KEYS:
            raise VectorError(
                f"metadata key {key!r} is reserved (it is written from the vector's own fields)"
            )
        out[key] = value
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# SteeringVector
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """One steering vector: a float32 direction ``[hidden]`` per layer.

    The constructor validates and canonicalises its inputs: layers sorted, every direction a
    private CPU float32 contiguous copy of the same width, the mappings read-only. Do not mutate a
    direction in place (its :meth:`content_hash` would no longer describe it).

    Equality compares directions (``torch.equal``), method, model and metadata; hashing follows
    :meth:`content_hash`, so equal vectors hash equal.

    Args:
        directions: layer index (0-based decoder block whose output receives it) -> ``[hidden]``.
        method: how it was made: one of :data:`METHODS`, or :data:`IMPORTED` when unknown.
        model: a hint of the model it was made for (HF id or deployment name), or None.
        metadata: provenance and other str -> str notes (stored in the files' metadata).
    """

    directions: Mapping[int, Tensor]
    method: str = "mean_diff"
    model: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.directions, Mapping):
            raise VectorError(
                f"directions must be a mapping of layer -> tensor, got {type(self.directions).__name__}"
            )
        if len(self.directions) == 0:
            raise VectorError("a steering vector needs at least one layer, got 0")
        if len(self.directions) > MAX_LAYERS:
            raise VectorError(f"{len(self.directions)} layers exceed the limit of {MAX_LAYERS}")
        layers = {_check_layer(k): k for k in self.directions}
        if len(layers) != len(self.directions):
            raise VectorError("directions name the same layer twice")
        hidden: int | None = None
        first_layer = -1
        canonical: dict[int, Tensor] = {}
        for layer in sorted(layers):
            t = self.directions[layers[layer]]
            _check_float_tensor(t, f"layer {layer}: direction")
            if hidden is not None and t.dim() == 1 and int(t.shape[0]) != hidden:
                raise VectorError(
                    f"mismatched widths: layer {layer} has width {int(t.shape[0])} "
                    f"but layer {first_layer} has width {hidden}"
                )
            # clone(): never alias the caller's tensor, whose later in-place edits would change us.
            canonical[layer] = validate_direction(t, layer=layer).clone()
            if hidden is None:
                hidden, first_layer = int(canonical[layer].shape[0]), layer
        if not isinstance(self.method, str) or self.method not in _ALLOWED_METHODS:
            raise VectorError(f"unknown method {self.method!r}: expected one of {sorted(_ALLOWED_METHODS)}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            # "" is refused so that "no model" has exactly one spelling (None) in every format.
            raise VectorError(f"model must be a non-empty str or None, got {self.model!r}")
        metadata = _check_metadata(self.metadata)
        # frozen=True forbids plain assignment; these writes only canonicalise fields, once, here.
        object.__setattr__(self, "directions", MappingProxyType(canonical))
        object.__setattr__(self, "metadata", MappingProxyType(metadata))

    @property
    def hidden_size(self) -> int:
        """Width of every direction."""
        return int(next(iter(self.directions.values())).shape[0])

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers this vector steers, ascending."""
        return tuple(self.directions)

    def canonical_bytes(self) -> bytes:
        """The bytes :meth:`content_hash` digests.

        Layout: a domain tag, the layer count and the width (uint64 LE each), then for each layer in
        ascending order its index (uint64 LE) and its values (float32 LE). ``-0.0`` is written as
        ``0.0``, because the two compare equal and equal vectors must hash equal. Method, model and
        metadata are not included: the hash names the tensor payload.
        """
        parts = [_HASH_DOMAIN, struct.pack("<QQ", len(self.directions), self.hidden_size)]
        for layer, t in self.directions.items():
            values = t.numpy().astype("<f4") + np.float32(0.0)  # -0.0 + 0.0 == +0.0 in IEEE 754
            parts.append(struct.pack("<Q", layer))
            parts.append(values.tobytes())
        return b"".join(parts)

    def content_hash(self) -> str:
        """Hex SHA-256 of :meth:`canonical_bytes` (64 lowercase hex characters)."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return (
            self.method == other.method
            and self.model == other.model
            and dict(self.metadata) == dict(other.metadata)
            and self.layers == other.layers
            and all(torch.equal(self.directions[k], other.directions[k]) for k in self.layers)
        )

    def __hash__(self) -> int:
        return hash(self.content_hash())

    def __repr__(self) -> str:
        return (
            f"SteeringVector(layers={list(self.layers)}, hidden_size={self.hidden_size}, "
            f"method={self.method!r}, model={self.model!r}, hash={self.content_hash()[:12]})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType cannot be pickled or deep-copied; rebuild from plain dicts instead.
        return (SteeringVector, (dict(self.directions), self.method, self.model, dict(self.metadata)))


def _require_vector(v: object) -> SteeringVector:
    if not isinstance(v, SteeringVector):
        raise VectorError(f"expected a SteeringVector, got {type(v).__name__}")
    return v


# --------------------------------------------------------------------------------------------
# training from contrastive pairs
# --------------------------------------------------------------------------------------------


def _activations(pos: Tensor, neg: Tensor, *, paired: bool) -> tuple[Tensor, Tensor]:
    """Validate positive and negative activations and return them as CPU float64.

    Args:
        pos: ``[n_pos, hidden]`` activations of the positive examples.
        neg: ``[n_neg, hidden]`` activations of the negative examples.
        paired: require ``n_pos == n_neg`` (row ``i`` of each is one contrastive pair).
    """
    out = []
    for name, t in (("pos", pos), ("neg", neg)):
        _check_float_tensor(t, name)
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] == 0:
            raise VectorError(
                f"{name} must be 2-D [n, hidden] with n >= 1 and hidden >= 1, got shape {tuple(t.shape)}"
            )
        if t.shape[1] > MAX_HIDDEN:
            raise VectorError(f"{name} width {t.shape[1]} exceeds the limit of {MAX_HIDDEN}")
        src = t.detach()
        if not bool(torch.isfinite(src).all()):
            raise VectorError(f"{name} activations contain {_nonfinite_message(src)}")
        out.append(src.to(device="cpu", dtype=torch.float64))
    p, n = out
    if p.shape[1] != n.shape[1]:
        raise VectorError(f"pos and neg have different widths: {p.shape[1]} vs {n.shape[1]}")
    if paired and p.shape[0] != n.shape[0]:
        raise VectorError(
            f"PCA methods need paired examples: pos has {p.shape[0]} rows but neg has {n.shape[0]}"
        )
    return p, n


def mean_difference(pos: Tensor, neg: Tensor) -> Tensor:
    """``mean(pos) - mean(neg)`` over rows, computed in float64, returned as float32 ``[hidden]``.

    Not normalised (see the module docstring). The two sets need not have the same size.

    Args:
        pos: ``[n_pos, hidden]`` activations of the positive examples.
        neg: ``[n_neg, hidden]`` activations of the negative examples.
    """
    p, n = _activations(pos, neg, paired=False)
    return validate_direction(p.mean(dim=0) - n.mean(dim=0))


def _orient(direction: Tensor, diffs: Tensor) -> Tensor:
    """Flip ``direction`` so that positives project higher than negatives, as repeng decides it.

    Args:
        direction: unit direction ``[hidden]`` (float64).
        diffs: paired differences ``pos - neg``, ``[n, hidden]`` (float64).
    """
    # proj_i = (pos_i - neg_i)·d = how much higher pos_i projects than neg_i.
    proj = diffs @ direction
    votes = int((proj > 0).sum()) - int((proj < 0).sum())
    mean = float(proj.mean())
    if votes != 0:
        flip = votes < 0  # repeng: the majority of pairs decides
    elif mean != 0.0:
        flip = mean < 0
    else:
        # Nothing in the data decides; pick a sign that does not depend on the SVD routine.
        flip = bool(direction[int(direction.abs().argmax())] < 0)
    return -direction if flip else direction


def pca_direction(pos: Tensor, neg: Tensor, *, centre: bool) -> Tensor:
    """First principal component of contrastive pairs, unit-norm float32 ``[hidden]``.

    ``centre=False`` is repeng's ``pca_diff`` (PCA of the centred differences ``pos_i - neg_i``);
    ``centre=True`` is repeng's ``pca_center`` (PCA of each pair centred on its midpoint). The sign
    is chosen so that positives project higher (see the module docstring).

    Args:
        pos: ``[n, hidden]`` activations of the positive examples.
        neg: ``[n, hidden]`` activations of the negative examples; row ``i`` pairs with ``pos[i]``.
        centre: False for ``pca_diff``, True for ``pca_center``.
    """
    p, n = _activations(pos, neg, paired=True)
    diffs = p - n
    if not bool(diffs.any()):
        raise VectorError("pos and neg are identical in every pair: there is no direction to find")
    if centre:
        mid = (p + n) / 2
        train = torch.cat([p - mid, n - mid])
    else:
        if diffs.shape[0] < 2:
            raise VectorError(
                "pca_diff needs at least 2 pairs: it centres the differences (as repeng's sklearn PCA "
                "does), so one pair has no variance left; use mean_diff or pca_center"
            )
        train = diffs
    # sklearn's PCA centres its input; for pca_center the rows already have zero mean up to rounding.
    train = train - train.mean(dim=0, keepdim=True)
    _, singular, vh = torch.linalg.svd(train, full_matrices=False)
    # Variance no larger than the inputs' own rounding error is no direction at all: a constant
    # shift computed in float32 leaves differences that vary only in their last bits.
    eps = max(torch.finfo(pos.dtype).eps, torch.finfo(neg.dtype).eps)
    rounding = 4 * eps * float(torch.linalg.matrix_norm(p) + torch.linalg.matrix_norm(n))
    if float(singular[0]) <= rounding:
        raise VectorError(
            "the paired differences do not vary (every pair differs by the same vector), so pca_diff, "
            "which centres them, has no principal component; use mean_diff or pca_center"
        )
    return validate_direction(_orient(vh[0], diffs))


def from_contrastive(
    pos_acts: Mapping[int, Tensor],
    neg_acts: Mapping[int, Tensor],
    method: str = "mean_diff",
    *,
    model: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SteeringVector:
    """Train a steering vector, one direction per layer, from contrastive activations.

    Args:
        pos_acts: layer -> ``[n, hidden]`` activations (the layer's output) of the positive examples.
        neg_acts: layer -> ``[n, hidden]`` activations of the negative examples, same layers; for the
            PCA methods row ``i`` must pair with row ``i`` of ``pos_acts``.
        method: ``"mean_diff"``, ``"pca_diff"`` or ``"pca_center"``.
        model: model hint stored with the vector.
        metadata: provenance (str -> str) stored with the vector.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise VectorError(f"unknown method {method!r}: expected one of {list(METHODS)}")
    for name, acts in (("pos_acts", pos_acts), ("neg_acts", neg_acts)):
        if not isinstance(acts, Mapping):
            raise VectorError(f"{name} must be a mapping of layer -> tensor, got {type(acts).__name__}")
        for key in acts:
            _check_layer(key)
    if len(pos_acts) == 0:
        raise VectorError("no layers: pos_acts is empty")
    if set(pos_acts) != set(neg_acts):
        only_pos = sorted(set(pos_acts) - set(neg_acts))
        only_neg = sorted(set(neg_acts) - set(pos_acts))
        raise VectorError(
            f"pos_acts and neg_acts name different layers: only in pos {only_pos}, only in neg {only_neg}"
        )
    directions: dict[int, Tensor] = {}
    for layer in sorted(pos_acts):
        pos, neg = pos_acts[layer], neg_acts[layer]
        try:
            if method == "mean_diff":
                directions[layer] = mean_difference(pos, neg)
            else:
                directions[layer] = pca_direction(pos, neg, centre=method == "pca_center")
        except VectorError as exc:
            raise VectorError(f"layer {layer}: {exc}") from exc
    return SteeringVector(
        directions, method=method, model=model, metadata={} if metadata is None else metadata
    )


# --------------------------------------------------------------------------------------------
# reading helpers shared by the file formats
# --------------------------------------------------------------------------------------------


def _input_bytes(data: object, max_bytes: int | None, kind: str) -> bytes:
    """Check a reader's input (type, size limit, emptiness) and return it as bytes.

    Args:
        data: the candidate bytes.
        max_bytes: refuse inputs longer than this, if given.
        kind: the format's name, for messages.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VectorError(f"expected the {kind} file as bytes, got {type(data).__name__}")
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise VectorError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if max_bytes is not None and size > max_bytes:
        raise VectorError(f"{kind} file is {size} bytes, over the limit of {max_bytes} bytes")
    if size == 0:
        raise VectorError(f"not a valid {kind} file: it is empty")
    return bytes(data)


def _sniff(raw: bytes) -> str:
    """A hint naming what ``raw`` looks like, for error messages about the wrong kind of file.

    Args:
        raw: the file's bytes.
    """
    if raw[:4] == b"PK\x03\x04":
        return (
            " (it looks like a zip archive, e.g. torch.save() output or .npz: pickled files are refused "
            "because loading them can run code; convert to safetensors)"
        )
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return " (it looks like a Python pickle: refused because unpickling can run code; convert to safetensors)"
    if raw[:4] == b"GGUF":
        return " (it looks like a GGUF file: use from_gguf_bytes)"
    if raw[:6] == b"\x93NUMPY":
        return " (it looks like a .npy file: use from_npy_bytes)"
    return ""


def _rows_to_directions(t: Tensor, layer: int | None, what: str) -> dict[int, Tensor]:
    """Turn one foreign tensor into ``{layer: direction}``: ``[hidden]`` + ``layer`` or ``[layers, hidden]``.

    Args:
        t: the tensor.
        layer: the layer of a 1-D tensor (must be None for a 2-D one).
        what: how to name the tensor in messages.
    """
    _check_float_tensor(t, what)
    if t.dim() == 1:
        if layer is None:
            raise VectorError(f"{what} is 1-D [hidden]: pass layer= to say which layer it steers")
        return {_check_layer(layer): t}
    if t.dim() == 2:
        if layer is not None:
            raise VectorError(f"{what} is 2-D [layers, hidden] (row i is layer i): do not pass layer=")
        if t.shape[0] == 0:
            raise VectorError(f"{what} has 0 layers")
        if t.shape[0] > MAX_LAYERS:
            raise VectorError(f"{what} has {t.shape[0]} layers, over the limit of {MAX_LAYERS}")
        return {i: t[i] for i in range(int(t.shape[0]))}
    raise VectorError(f"{what} must be 1-D [hidden] or 2-D [layers, hidden], got shape {tuple(t.shape)}")


def _check_optional_layer(layer: object) -> None:
    if layer is not None:
        _check_layer(layer)


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def to_safetensors_bytes(v: SteeringVector) -> bytes:
    """Serialise a vector as safetensors: tensors ``layer.<i>`` ``[hidden]`` float32.

    Metadata: ``steerlab_format`` = :data:`FORMAT`, ``method``, ``model`` (omitted when None) and the
    vector's own metadata. The tensors and metadata round-trip exactly, but the bytes themselves
    may differ between calls: safetensors writes metadata keys in hash-map order. Identify vectors
    by :meth:`SteeringVector.content_hash`, not by file bytes.

    Args:
        v: the vector.
    """
    _require_vector(v)
    tensors = {f"layer.{layer}": t for layer, t in v.directions.items()}
    meta = dict(v.metadata)
    meta[_META_FORMAT] = FORMAT
    meta[_META_METHOD] = v.method
    if v.model is not None:
        meta[_META_MODEL] = v.model
    return bytes(_st_save(tensors, metadata=meta))


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes that ``safetensors`` has already parsed.

    Args:
        raw: the file's bytes.
    """
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len].decode("utf-8"))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise VectorError("not a valid safetensors file: __metadata__ must map strings to strings")
    return dict(meta)


def from_safetensors_bytes(
    data: bytes, *, layer: int | None = None, max_bytes: int | None = None
) -> SteeringVector:
    """Read a vector from safetensors bytes; never unpickles anything.

    Accepts this module's files (tensors ``layer.<i>``) and foreign files holding a single tensor:
    ``[layers, hidden]`` (row ``i`` is layer ``i``, the output of block ``i`` — not Hugging Face's
    ``hidden_states`` index, which is one higher) or ``[hidden]`` with ``layer=``. float16,
    bfloat16 and float64 are converted to float32. A file that does not name its method gets
    :data:`IMPORTED`.

    Args:
        data: the file's bytes.
        layer: the layer of a single 1-D tensor (only for such files).
        max_bytes: refuse files larger than this.
    """
    raw = _input_bytes(data, max_bytes, "safetensors")
    _check_optional_layer(layer)
    try:
        tensors = _st_load(raw)
        meta = _safetensors_metadata(raw)
    except (SafetensorError, ValueError, RuntimeError, TypeError, struct.error) as exc:
        if isinstance(exc, VectorError):
            raise
        raise VectorError(f"not a valid safetensors file: {exc}{_sniff(raw)}") from exc
    if not tensors:
        raise VectorError("the safetensors file holds no tensors")
    names = sorted(tensors)
    matches = [_LAYER_KEY.fullmatch(name) for name in names]
    if all(m is not None for m in matches):
        if layer is not None:
            raise VectorError(
                "layer= is only for files holding one unnamed [hidden] tensor; this file names its layers"
            )
        directions = {
            int(m.group(1)): tensors[name] for m, name in zip(matches, names, strict=True) if m is not None
        }
    elif len(names) == 1:
        directions = _rows_to_directions(tensors[names[0]], layer, f"tensor {names[0]!r}")
    else:
        hint = (
            " (this is a probe file, not a steering vector)"
            if meta.get("steerlab.kind") == "linear_probe"
            else ""
        )
        unexpected = [name for name, m in zip(names, matches, strict=True) if m is None]
        raise VectorError(
            f"unexpected tensor names {unexpected[:5]}: expected 'layer.<i>' tensors or a single tensor{hint}"
        )
    fmt = meta.pop(_META_FORMAT, None)
    if fmt is not None and fmt != FORMAT:
        raise VectorError(f"unsupported {_META_FORMAT} {fmt!r}: this version reads {FORMAT!r}")
    method = meta.pop(_META_METHOD, IMPORTED)
    model = meta.pop(_META_MODEL, None) or None
    return SteeringVector(directions, method=method, model=model, metadata=meta)


# --------------------------------------------------------------------------------------------
# GGUF (llama.cpp / repeng control vectors)
# --------------------------------------------------------------------------------------------


def to_gguf_bytes(v: SteeringVector, *, allow_layer_zero: bool = False) -> bytes:
    """Serialise a vector as a llama.cpp / repeng control-vector GGUF file.

    Written with ``gguf.GGUFWriter`` the way repeng's ``export_gguf`` does: architecture
    ``controlvector``, ``controlvector.model_hint`` (``""`` when the model is None; repeng's reader
    requires the key), ``controlvector.layer_count`` (uint32) and one F32 tensor ``direction.<L>``
    per layer ``L`` (see the module docstring for the convention). ``steerlab.format``,
    ``steerlab.method`` and ``steerlab.meta.<key>`` carry the rest; llama.cpp and repeng ignore
    them. The output is deterministic.

    Args:
        v: the vector.
        allow_layer_zero: write ``direction.0`` anyway. llama.cpp rejects the whole file if it
            holds ``direction.0`` (it cannot steer block 0's output); repeng and this module read it.
    """
    _require_vector(v)
    if 0 in v.directions and not allow_layer_zero:
        raise VectorError(
            "layer 0 cannot be stored in a llama.cpp control vector: llama.cpp rejects direction.0 "
            "(it cannot steer block 0's output); drop layer 0 or pass allow_layer_zero=True"
        )
    # GGUFWriter writes through real files (numpy tofile), hence the private temporary directory.
    with tempfile.TemporaryDirectory(prefix="steerlab-gguf-") as tmp:
        path = os.path.join(tmp, "vector.gguf")
        writer = gguf.GGUFWriter(path, _GGUF_ARCH)
        try:
            writer.add_string(f"{_GGUF_ARCH}.model_hint", v.model or "")
            writer.add_uint32(f"{_GGUF_ARCH}.layer_count", len(v.directions))
            writer.add_string(f"{_GGUF_STEERLAB}format", FORMAT)
            writer.add_string(f"{_GGUF_STEERLAB}method", v.method)
            for key, value in v.metadata.items():
                writer.add_string(f"{_GGUF_META}{key}", value)
            for layer, t in v.directions.items():
                writer.add_tensor(f"direction.{layer}", t.numpy())
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        with open(path, "rb") as f:
            return f.read()


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
# ggml tensor types we can read, as little-endian numpy dtypes; bf16 is decoded by hand.
_GGML_DTYPES = {0: ("F32", "<f4"), 1: ("F16", "<f2"), 28: ("F64", "<f8"), 30: ("BF16", "<u2")}
_GGUF_MAX_KV = 65536
_GGUF_MAX_DIMS = 4  # GGML_MAX_DIMS
_GGUF_MAX_ARRAY_DEPTH = 4


class _GGUFCursor:
    """A bounds-checked reader over GGUF bytes: every read past the end is a VectorError.

    ``gguf.GGUFReader`` is not used on untrusted input: it needs a file on disk, and past the end
    of the data its reads return empty arrays instead of failing, so a crafted array length makes
    it loop for as long as the length says.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.raw):
            raise VectorError(
                f"not a valid GGUF file: truncated while reading {what} at byte {self.pos} "
                f"(needs {n} bytes, {len(self.raw) - self.pos} left)"
            )
        chunk = self.raw[self.pos : end]
        self.pos = end
        return chunk

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])

    def string(self, what: str) -> str:
        raw = self.take(self.u64(f"{what} length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise VectorError(f"not a valid GGUF file: {what} is not UTF-8 ({exc})") from exc

    def value(self, vtype: int, what: str, depth: int = 0) -> str | int | float | bool | None:
        """Read one value of GGUF type ``vtype``; arrays are skipped and read as None.

        Args:
            vtype: the GGUF value type.
            what: how to name the value in messages.
            depth: nesting depth of arrays so far.
        """
        if vtype == _GGUF_STRING:
            return self.string(what)
        fmt = _GGUF_SCALAR_FORMATS.get(vtype)
        if fmt is not None:
            result: int | float | bool = struct.unpack(fmt, self.take(_GGUF_SCALAR_SIZES[vtype], what))[0]
            return result
        if vtype == _GGUF_ARRAY:
            if depth >= _GGUF_MAX_ARRAY_DEPTH:
                raise VectorError(
                    f"not a valid GGUF file: {what} nests arrays deeper than {_GGUF_MAX_ARRAY_DEPTH}"
                )
            item_type = self.u32(f"{what} item type")
            count = self.u64(f"{what} length")
            size = _GGUF_SCALAR_SIZES.get(item_type)
            if size is not None:
                self.take(count * size, what)  # one bounds check, no loop over a claimed length
            elif item_type in (_GGUF_STRING, _GGUF_ARRAY):
                # Each item consumes at least 8 bytes, so this loop ends within len(raw) / 8 steps.
                for _ in range(count):
                    self.value(item_type, what, depth + 1)
            else:
                raise VectorError(f"not a valid GGUF file: {what} has unknown item type {item_type}")
            return None
        raise VectorError(f"not a valid GGUF file: {what} has unknown value type {vtype}")


def from_gguf_bytes(data: bytes, *, max_bytes: int | None = None) -> SteeringVector:
    """Read a llama.cpp / repeng control vector (GGUF v2 or v3, little-endian); executes nothing.

    Tensor ``direction.<k>`` becomes layer ``k``. Every tensor must be named ``direction.<k>`` (as
    llama.cpp requires) and be 1-D F32 (F16, BF16 and F64 are converted). The model comes from
    ``controlvector.model_hint``; method and metadata from this module's ``steerlab.*`` keys, else
    the method is :data:`IMPORTED`.

    Args:
        data: the file's bytes.
        max_bytes: refuse files larger than this.
    """
    raw = _input_bytes(data, max_bytes, "GGUF")
    cur = _GGUFCursor(raw)
    if len(raw) < 4 or raw[:4] != b"GGUF":
        raise VectorError(f"not a valid GGUF file: bad magic {raw[:4]!r}{_sniff(raw)}")
    cur.pos = 4
    version = cur.u32("version")
    if version not in (2, 3):
        if version & 0xFFFF == 0:
            raise VectorError("unsupported GGUF file: big-endian files are not supported")
        raise VectorError(f"unsupported GGUF version {version}: expected 2 or 3")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    if n_kv > _GGUF_MAX_KV:
        raise VectorError(f"not a valid GGUF file: {n_kv} metadata entries, over the limit of {_GGUF_MAX_KV}")
    kv: dict[str, tuple[int, str | int | float | bool | None]] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        vtype = cur.u32(f"type of {key!r}")
        if key in kv:
            raise VectorError(f"not a valid GGUF file: duplicate metadata key {key!r}")
        kv[key] = (vtype, cur.value(vtype, f"value of {key!r}"))

    def text(key: str) -> str | None:
        if key not in kv:
            return None
        vtype, value = kv[key]
        if vtype != _GGUF_STRING or not isinstance(value, str):
            raise VectorError(f"GGUF metadata {key!r} must be a string, got value type {vtype}")
        return value

    arch = text("general.architecture")
    if arch is not None and arch != _GGUF_ARCH:
        raise VectorError(
            f"GGUF architecture is {arch!r}, not {_GGUF_ARCH!r}: this looks like a model file, not a control vector"
        )
    if n_tensors == 0:
        raise VectorError("the GGUF file holds no direction tensors")
    if n_tensors > MAX_LAYERS:
        raise VectorError(f"the GGUF file holds {n_tensors} tensors, over the limit of {MAX_LAYERS} layers")
    alignment = 32
    if "general.alignment" in kv:
        vtype, value = kv["general.alignment"]
        if vtype != _GGUF_UINT32 or not isinstance(value, int) or value == 0 or value & (value - 1):
            raise VectorError(
                f"not a valid GGUF file: general.alignment must be a uint32 power of two, got {value!r}"
            )
        alignment = value

    infos: list[tuple[int, str, int, int, int]] = []  # (layer, name, ggml type, relative offset, width)
    seen: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"tensor name #{i}")
        n_dims = cur.u32(f"dimension count of {name!r}")
        if not 1 <= n_dims <= _GGUF_MAX_DIMS:
            raise VectorError(f"not a valid GGUF file: tensor {name!r} has {n_dims} dimensions")
        dims = [cur.u64(f"dimensions of {name!r}") for _ in range(n_dims)]
        ggml_type = cur.u32(f"type of {name!r}")
        offset = cur.u64(f"offset of {name!r}")
        match = _GGUF_TENSOR.fullmatch(name)
        if match is None:
            raise VectorError(
                f"unexpected GGUF tensor {name!r}: a control vector holds only 'direction.<layer>' tensors"
            )
        if name in seen:
            # llama.cpp would add the duplicates together; a file like that is almost surely a mistake.
            raise VectorError(f"the GGUF file holds tensor {name!r} twice")
        seen.add(name)
        if any(d != 1 for d in dims[1:]):
            raise VectorError(f"GGUF tensor {name!r} must be 1-D [hidden], got dimensions {dims}")
        if ggml_type not in _GGML_DTYPES:
            raise VectorError(
                f"GGUF tensor {name!r} has unsupported ggml type {ggml_type}: expected F32, F16, BF16 or F64"
            )
        if not 1 <= dims[0] <= MAX_HIDDEN:
            raise VectorError(f"GGUF tensor {name!r} has width {dims[0]}: expected 1 to {MAX_HIDDEN}")
        if offset % alignment:
            raise VectorError(
                f"not a valid GGUF file: tensor {name!r} offset {offset} is not aligned to {alignment}"
            )
        layer = int(match.group(1))
        if layer >= MAX_LAYERS:
            raise VectorError(f"GGUF tensor {name!r}: layer {layer} is over the limit of {MAX_LAYERS}")
        infos.append((layer, name, ggml_type, offset, dims[0]))
    data_start = cur.pos + (-cur.pos % alignment)

    directions: dict[int, Tensor] = {}
    for layer, name, ggml_type, offset, width in infos:
        type_name, dtype = _GGML_DTYPES[ggml_type]
        start = data_start + offset
        end = start + width * np.dtype(dtype).itemsize
        if end > len(raw):
            raise VectorError(
                f"not a valid GGUF file: truncated: tensor {name!r} ends at byte {end} but the file has {len(raw)} bytes"
            )
        values = np.frombuffer(raw, dtype=dtype, count=width, offset=start)
        if type_name == "BF16":
            # bfloat16 is the top half of a float32: widen the bits, exactly.
            values = (values.astype(np.uint32) << 16).view(np.float32)
        directions[layer] = torch.from_numpy(values.astype(np.float32))
    model = text(f"{_GGUF_ARCH}.model_hint") or None
    fmt = text(f"{_GGUF_STEERLAB}format")
    if fmt is not None and fmt != FORMAT:
        raise VectorError(f"unsupported steerlab.format {fmt!r}: this version reads {FORMAT!r}")
    method = text(f"{_GGUF_STEERLAB}method") or IMPORTED
    metadata = {key[len(_GGUF_META) :]: text(key) or "" for key in kv if key.startswith(_GGUF_META)}
    return SteeringVector(directions, method=method, model=model, metadata=metadata)


# --------------------------------------------------------------------------------------------
# .npy
# --------------------------------------------------------------------------------------------


def from_npy_bytes(data: bytes, *, layer: int | None = None, max_bytes: int | None = None) -> SteeringVector:
    """Import a ``.npy`` array: ``[hidden]`` with ``layer=``, or ``[layers, hidden]`` (row ``i`` is layer ``i``).

    Loaded with ``allow_pickle=False``; the header is checked first (float16/32/64 only, data size
    exactly as declared), so neither object arrays nor a header claiming a huge shape get as far as
    an allocation. The method is :data:`IMPORTED`.

    Args:
        data: the file's bytes.
        layer: the layer of a 1-D array.
        max_bytes: refuse files larger than this.
    """
    raw = _input_bytes(data, max_bytes, ".npy")
    _check_optional_layer(layer)
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise VectorError(f"unsupported .npy format version {version}: expected 1.0 or 2.0")
    except VectorError:
        raise
    except (ValueError, EOFError, SyntaxError) as exc:
        raise VectorError(f"not a valid .npy file: {exc}{_sniff(raw)}") from exc
    if dtype.hasobject:
        raise VectorError(
            "refusing a .npy array of Python objects: loading it needs pickle, which can run code "
            "(allow_pickle=False)"
        )
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise VectorError(f".npy array has unsupported dtype {dtype}: expected float16, float32 or float64")
    if len(shape) not in (1, 2):
        raise VectorError(f".npy array must be 1-D [hidden] or 2-D [layers, hidden], got shape {shape}")
    expected = buf.tell() + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise VectorError(
            f"not a valid .npy file: the header declares {expected} bytes in all but the file has {len(raw)} "
            f"({'truncated' if len(raw) < expected else 'trailing data'})"
        )
    try:
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise VectorError(f"not a valid .npy file: {exc}") from exc
    # Native byte order and a private contiguous copy: torch.from_numpy refuses the rest.
    native = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    directions = _rows_to_directions(torch.from_numpy(native.copy()), layer, ".npy array")
    return SteeringVector(directions, method=IMPORTED)

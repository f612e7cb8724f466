"""Compile recipes for one model: check them against its shape and lower every op (docs/design.md §4).

``compile_recipe`` checks a parsed recipe against a model's shape and the resolved tensors (layers in
range, widths, finite values, the right model) and lowers every write op to a *lane*: a direction /
mask / replacement source plus unit coefficients (see ``ops.py``), every probe and lens to a read.
It raises ``RecipeError`` naming the offending intervention before anything touches a model. What a
batch does with compiled recipes is ``plan.BatchPlan``'s work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from interventions import ops
from interventions.sites import ModelShape
from interventions.spec import (
    Ablate,
    Clamp,
    Gate,
    Intervention,
    Patch,
    PositionIndices,
    Positions,
    PositionSlice,
    ProjectOut,
    Recipe,
    Steer,
    WriteOp,
)

Site = tuple[int, str]  # (normalized layer, point)
POINT_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_act": 2, "mlp_out": 3, "resid_post": 4}
OPEN_END = 1 << 62


class RecipeError(ValueError):
    """A recipe that cannot run on this model; the message names the intervention and field."""


class _Where:
    """The path of an intervention in error messages, formatted only when an error is raised."""

    __slots__ = ("field", "i")

    def __init__(self, i: int, field: str = "") -> None:
        self.i, self.field = i, field

    def at(self, field: str) -> _Where:
        return _Where(self.i, f"{self.field}.{field}" if self.field else field)

    def __str__(self) -> str:
        return f"interventions[{self.i}]" + (f".{self.field}" if self.field else "")


def site_order(site: Site) -> int:
    """Forward-pass order of sites: layer-major, then resid_pre < attn_out < mlp_act < mlp_out < resid_post."""
    return site[0] * len(POINT_ORDER) + POINT_ORDER[site[1]]


def _check_finite(t: Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise RecipeError(f"{what} contains NaN or Inf")


@dataclass(frozen=True)
class VectorData:
    """A resolved steering vector: per-layer directions tied to one model.

    Args:
        key: content hash: banks and caches share rows between requests by this key, so equal keys
            must mean equal tensors (``VectorData.of`` derives it).
        directions: layer -> float tensor ``[width]``.
        model: the model deployment the vector belongs to (None: unchecked).
    """

    key: str
    directions: Mapping[int, Tensor]
    model: str | None = None

    @classmethod
    def of(cls, directions: Mapping[int, Tensor], model: str | None = None) -> VectorData:
        """A vector keyed by the sha256 of its content."""
        h = hashlib.sha256()
        for layer in sorted(directions):
            h.update(f"{layer}:".encode())
            h.update(tensor_bytes(directions[layer]))
        return cls("sha256:" + h.hexdigest(), directions, model)

    def __post_init__(self) -> None:
        for layer, t in self.directions.items():
            if t.ndim != 1:
                raise RecipeError(f"vector {self.key}: layer {layer} is not 1-D")
            _check_finite(t, f"vector {self.key} layer {layer}")
        # float32 once, here, so compiling a recipe does no tensor work.
        object.__setattr__(
            self,
            "directions",
            {layer: t.detach().float().contiguous() for layer, t in self.directions.items()},
        )


@dataclass(frozen=True)
class ProbeData:
    """A resolved linear probe ``h·w + b`` tied to one model (``key``: content hash, see VectorData)."""

    key: str
    weight: Tensor
    bias: float
    model: str | None = None

    @classmethod
    def of(cls, weight: Tensor, bias: float, model: str | None = None) -> ProbeData:
        """A probe keyed by the sha256 of its content."""
        h = hashlib.sha256(tensor_bytes(weight))
        h.update(np.float64(bias).tobytes())
        return cls("sha256:" + h.hexdigest(), weight, bias, model)

    def __post_init__(self) -> None:
        if self.weight.ndim != 1:
            raise RecipeError(f"probe {self.key}: weight is not 1-D")
        _check_finite(self.weight, f"probe {self.key}")
        if not np.isfinite(self.bias):
            raise RecipeError(f"probe {self.key}: bias is NaN or Inf")
        object.__setattr__(self, "weight", self.weight.detach().float().contiguous())
        object.__setattr__(self, "bias", float(self.bias))


Resolved = Mapping[str, VectorData | ProbeData]


@dataclass(slots=True)
class CompiledGate:
    site: Site
    key: str
    weight: Tensor
    bias: float
    threshold: float
    sign: float  # +1 fires above the threshold, -1 below
    mode: int  # ops.GATE_SAME_TOKEN or ops.GATE_PREV_TOKEN


@dataclass(slots=True)
class CompiledLane:
    index: int  # position of the intervention in the recipe (what `adjust` names)
    site: Site
    op: str
    unit: tuple[float, float, float, float]  # (alpha, gamma, beta, s) at scale 1
    scale: float
    enabled: bool
    positions: Positions
    direction: Tensor | None = None
    direction_key: str | None = None
    mask: Tensor | None = None
    mask_key: str | None = None
    source: Tensor | None = None  # replacement values of a mean ablation
    source_key: str | None = None
    patch_tokens: tuple[int, ...] | None = None
    patch_text: str | None = None
    patch_align: str = "start"
    gate: CompiledGate | None = None

    terms: tuple[int, int, int, int] = (0, 0, 0, 0)  # optional terms it needs: norm, projection, mask, gate

    def __post_init__(self) -> None:
        self.terms = (
            int(self.unit[1] != 0),
            int(self.unit[2] != 0),
            int(self.mask is not None),
            int(self.gate is not None),
        )


@dataclass(slots=True)
class CompiledProbe:
    index: int
    site: Site
    key: str
    weight: Tensor
    bias: float
    name: str | None
    positions: Positions


@dataclass(slots=True)
class CompiledLens:
    index: int
    site: Site
    k: int
    positions: Positions


@dataclass(frozen=True)
class CompiledRecipe:
    lanes: tuple[CompiledLane, ...]
    probes: tuple[CompiledProbe, ...]
    lenses: tuple[CompiledLens, ...]
    num_interventions: int

    def items(self) -> tuple[CompiledLane | CompiledProbe | CompiledLens, ...]:
        """Every compiled intervention, writes first."""
        return (*self.lanes, *self.probes, *self.lenses)

    @property
    def has_reads(self) -> bool:
        return bool(self.probes or self.lenses)

    def write_signature(self) -> str:
        """Hash of everything that changes activations (for cache salts and run snapshots)."""
        h = hashlib.sha256()
        for lane in self.lanes:
            gate = lane.gate
            h.update(
                repr(
                    (
                        lane.index,
                        lane.site,
                        lane.op,
                        lane.unit,
                        lane.scale,
                        lane.enabled,
                        lane.positions,
                        lane.direction_key,
                        lane.mask_key,
                        lane.source_key,
                        lane.patch_tokens,
                        lane.patch_text,
                        lane.patch_align,
                        None if gate is None else (gate.site, gate.key, gate.threshold, gate.sign, gate.mode),
                    )
                ).encode()
            )
        return h.hexdigest()


EMPTY_RECIPE = CompiledRecipe(lanes=(), probes=(), lenses=(), num_interventions=0)


def _normalize_layer(layer: int, shape: ModelShape, where: _Where) -> int:
    n = shape.num_layers
    if not -n <= layer < n:
        raise RecipeError(
            f"{where}.layer: layer {layer} out of range for a {n}-layer model (valid: {-n}..{n - 1})"
        )
    return layer % n


def _width(shape: ModelShape, point: str) -> int:
    return shape.mlp_size if point == "mlp_act" else shape.hidden_size


def _resolve(
    resolved: Resolved, ref: str, kind: type, where: _Where, model: str | None
) -> VectorData | ProbeData:
    data = resolved.get(ref)
    label = "vector" if kind is VectorData else "probe"
    if data is None:
        raise RecipeError(f"{where}: unknown {label} {ref!r}")
    if not isinstance(data, kind):
        raise RecipeError(f"{where}: {ref!r} is not a {label}")
    if model is not None and data.model is not None and data.model != model:
        raise RecipeError(f"{where}: {label} {ref!r} belongs to model {data.model!r}, not {model!r}")
    return data


def _direction(data: VectorData, layer: int, width: int, where: _Where) -> Tensor:
    vec = data.directions.get(layer)
    if vec is None:
        if len(data.directions) != 1:
            layers = sorted(data.directions)
            raise RecipeError(
                f"{where}: vector {data.key!r} has no direction for layer {layer} (it has {layers})"
            )
        vec = next(iter(data.directions.values()))
    if vec.shape[-1] != width:
        raise RecipeError(f"{where}: vector width {vec.shape[-1]} does not match the site's width {width}")
    return vec


def _unit(vec: Tensor, where: _Where) -> Tensor:
    norm = float(torch.linalg.vector_norm(vec))
    if norm == 0.0:
        raise RecipeError(f"{where}: the direction is all zeros")
    return vec / norm


# (vector key, layer, width, unit-normalised) -> (direction row, bank key): a warm request's compile
# does no tensor work and no string formatting. Keys are content hashes, so entries never go stale.
_ROW_CACHE: dict[tuple[str, int, int, bool], tuple[Tensor, str]] = {}


def _lane_row(
    data: VectorData, layer: int, width: int, normalized: bool, where: _Where
) -> tuple[Tensor, str]:
    ck = (data.key, layer, width, normalized)
    hit = _ROW_CACHE.get(ck)
    if hit is not None:
        return hit
    vec = _direction(data, layer, width, where)
    if normalized:
        vec = _unit(vec, where)
    if len(_ROW_CACHE) > 8192:
        _ROW_CACHE.clear()
    _ROW_CACHE[ck] = row = (vec, f"{data.key}@{layer}:{normalized}")
    return row


@lru_cache(maxsize=256)
def _mask(width: int, dims: tuple[int, ...] | None) -> tuple[Tensor, str]:
    if dims is None:
        return torch.ones(width), f"mask:{width}:all"
    m = torch.zeros(width)
    m[list(dims)] = 1.0
    return m, f"mask:{width}:" + hashlib.sha1(repr(dims).encode()).hexdigest()


def _probe(
    resolved: Resolved, ref: str, site: Site, shape: ModelShape, where: _Where, model: str | None
) -> ProbeData:
    data = _resolve(resolved, ref, ProbeData, where, model)
    assert isinstance(data, ProbeData)
    width = _width(shape, site[1])
    if data.weight.shape[-1] != width:
        raise RecipeError(
            f"{where}: probe width {data.weight.shape[-1]} does not match the site's width {width}"
        )
    return data


def compile_recipe(
    recipe: Recipe | None,
    shape: ModelShape,
    resolved: Resolved,
    *,
    model: str | None = None,
) -> CompiledRecipe:
    """Lower a validated recipe to lanes and reads for one model.

    Args:
        recipe: the parsed recipe (None: no interventions).
        shape: layers and widths of the model.
        resolved: every vector/probe reference of the recipe, resolved.
        model: the deployment the request runs on; resolved data of another model is refused.

    Raises:
        RecipeError: naming the intervention (``interventions[i]``) and what is wrong.
    """
    if recipe is None:
        return EMPTY_RECIPE
    lanes: list[CompiledLane] = []
    probes: list[CompiledProbe] = []
    lenses: list[CompiledLens] = []
    for i, item in enumerate(recipe.interventions):
        lowered = _lower(i, item, shape, resolved, model)
        if isinstance(lowered, CompiledProbe):
            probes.append(lowered)
        elif isinstance(lowered, CompiledLens):
            lenses.append(lowered)
        else:
            lanes.append(lowered)
    return CompiledRecipe(tuple(lanes), tuple(probes), tuple(lenses), len(recipe.interventions))


def recipe_problems(
    recipe: Recipe, shape: ModelShape, resolved: Resolved, *, model: str | None = None
) -> list[str]:
    """Every intervention's problem, where ``compile_recipe`` stops at the first: an editor shows
    them all at once. Each message names its intervention (``interventions[i]``); empty: it compiles.

    Args:
        recipe: the parsed recipe.
        shape: layers and widths of the model.
        resolved: every vector/probe reference of the recipe, resolved.
        model: the deployment the request runs on.
    """
    problems = []
    for i, item in enumerate(recipe.interventions):
        try:
            _lower(i, item, shape, resolved, model)
        except RecipeError as exc:
            problems.append(str(exc))
    return problems


def _lower(
    i: int, item: Intervention, shape: ModelShape, resolved: Resolved, model: str | None
) -> CompiledLane | CompiledProbe | CompiledLens:
    # Error paths build their messages; the common path stays free of string work (plan_us).
    where = _Where(i)
    site: Site = (_normalize_layer(item.layer, shape, where), item.point)
    if not isinstance(item.positions, str):
        _check_positions(item.positions, where)
    op = item.op
    if op == "probe":
        data = _probe(resolved, item.probe, site, shape, where.at("probe"), model)  # type: ignore[union-attr]
        return CompiledProbe(i, site, data.key, data.weight, data.bias, item.name, item.positions)  # type: ignore[union-attr]
    if op == "logit_lens":
        return CompiledLens(i, site, item.k, item.positions)  # type: ignore[union-attr]
    lane: CompiledLane = _LOWER[op](item, i, site, shape, resolved, where, model)
    return lane


def _gate(
    item: WriteOp, site: Site, shape: ModelShape, resolved: Resolved, where: _Where, model: str | None
) -> CompiledGate | None:
    if item.when is None:
        return None
    return _compile_gate(item.when, site, shape, resolved, where.at("when"), model)


def _vector(resolved: Resolved, ref: str, where: _Where, model: str | None) -> VectorData:
    data = _resolve(resolved, ref, VectorData, where, model)
    assert isinstance(data, VectorData)
    return data


def _lower_steer(
    item: Steer, i: int, site: Site, shape: ModelShape, resolved: Resolved, where: _Where, model: str | None
) -> CompiledLane:
    field_where = where.at("vector")
    vdata = _vector(resolved, item.vector, field_where, model)
    vec, key = _lane_row(vdata, site[0], _width(shape, site[1]), item.normalize != "none", field_where)
    unit = _UNIT_RESID_NORM if item.normalize == "resid_norm" else _UNIT_ADD
    gate = _gate(item, site, shape, resolved, where, model)
    return CompiledLane(i, site, "steer", unit, item.scale, item.enabled, item.positions, vec, key, gate=gate)


def _lower_direction(
    item: ProjectOut | Clamp,
    i: int,
    site: Site,
    shape: ModelShape,
    resolved: Resolved,
    where: _Where,
    model: str | None,
) -> CompiledLane:
    field_where = where.at("direction")
    vdata = _vector(resolved, item.direction, field_where, model)
    vec, key = _lane_row(vdata, site[0], _width(shape, site[1]), True, field_where)
    unit = (item.value, 0.0, -1.0, 0.0) if isinstance(item, Clamp) else _UNIT_PROJECT
    gate = _gate(item, site, shape, resolved, where, model)
    return CompiledLane(i, site, item.op, unit, item.scale, item.enabled, item.positions, vec, key, gate=gate)


def _lower_ablate(
    item: Ablate, i: int, site: Site, shape: ModelShape, resolved: Resolved, where: _Where, model: str | None
) -> CompiledLane:
    width = _width(shape, site[1])
    dims = None if item.dims == "all" else tuple(sorted(item.dims))
    if dims is not None and dims[-1] >= width:
        raise RecipeError(f"{where.at('dims')}: dimension {dims[-1]} out of range for width {width}")
    source = source_key = None
    if item.mode == "mean":
        assert item.mean is not None
        mdata = _vector(resolved, item.mean, where.at("mean"), model)
        source = _direction(mdata, site[0], width, where.at("mean"))
        source_key = f"{mdata.key}@{site[0]}"
    mask, mask_key = _mask(width, dims)
    gate = _gate(item, site, shape, resolved, where, model)
    return CompiledLane(
        i,
        site,
        "ablate",
        _UNIT_MASK,
        item.scale,
        item.enabled,
        item.positions,
        mask=mask,
        mask_key=mask_key,
        source=source,
        source_key=source_key,
        gate=gate,
    )


def _lower_patch(
    item: Patch, i: int, site: Site, shape: ModelShape, resolved: Resolved, where: _Where, model: str | None
) -> CompiledLane:
    tokens = None if item.source.tokens is None else tuple(item.source.tokens)
    if tokens is not None and max(tokens) >= shape.vocab_size:
        raise RecipeError(
            f"{where.at('source.tokens')}: token id {max(tokens)} >= vocabulary size {shape.vocab_size}"
        )
    mask, mask_key = _mask(_width(shape, site[1]), None)
    gate = _gate(item, site, shape, resolved, where, model)
    return CompiledLane(
        i,
        site,
        "patch",
        _UNIT_MASK,
        item.scale,
        item.enabled,
        item.positions,
        mask=mask,
        mask_key=mask_key,
        patch_tokens=tokens,
        patch_text=item.source.text,
        patch_align=item.align,
        gate=gate,
    )


_UNIT_ADD = (1.0, 0.0, 0.0, 0.0)
_UNIT_RESID_NORM = (0.0, 1.0, 0.0, 0.0)
_UNIT_PROJECT = (0.0, 0.0, -1.0, 0.0)
_UNIT_MASK = (0.0, 0.0, 0.0, 1.0)
_LOWER: dict[str, Callable[..., CompiledLane]] = {
    "steer": _lower_steer,
    "project_out": _lower_direction,
    "clamp": _lower_direction,
    "ablate": _lower_ablate,
    "patch": _lower_patch,
}


def _compile_gate(
    gate: Gate, write_site: Site, shape: ModelShape, resolved: Resolved, where: _Where, model: str | None
) -> CompiledGate:
    site: Site = (_normalize_layer(gate.layer, shape, where), gate.point)
    data = _probe(resolved, gate.probe, site, shape, where.at("probe"), model)
    # Reads at a site happen before its writes, so a probe at the same or an earlier site gates the
    # same token; a later probe can only gate on the previous token's score.
    same = site_order(site) <= site_order(write_site)
    return CompiledGate(
        site=site,
        key=data.key,
        weight=data.weight.float(),
        bias=data.bias,
        threshold=gate.threshold,
        sign=1.0 if gate.direction == "above" else -1.0,
        mode=ops.GATE_SAME_TOKEN if same else ops.GATE_PREV_TOKEN,
    )


def _check_positions(positions: Positions, where: _Where) -> None:
    if isinstance(positions, PositionSlice):
        a, b = positions.start, positions.stop
        if a is not None and b is not None and (a >= 0) == (b >= 0) and b <= a:
            raise RecipeError(f"{where}.positions: slice {a}:{b} selects no position")
    elif isinstance(positions, PositionIndices) and len(set(positions.indices)) != len(positions.indices):
        raise RecipeError(f"{where}.positions: indices must not repeat")


def resolve_positions(positions: Positions, prompt_len: int) -> tuple[int, int, int, list[int]]:
    """Turn a position selector into ``(start, stop, step, explicit)`` absolute positions.

    Negative values count from the end of the prompt. Raises RecipeError for an explicit position
    before the start of the prompt.
    """
    if positions == "all":
        return 0, OPEN_END, 1, []
    if positions == "prompt":
        return 0, prompt_len, 1, []
    if positions == "generated":
        return prompt_len, OPEN_END, 1, []
    if positions == "last_prompt":
        return prompt_len - 1, prompt_len, 1, []
    if isinstance(positions, PositionSlice):

        def bound(v: int | None, default: int) -> int:
            if v is None:
                return default
            return max(prompt_len + v, 0) if v < 0 else v

        return bound(positions.start, 0), bound(positions.stop, OPEN_END), positions.step, []
    assert isinstance(positions, PositionIndices)
    out = []
    for v in positions.indices:
        p = prompt_len + v if v < 0 else v
        if p < 0:
            raise RecipeError(f"position {v} is before the start of a {prompt_len}-token prompt")
        out.append(p)
    return 0, 0, 1, out


def positions_contain(resolved: tuple[int, int, int, list[int]], pos: int) -> bool:
    start, stop, step, explicit = resolved
    return (start <= pos < stop and (pos - start) % step == 0) or pos in explicit


def tensor_bytes(t: Tensor) -> bytes:
    return t.detach().float().cpu().contiguous().numpy().tobytes()


def tensor_key(t: Tensor) -> str:
    """The sha256 of a tensor's float32 content (content-addressed bank keys)."""
    return hashlib.sha256(tensor_bytes(t)).hexdigest()

"""Compile per-request recipes into the slot tables of one batch (docs/design.md §4).

Two stages:

* ``compile_recipe`` checks a parsed recipe against a model's shape and the resolved tensors
  (layers in range, widths, finite values, the right model) and lowers every write op to a *lane*:
  a direction / mask / replacement source plus unit coefficients (see ``ops.py``). It raises
  ``RecipeError`` naming the offending intervention before anything touches a model.
* ``BatchPlan`` holds, for every hooked site, content-addressed banks of rows and per-request-slot
  tables. ``add``/``remove``/``adjust`` (a request joins, leaves, or a slider moves) are the only
  host work that depends on requests; ``begin_step`` turns the per-row slot and position tensors of
  the next forward into per-row lane tables with a fixed number of device ops, and ``apply`` is
  called from the model's hooks. The same plan serves packed ``[1, tokens]`` batches (transformers
  continuous batching, vLLM) and padded ``[batch, seq]`` batches (collecting activations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from interventions import ops
from interventions.sites import ModelShape
from interventions.spec import (
    Ablate,
    Adjustment,
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
            h.update(_tensor_bytes(directions[layer]))
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
        h = hashlib.sha256(_tensor_bytes(weight))
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


class _Bank:
    """Content-addressed rows of one width, row 0 all zeros (the no-op), shared by refcount.

    Released entries stay resident (the device side of the warm cache): a request that reuses a
    vector rejoins without a copy. They are dropped only when the bank would otherwise grow.
    """

    def __init__(self, width: int, device: torch.device, dtype: torch.dtype) -> None:
        self.width, self.device, self.dtype = width, device, dtype
        self.rows = torch.zeros(8, width, device=device, dtype=dtype)
        self.used = 1
        self.entries: dict[str, list[int]] = {}  # key -> [base, count, refs]
        self.stale = 0  # rows held by entries nobody references

    def acquire(self, key: str, values: Tensor) -> tuple[int, np.ndarray | None]:
        """Returns the entry's first row, and an old->new row map if the bank was compacted."""
        entry = self.entries.get(key)
        if entry is not None:
            entry[2] += 1
            if entry[2] == 1:
                self.stale -= entry[1]
            return entry[0], None
        values = values.reshape(-1, self.width)
        n = values.shape[0]
        remap = None
        if self.used + n > self.rows.shape[0]:
            if self.stale * 2 >= self.used:
                remap = self._compact()
            if self.used + n > self.rows.shape[0]:
                self._grow(self.used + n)
        base = self.used
        self.rows[base : base + n].copy_(values)
        self.used += n
        self.entries[key] = [base, n, 1]
        return base, remap

    def release(self, key: str) -> None:
        entry = self.entries[key]
        entry[2] -= 1
        if entry[2] == 0:
            self.stale += entry[1]

    def _compact(self) -> np.ndarray:
        remap = np.zeros(self.rows.shape[0], dtype=np.int64)
        rows = torch.zeros_like(self.rows)
        nxt = 1
        for key, (base, n, refs) in sorted(self.entries.items(), key=lambda kv: kv[1][0]):
            if refs == 0:
                del self.entries[key]
                continue
            rows[nxt : nxt + n].copy_(self.rows[base : base + n])
            remap[base : base + n] = np.arange(nxt, nxt + n)
            self.entries[key] = [nxt, n, refs]
            nxt += n
        self.rows, self.used, self.stale = rows, nxt, 0
        return remap

    def _grow(self, need: int) -> None:
        size = self.rows.shape[0]
        while size < need:
            size *= 2
        rows = torch.zeros(size, self.width, device=self.device, dtype=self.dtype)
        rows[: self.used].copy_(self.rows[: self.used])
        self.rows = rows


class _ProbeRows:
    """The probes scored at one site: weights ``[n, width]``, biases and their global columns."""

    def __init__(self, width: int, device: torch.device) -> None:
        self.n = 0
        self.weight = torch.zeros(4, width, device=device)
        self.bias = torch.zeros(4, device=device)
        self.cols = torch.zeros(4, dtype=torch.long, device=device)
        self.col_list: list[int] = []

    def add(self, col: int, weight: Tensor, bias: float) -> None:
        if self.n == self.weight.shape[0]:
            grow = self.weight.shape[0] * 2
            self.weight = torch.cat([self.weight, torch.zeros_like(self.weight)])[:grow]
            self.bias = torch.cat([self.bias, torch.zeros_like(self.bias)])[:grow]
            self.cols = torch.cat([self.cols, torch.zeros_like(self.cols)])[:grow]
        self.weight[self.n].copy_(weight)
        self.bias[self.n] = bias
        self.cols[self.n] = col
        self.col_list.append(col)
        self.n += 1

    def drop(self, col: int) -> None:
        # Swap-remove: the last row fills the hole.
        i = self.col_list.index(col)
        last = self.n - 1
        if i != last:
            self.weight[i].copy_(self.weight[last])
            self.bias[i] = self.bias[last]
            self.cols[i] = self.cols[last]
            self.col_list[i] = self.col_list[last]
        self.col_list.pop()
        self.n -= 1


@dataclass
class _StepTables:
    di: Tensor
    mi: Tensor
    ui: Tensor
    coef: Tensor
    gate_coef: Tensor
    gate_col: Tensor
    gate_mode: Tensor


class _SiteState:
    """Banks and per-slot lane tables of one hooked site."""

    def __init__(self, site: Site, width: int, slots: int, device: torch.device, dtype: torch.dtype) -> None:
        self.site, self.width, self.device = site, width, device
        self.dirs = _Bank(width, device, dtype)
        self.masks = _Bank(width, device, dtype)
        self.sources = _Bank(width, device, dtype)
        self.lanes = 0
        self.ints = np.zeros((slots, 0, ops.N_INT), dtype=np.int64)
        self.floats = np.zeros((slots, 0, ops.N_FLOAT), dtype=np.float32)
        self.explicit = np.full((slots, 0, 0), -1, dtype=np.int64)
        self.lane_used = np.zeros((slots, 0), dtype=bool)
        self.slot_lanes = [0] * slots  # lanes each slot holds here (all freed together on leave)
        self.dirty = True
        self.ints_dev = self.floats_dev = self.explicit_dev = torch.empty(0)
        # How many live lanes need each optional term (static per batch, so the op skips the rest).
        self.counts = [0, 0, 0, 0]  # norm, projection, mask, gate
        # Reads: the probes scored here (global columns), and the logit-lens k.
        self.probes = _ProbeRows(width, device)
        self.lens_k: dict[int, int] = {}  # slot -> k
        self.step: _StepTables | None = None
        self.lens_out: tuple[Tensor, Tensor] | None = None

    def free_lane(self, slot: int) -> int:
        k = self.slot_lanes[slot]
        if k == self.lanes:
            self._resize(self.lanes + 1, self.explicit.shape[2])
        self.slot_lanes[slot] = k + 1
        return k

    def ensure_explicit(self, m: int) -> None:
        if m > self.explicit.shape[2]:
            self._resize(self.lanes, m)

    def _resize(self, lanes: int, m: int) -> None:
        slots, old, old_m = self.ints.shape[0], self.lanes, self.explicit.shape[2]
        ints = np.zeros((slots, lanes, ops.N_INT), dtype=np.int64)
        floats = np.zeros((slots, lanes, ops.N_FLOAT), dtype=np.float32)
        explicit = np.full((slots, lanes, m), -1, dtype=np.int64)
        used = np.zeros((slots, lanes), dtype=bool)
        ints[:, :old] = self.ints
        floats[:, :old] = self.floats
        explicit[:, :old, :old_m] = self.explicit
        used[:, :old] = self.lane_used
        self.ints, self.floats, self.explicit, self.lane_used, self.lanes = (
            ints,
            floats,
            explicit,
            used,
            lanes,
        )
        self.dirty = True

    def count(self, terms: tuple[int, int, int, int], sign: int) -> None:
        c = self.counts
        c[0] += sign * terms[0]
        c[1] += sign * terms[1]
        c[2] += sign * terms[2]
        c[3] += sign * terms[3]

    @property
    def use_norm(self) -> bool:
        return bool(self.counts[0])

    @property
    def use_proj(self) -> bool:
        return bool(self.counts[1])

    @property
    def use_mask(self) -> bool:
        return bool(self.counts[2])

    @property
    def use_gate(self) -> bool:
        return bool(self.counts[3])

    def remap(self, column: int, remap: np.ndarray | None) -> None:
        if remap is not None:
            self.ints[:, :, column] = remap[self.ints[:, :, column]]
            self.dirty = True

    def upload(self) -> None:
        if not self.dirty:
            return
        # On the CPU these share memory with the host tables; on a GPU they are one copy each.
        self.ints_dev = torch.from_numpy(self.ints).to(self.device)
        self.floats_dev = torch.from_numpy(self.floats).to(self.device)
        self.explicit_dev = torch.from_numpy(self.explicit).to(self.device)
        self.dirty = False


@dataclass(slots=True)
class _LaneRecord:
    site: Site
    lane: int
    unit: tuple[float, float, float, float]
    scale: float
    enabled: bool
    keys: tuple[tuple[str, str], ...]  # (bank name, key) to release
    terms: tuple[int, int, int, int]  # the optional terms it needs (CompiledLane.terms)
    gate_column: tuple[str, Site] | None = None
    prev_gate: bool = False


@dataclass
class _SlotRecord:
    key: str
    prompt_len: int
    compiled: CompiledRecipe
    lanes: dict[int, _LaneRecord] = field(default_factory=dict)  # intervention index -> lane
    probe_cols: dict[int, int] = field(default_factory=dict)  # intervention index -> global column
    probe_keys: list[tuple[str, Site]] = field(default_factory=list)
    positions: dict[int, tuple[int, int, int, list[int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class StepReads:
    """Reads of one forward step, on the device: probe scores by global column, lens top-k by site."""

    scores: Tensor | None  # [rows, columns]
    lens: Mapping[Site, tuple[Tensor, Tensor]]  # site -> (ids [rows, k], probs [rows, k])


class BatchPlan:
    """Slot tables for the requests of one engine's batches.

    Args:
        shape: layers and widths of the model.
        max_requests: request slots (slot 0 is the null request used for padding rows).
        device, dtype: where the banks live and the activation dtype.
        lens_fn: final norm + unembedding of residual rows (``ModelAdapter.logit_lens``).
        on_new_site: called once for every site that needs a hook (the engine installs it there).
    """

    def __init__(
        self,
        shape: ModelShape,
        *,
        max_requests: int = 256,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        lens_fn: Callable[[Tensor], Tensor] | None = None,
        on_new_site: Callable[[Site], None] | None = None,
    ) -> None:
        self.shape = shape
        self.device = torch.device(device)
        self.dtype = dtype
        self.lens_fn = lens_fn
        self.on_new_site = on_new_site
        self.slots = max_requests + 1
        self.sites: dict[Site, _SiteState] = {}
        self._ordered: list[_SiteState] = []
        self._records: dict[str, _SlotRecord] = {}
        self._slot_of: dict[str, int] = {}
        self._free_slots = list(range(self.slots - 1, 0, -1))
        self.prompt_len = np.zeros(self.slots, dtype=np.int64)
        self._prompt_len_dev = torch.from_numpy(self.prompt_len).to(self.device)
        self._prompt_dirty = False
        # Global probe columns: (probe key, site) -> column. Released columns stay resident until
        # they outnumber the live ones (they are still scored each step), then are evicted.
        self._col_of: dict[tuple[str, Site], int] = {}
        self._col_key: dict[int, tuple[str, Site]] = {}
        self._col_refs: dict[int, int] = {}
        self._stale_cols: set[int] = set()
        self._free_columns: list[int] = []
        self.num_columns = 0
        self._prev_gates = 0
        self.last_scores = torch.zeros(self.slots, 0, device=self.device)
        # Per-step state.
        self.row_slot = torch.zeros(0, dtype=torch.long, device=self.device)
        self.row_pos = torch.zeros(0, dtype=torch.long, device=self.device)
        self._generated = torch.zeros(0, dtype=torch.bool, device=self.device)
        self._scores: Tensor | None = None
        self._prev: Tensor | None = None
        self._in_step = False

    # ----------------------------------------------------------------- requests join / leave
    def slot_of(self, key: str) -> int:
        return self._slot_of[key]

    def record(self, key: str) -> _SlotRecord:
        return self._records[key]

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def add(
        self,
        key: str,
        compiled: CompiledRecipe,
        prompt_len: int,
        patch_sources: Mapping[int, Tensor] | None = None,
    ) -> int:
        """Give a joining request a slot and write its lanes (host work only on join).

        Args:
            key: the request id.
            compiled: its compiled recipe.
            prompt_len: its prompt length (negative positions count from its end).
            patch_sources: intervention index -> source activations ``[src_len, width]`` at the
                patch's site, for every patch lane.
        """
        if key in self._records:
            raise ValueError(f"request {key!r} is already in the plan")
        if not self._free_slots:
            raise RuntimeError(f"all {self.slots - 1} request slots are in use")
        # Resolve positions first: a bad position must leave the plan as it was.
        positions = {item.index: resolve_positions(item.positions, prompt_len) for item in compiled.items()}
        for lane in compiled.lanes:
            if lane.op == "patch" and (patch_sources is None or lane.index not in patch_sources):
                raise ValueError(f"interventions[{lane.index}]: patch source activations missing")
        slot = self._free_slots.pop()
        rec = _SlotRecord(key=key, prompt_len=prompt_len, compiled=compiled, positions=positions)
        self._records[key] = rec
        self._slot_of[key] = slot
        self.prompt_len[slot] = prompt_len
        self._prompt_dirty = True
        for probe in compiled.probes:
            rec.probe_cols[probe.index] = self._acquire_column(
                probe.key, probe.site, probe.weight, probe.bias
            )
            rec.probe_keys.append((probe.key, probe.site))
        for lens in compiled.lenses:
            self._site(lens.site).lens_k[slot] = lens.k
        for lane in compiled.lanes:
            self._write_lane(slot, rec, lane, positions[lane.index], patch_sources)
        return slot

    def remove(self, key: str) -> None:
        """Free a leaving request's slot and lanes; release its bank rows and probe columns."""
        rec = self._records.pop(key)
        slot = self._slot_of.pop(key)
        touched: set[Site] = set()
        for lr in rec.lanes.values():
            state = self.sites[lr.site]
            touched.add(lr.site)
            state.count(lr.terms, -1)
            for bank, k in lr.keys:
                getattr(state, bank).release(k)
            if lr.gate_column is not None:
                self._release_column(*lr.gate_column)
            self._prev_gates -= lr.prev_gate
        for site in touched:  # every lane of the slot goes at once
            state = self.sites[site]
            state.ints[slot] = 0
            state.floats[slot] = 0
            state.explicit[slot] = -1
            state.lane_used[slot] = False
            state.slot_lanes[slot] = 0
            state.dirty = True
        for probe_key, site in rec.probe_keys:
            self._release_column(probe_key, site)
        for lens in rec.compiled.lenses:
            self.sites[lens.site].lens_k.pop(slot, None)
        self.prompt_len[slot] = 0
        self._prompt_dirty = True
        self._free_slots.append(slot)

    def adjust(self, key: str, adjustment: Adjustment) -> None:
        """Change one write intervention's scale and/or enabled flag (from the next forward on)."""
        rec = self._records[key]
        lr = rec.lanes.get(adjustment.index)
        if lr is None:
            kind = "a read" if adjustment.index < rec.compiled.num_interventions else "no"
            raise ValueError(
                f"intervention {adjustment.index} is {kind} intervention: only write ops can be adjusted"
            )
        if adjustment.scale is not None:
            lr.scale = adjustment.scale
        if adjustment.enabled is not None:
            lr.enabled = adjustment.enabled
        state = self.sites[lr.site]
        slot = self._slot_of[key]
        factor = lr.scale if lr.enabled else 0.0
        state.floats[slot, lr.lane, : ops.F_GATE_THR] = [u * factor for u in lr.unit]
        state.dirty = True

    def ensure_site(self, site: Site) -> None:
        """Make sure ``site`` is hooked (e.g. to capture activations there)."""
        self._site(site)

    def _site(self, site: Site) -> _SiteState:
        state = self.sites.get(site)
        if state is None:
            width = self.shape.mlp_size if site[1] == "mlp_act" else self.shape.hidden_size
            state = _SiteState(site, width, self.slots, self.device, self.dtype)
            self.sites[site] = state
            self._ordered = sorted(self.sites.values(), key=lambda s: site_order(s.site))
            if self.on_new_site is not None:
                self.on_new_site(site)
        return state

    def _write_lane(
        self,
        slot: int,
        rec: _SlotRecord,
        lane: CompiledLane,
        pos: tuple[int, int, int, list[int]],
        patch_sources: Mapping[int, Tensor] | None,
    ) -> None:
        state = self.sites.get(lane.site) or self._site(lane.site)
        k = state.free_lane(slot)
        keys: list[tuple[str, str]] = []
        dir_row = mask_row = src_row = src_step = src_off = src_len = 0
        if lane.direction_key is not None and lane.direction is not None:
            dir_row = self._acquire_row(state, "dirs", ops.I_DIR, lane.direction_key, lane.direction)
            keys.append(("dirs", lane.direction_key))
        if lane.mask_key is not None and lane.mask is not None:
            mask_row = self._acquire_row(state, "masks", ops.I_MASK, lane.mask_key, lane.mask)
            keys.append(("masks", lane.mask_key))
        if lane.source_key is not None and lane.source is not None:
            src_row = self._acquire_row(state, "sources", ops.I_SRC, lane.source_key, lane.source)
            keys.append(("sources", lane.source_key))
        if lane.op == "patch":
            assert patch_sources is not None
            acts = patch_sources[lane.index].reshape(-1, state.width)
            key = "patch:" + _tensor_key(acts)
            src_row = self._acquire_row(state, "sources", ops.I_SRC, key, acts)
            keys.append(("sources", key))
            src_len = acts.shape[0]
            src_step = 1
            src_off = 0 if lane.patch_align == "start" else src_len - rec.prompt_len
        gate_col = gate_mode = 0
        threshold = sign = 0.0
        gate_column = None
        g = lane.gate
        if g is not None:
            gate_col = self._acquire_column(g.key, g.site, g.weight, g.bias)
            gate_mode, threshold, sign = g.mode, g.threshold, g.sign
            gate_column = (g.key, g.site)
        prev_gate = gate_mode == ops.GATE_PREV_TOKEN
        self._prev_gates += prev_gate
        start, stop, step, explicit = pos
        # One assignment per table row (the column order is ops.I_* / ops.F_*).
        state.ints[slot, k] = (
            dir_row,
            mask_row,
            src_row,
            src_step,
            src_off,
            src_len,
            start,
            stop,
            step,
            gate_col,
            gate_mode,
        )
        factor = lane.scale if lane.enabled else 0.0
        unit = lane.unit
        state.floats[slot, k] = (
            unit[0] * factor,
            unit[1] * factor,
            unit[2] * factor,
            unit[3] * factor,
            threshold,
            sign,
        )
        if explicit:
            state.ensure_explicit(len(explicit))
            state.explicit[slot, k, : len(explicit)] = explicit
        state.lane_used[slot, k] = True
        state.count(lane.terms, 1)
        state.dirty = True
        rec.lanes[lane.index] = _LaneRecord(
            lane.site, k, unit, lane.scale, lane.enabled, tuple(keys), lane.terms, gate_column, prev_gate
        )

    @staticmethod
    def _acquire_row(state: _SiteState, bank: str, column: int, key: str, values: Tensor) -> int:
        base, remap = getattr(state, bank).acquire(key, values)
        state.remap(column, remap)
        return base

    # ----------------------------------------------------------------- probe columns
    def _acquire_column(self, probe_key: str, site: Site, weight: Tensor, bias: float) -> int:
        ck = (probe_key, site)
        col = self._col_of.get(ck)
        if col is not None:
            self._col_refs[col] += 1
            self._stale_cols.discard(col)
            return col
        if self._free_columns:
            col = self._free_columns.pop()
        else:
            col = self.num_columns
            self.num_columns += 1
            if self.num_columns > self.last_scores.shape[1]:
                grown = torch.zeros(self.slots, max(8, 2 * self.num_columns), device=self.device)
                grown[:, : self.last_scores.shape[1]] = self.last_scores
                self.last_scores = grown
        self._col_of[ck] = col
        self._col_key[col] = ck
        self._col_refs[col] = 1
        self._site(site).probes.add(col, weight.to(self.device), bias)
        self.last_scores[:, col] = 0
        return col

    def _release_column(self, probe_key: str, site: Site) -> None:
        col = self._col_of[(probe_key, site)]
        self._col_refs[col] -= 1
        if self._col_refs[col]:
            return
        self._stale_cols.add(col)
        live = len(self._col_of) - len(self._stale_cols)
        if len(self._stale_cols) > max(64, live):
            for stale in self._stale_cols:
                key = self._col_key.pop(stale)
                del self._col_of[key]
                del self._col_refs[stale]
                self.sites[key[1]].probes.drop(stale)
                self._free_columns.append(stale)
            self._stale_cols.clear()

    # ----------------------------------------------------------------- per step
    def begin_step(self, row_slot: Tensor, row_pos: Tensor) -> None:
        """Prepare the per-row lane tables for the next forward (device ops only).

        Args:
            row_slot: ``[rows]`` long, each row's request slot (0 for padding rows).
            row_pos: ``[rows]`` long, each row's absolute token position.
        """
        self.row_slot, self.row_pos = row_slot, row_pos
        self._in_step = True
        if self._prompt_dirty:
            self._prompt_len_dev = torch.from_numpy(self.prompt_len).to(self.device)
            self._prompt_dirty = False
        self._generated = row_pos >= self._prompt_len_dev[row_slot]
        rows = row_slot.shape[0]
        self._scores = torch.zeros(rows, self.num_columns, device=self.device) if self.num_columns else None
        self._prev = self.last_scores[row_slot] if self._prev_gates and self.num_columns else None
        for state in self._ordered:
            state.lens_out = None
            if not state.lanes:
                state.step = None
                continue
            state.upload()
            ints = state.ints_dev[row_slot]  # [rows, lanes, N_INT]
            floats = state.floats_dev[row_slot]
            sel = ops.position_mask(
                row_pos,
                ints[..., ops.I_POS_START],
                ints[..., ops.I_POS_STOP],
                ints[..., ops.I_POS_STEP],
                state.explicit_dev[row_slot],
            )
            src_pos = row_pos[:, None] + ints[..., ops.I_SRC_OFF]
            src_step = ints[..., ops.I_SRC_STEP]
            valid = (src_step == 0) | ((src_pos >= 0) & (src_pos < ints[..., ops.I_SRC_LEN]))
            sel = sel & valid
            ui = torch.where(valid, ints[..., ops.I_SRC] + src_step * src_pos, 0)
            state.step = _StepTables(
                di=ints[..., ops.I_DIR],
                mi=ints[..., ops.I_MASK],
                ui=ui,
                coef=floats[..., : ops.F_GATE_THR] * sel[..., None],
                gate_coef=floats[..., ops.F_GATE_THR :],
                gate_col=ints[..., ops.I_GATE_COL],
                gate_mode=ints[..., ops.I_GATE_MODE],
            )

    def apply(self, site: Site, h: Tensor) -> Tensor:
        """The hooked op at ``site``: reads first (on the incoming activation), then the lanes."""
        state = self.sites[site]
        shape = h.shape
        x = h.reshape(-1, state.width)
        if not self._in_step or x.shape[0] != self.row_slot.shape[0]:
            # A forward the plan was not prepared for would apply stale per-row tables.
            raise RuntimeError(
                f"forward through a hooked model outside a plan step ({x.shape[0]} rows, "
                f"{self.row_slot.shape[0] if self._in_step else 'no'} prepared)"
            )
        rows = state.probes
        if self._scores is not None and rows.n:
            n = rows.n
            self._scores.index_copy_(1, rows.cols[:n], ops.probe_scores(x, rows.weight[:n], rows.bias[:n]))
        if state.lens_k and self.lens_fn is not None:
            k = max(state.lens_k.values())
            state.lens_out = ops.lens_topk(self.lens_fn(x), k)
        tables = state.step
        if tables is None:
            return h
        m_rows = u_rows = None
        for k in range(state.lanes):
            coef = tables.coef[:, k]
            if state.use_gate:
                assert self._scores is not None
                prev = self._prev if self._prev is not None else self._scores
                gate = ops.gate_pass(
                    tables.gate_coef[:, k],
                    tables.gate_mode[:, k],
                    tables.gate_col[:, k],
                    self._scores,
                    prev,
                    self._generated,
                )
                coef = coef * gate[:, None]
            if state.use_mask:
                m_rows = state.masks.rows[tables.mi[:, k]]
                u_rows = state.sources.rows[tables.ui[:, k]]
            x = ops.lane_update(
                x,
                coef,
                state.dirs.rows[tables.di[:, k]],
                m_rows,
                u_rows,
                use_norm=state.use_norm,
                use_proj=state.use_proj,
            )
        return x.reshape(shape)

    def end_step(self) -> StepReads:
        """Finish a forward: remember each request's last scores (for previous-token gates)."""
        scores = self._scores
        if scores is not None and self._prev_gates:
            last = ops.last_row_of_each_request(self.row_slot)
            # Rows that are not a request's last write into the null slot 0, whose value is unused.
            target = torch.where(last, self.row_slot, 0)
            self.last_scores[:, : self.num_columns].index_copy_(0, target, scores)
            self.last_scores[0] = 0
        lens: dict[Site, tuple[Tensor, Tensor]] = {
            s.site: s.lens_out for s in self._ordered if s.lens_out is not None
        }
        self._scores = None
        self._in_step = False
        for state in self._ordered:
            state.step = None
        return StepReads(scores=scores, lens=lens)


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().float().cpu().contiguous().numpy().tobytes()


def _tensor_key(t: Tensor) -> str:
    return hashlib.sha256(_tensor_bytes(t)).hexdigest()


def padded_layout(attention_mask: Tensor, slots: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Row slots and positions for a padded ``[batch, seq]`` forward.

    Args:
        attention_mask: ``[batch, seq]`` 1 for real tokens (left or right padding).
        slots: the plan slot of each batch row.

    Returns:
        ``(row_slot, row_pos)`` flattened to ``[batch * seq]``; padding rows get slot 0.
    """
    mask = attention_mask.to(torch.long)
    pos = (mask.cumsum(dim=1) - 1).clamp_min(0)
    slot = torch.tensor(list(slots), dtype=torch.long, device=mask.device)[:, None].expand_as(mask)
    row_slot = torch.where(mask.bool(), slot, 0).reshape(-1)
    return row_slot, pos.reshape(-1)

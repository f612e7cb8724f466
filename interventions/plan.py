"""Compile per-request recipes into the slot tables of one batch (DESIGN §4).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    LogitLens,
    Patch,
    PositionIndices,
    Positions,
    PositionSlice,
    Probe,
    ProjectOut,
    Recipe,
    Steer,
)

Site = tuple[int, str]  # (normalized layer, point)
POINT_ORDER = {"resid_pre": 0, "attn_out": 1, "mlp_act": 2, "mlp_out": 3, "resid_post": 4}
OPEN_END = 1 << 62


class RecipeError(ValueError):
    """A recipe that cannot run on this model; the message names the intervention and field."""


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
        key: content hash (banks share rows between requests by this key).
        directions: layer -> float tensor ``[width]``.
        model: the model deployment the vector belongs to (None: unchecked).
    """

    key: str
    directions: Mapping[int, Tensor]
    model: str | None = None

    def __post_init__(self) -> None:
        for layer, t in self.directions.items():
            if t.ndim != 1:
                raise RecipeError(f"vector {self.key}: layer {layer} is not 1-D")
            _check_finite(t, f"vector {self.key} layer {layer}")


@dataclass(frozen=True)
class ProbeData:
    """A resolved linear probe ``h·w + b`` tied to one model."""

    key: str
    weight: Tensor
    bias: float
    model: str | None = None

    def __post_init__(self) -> None:
        if self.weight.ndim != 1:
            raise RecipeError(f"probe {self.key}: weight is not 1-D")
        _check_finite(self.weight, f"probe {self.key}")
        if not np.isfinite(self.bias):
            raise RecipeError(f"probe {self.key}: bias is NaN or Inf")


Resolved = Mapping[str, VectorData | ProbeData]


@dataclass(frozen=True)
class CompiledGate:
    site: Site
    key: str
    weight: Tensor
    bias: float
    threshold: float
    sign: float  # +1 fires above the threshold, -1 below
    mode: int  # ops.GATE_SAME_TOKEN or ops.GATE_PREV_TOKEN


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class CompiledProbe:
    index: int
    site: Site
    key: str
    weight: Tensor
    bias: float
    name: str | None
    positions: Positions


@dataclass(frozen=True)
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


def _normalize_layer(layer: int, shape: ModelShape, where: str) -> int:
    n = shape.num_layers
    if not -n <= layer < n:
        raise RecipeError(
            f"{where}.layer: layer {layer} out of range for a {n}-layer model (valid: {-n}..{n - 1})"
        )
    return layer % n


def _width(shape: ModelShape, point: str) -> int:
    return shape.mlp_size if point == "mlp_act" else shape.hidden_size


def _resolve(
    resolved: Resolved, ref: str, kind: type, where: str, model: str | None
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


def _direction(data: VectorData, layer: int, width: int, where: str) -> Tensor:
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
    return vec.float()


def _unit(vec: Tensor, where: str) -> Tensor:
    norm = float(torch.linalg.vector_norm(vec))
    if norm == 0.0:
        raise RecipeError(f"{where}: the direction is all zeros")
    return vec / norm


@lru_cache(maxsize=256)
def _mask(width: int, dims: tuple[int, ...] | None) -> Tensor:
    if dims is None:
        return torch.ones(width)
    m = torch.zeros(width)
    m[list(dims)] = 1.0
    return m


def _probe(
    resolved: Resolved, ref: str, site: Site, shape: ModelShape, where: str, model: str | None
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
        where = f"interventions[{i}]"
        site: Site = (_normalize_layer(item.layer, shape, where), item.point)
        width = _width(shape, item.point)
        _check_positions(item.positions, where)
        if isinstance(item, Probe):
            data = _probe(resolved, item.probe, site, shape, f"{where}.probe", model)
            probes.append(
                CompiledProbe(i, site, data.key, data.weight.float(), data.bias, item.name, item.positions)
            )
            continue
        if isinstance(item, LogitLens):
            lenses.append(CompiledLens(i, site, item.k, item.positions))
            continue
        gate = (
            None
            if item.when is None
            else _compile_gate(item.when, site, shape, resolved, f"{where}.when", model)
        )
        common = {
            "index": i,
            "site": site,
            "op": item.op,
            "scale": item.scale,
            "enabled": item.enabled,
            "positions": item.positions,
            "gate": gate,
        }
        if isinstance(item, Steer):
            vdata = _resolve(resolved, item.vector, VectorData, f"{where}.vector", model)
            assert isinstance(vdata, VectorData)
            vec = _direction(vdata, site[0], width, f"{where}.vector")
            if item.normalize != "none":
                vec = _unit(vec, f"{where}.vector")
            unit = (0.0, 1.0, 0.0, 0.0) if item.normalize == "resid_norm" else (1.0, 0.0, 0.0, 0.0)
            key = f"{vdata.key}@{site[0]}:{item.normalize != 'none'}"
            lanes.append(CompiledLane(unit=unit, direction=vec, direction_key=key, **common))  # type: ignore[arg-type]
        elif isinstance(item, (ProjectOut, Clamp)):
            vdata = _resolve(resolved, item.direction, VectorData, f"{where}.direction", model)
            assert isinstance(vdata, VectorData)
            vec = _unit(_direction(vdata, site[0], width, f"{where}.direction"), f"{where}.direction")
            alpha = item.value if isinstance(item, Clamp) else 0.0
            key = f"{vdata.key}@{site[0]}:True"
            lanes.append(
                CompiledLane(unit=(alpha, 0.0, -1.0, 0.0), direction=vec, direction_key=key, **common)  # type: ignore[arg-type]
            )
        elif isinstance(item, Ablate):
            dims = None if item.dims == "all" else tuple(sorted(item.dims))
            if dims is not None and dims[-1] >= width:
                raise RecipeError(f"{where}.dims: dimension {dims[-1]} out of range for width {width}")
            source = source_key = None
            if item.mode == "mean":
                assert item.mean is not None
                mdata = _resolve(resolved, item.mean, VectorData, f"{where}.mean", model)
                assert isinstance(mdata, VectorData)
                source = _direction(mdata, site[0], width, f"{where}.mean")
                source_key = f"{mdata.key}@{site[0]}"
            mask_key = f"mask:{width}:" + (
                "all" if dims is None else hashlib.sha1(repr(dims).encode()).hexdigest()
            )
            lanes.append(
                CompiledLane(
                    unit=(0.0, 0.0, 0.0, 1.0),
                    mask=_mask(width, dims),
                    mask_key=mask_key,
                    source=source,
                    source_key=source_key,
                    **common,  # type: ignore[arg-type]
                )
            )
        elif isinstance(item, Patch):
            tokens = None if item.source.tokens is None else tuple(item.source.tokens)
            if tokens is not None and max(tokens) >= shape.vocab_size:
                raise RecipeError(
                    f"{where}.source.tokens: token id {max(tokens)} >= vocabulary size {shape.vocab_size}"
                )
            lanes.append(
                CompiledLane(
                    unit=(0.0, 0.0, 0.0, 1.0),
                    mask=_mask(width, None),
                    mask_key=f"mask:{width}:all",
                    patch_tokens=tokens,
                    patch_text=item.source.text,
                    patch_align=item.align,
                    **common,  # type: ignore[arg-type]
                )
            )
    return CompiledRecipe(tuple(lanes), tuple(probes), tuple(lenses), len(recipe.interventions))


def _compile_gate(
    gate: Gate, write_site: Site, shape: ModelShape, resolved: Resolved, where: str, model: str | None
) -> CompiledGate:
    site: Site = (_normalize_layer(gate.layer, shape, where), gate.point)
    data = _probe(resolved, gate.probe, site, shape, f"{where}.probe", model)
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


def _check_positions(positions: Positions, where: str) -> None:
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
    """Content-addressed rows of one width, row 0 all zeros (the no-op), shared by refcount."""

    def __init__(self, width: int, device: torch.device, dtype: torch.dtype) -> None:
        self.width, self.device, self.dtype = width, device, dtype
        self.rows = torch.zeros(8, width, device=device, dtype=dtype)
        self.used = 1
        self.entries: dict[str, tuple[int, int, int]] = {}  # key -> (base, count, refs)

    def acquire(self, key: str, values: Tensor) -> int:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries[key] = (entry[0], entry[1], entry[2] + 1)
            return entry[0]
        values = values.reshape(-1, self.width)
        n = values.shape[0]
        if self.used + n > self.rows.shape[0]:
            self._grow(self.used + n)
        base = self.used
        self.rows[base : base + n].copy_(values)
        self.used += n
        self.entries[key] = (base, n, 1)
        return base

    def release(self, key: str) -> None:
        base, n, refs = self.entries[key]
        if refs > 1:
            self.entries[key] = (base, n, refs - 1)
        else:
            del self.entries[key]

    def compact_map(self) -> np.ndarray | None:
        """Drop unreferenced rows when they are most of the bank; returns the old->new row map."""
        live = sum(n for _, n, _ in self.entries.values())
        if self.used < 64 or live * 2 > self.used:
            return None
        remap = np.zeros(self.used, dtype=np.int64)
        rows = torch.zeros(max(8, 2 * (live + 1)), self.width, device=self.device, dtype=self.dtype)
        nxt = 1
        for key, (base, n, refs) in sorted(self.entries.items(), key=lambda kv: kv[1][0]):
            rows[nxt : nxt + n].copy_(self.rows[base : base + n])
            remap[base : base + n] = np.arange(nxt, nxt + n)
            self.entries[key] = (nxt, n, refs)
            nxt += n
        self.rows, self.used = rows, nxt
        return remap

    def _grow(self, need: int) -> None:
        size = self.rows.shape[0]
        while size < need:
            size *= 2
        rows = torch.zeros(size, self.width, device=self.device, dtype=self.dtype)
        rows[: self.used].copy_(self.rows[: self.used])
        self.rows = rows


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
        self.dirty = True
        self.ints_dev = self.floats_dev = self.explicit_dev = torch.empty(0)
        self.use_norm = self.use_proj = self.use_mask = self.use_gate = False
        # Reads: global probe columns computed here, and the logit-lens k.
        self.probe_keys: list[str] = []
        self.probe_cols = torch.empty(0, dtype=torch.long)
        self.probe_w = torch.empty(0, width)
        self.probe_b = torch.empty(0)
        self.lens_k: dict[int, int] = {}  # slot -> k
        self.step: _StepTables | None = None
        self.lens_out: tuple[Tensor, Tensor] | None = None

    def free_lane(self, slot: int) -> int:
        free = np.flatnonzero(~self.lane_used[slot])
        if free.size:
            return int(free[0])
        self._resize(self.lanes + 1, self.explicit.shape[2])
        return self.lanes - 1

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

    def refresh_flags(self) -> None:
        used = self.lane_used
        f, i = self.floats[used], self.ints[used]
        self.use_norm = bool((f[:, ops.F_GAMMA] != 0).any())
        self.use_proj = bool((f[:, ops.F_BETA] != 0).any())
        self.use_mask = bool((i[:, ops.I_MASK] != 0).any())
        self.use_gate = bool((i[:, ops.I_GATE_MODE] != 0).any())

    def upload(self) -> None:
        if not self.dirty:
            return
        # On the CPU these share memory with the host tables; on a GPU they are one copy each.
        self.ints_dev = torch.from_numpy(self.ints).to(self.device)
        self.floats_dev = torch.from_numpy(self.floats).to(self.device)
        self.explicit_dev = torch.from_numpy(self.explicit).to(self.device)
        self.dirty = False


@dataclass
class _LaneRecord:
    site: Site
    lane: int
    unit: np.ndarray
    scale: float
    enabled: bool
    keys: tuple[tuple[str, str], ...]  # (bank name, key) to release
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
        # Global probe columns: (probe key, site) -> column, refcounted.
        self._columns: dict[tuple[str, Site], tuple[int, int]] = {}
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
        touched: set[Site] = set()
        for probe in compiled.probes:
            rec.probe_cols[probe.index] = self._acquire_column(
                probe.key, probe.site, probe.weight, probe.bias
            )
            rec.probe_keys.append((probe.key, probe.site))
            touched.add(probe.site)
        for lens in compiled.lenses:
            self._site(lens.site).lens_k[slot] = lens.k
        for lane in compiled.lanes:
            self._write_lane(slot, rec, lane, positions[lane.index], patch_sources)
            touched.add(lane.site)
            if lane.gate is not None:
                touched.add(lane.gate.site)
        for site in touched:
            self.sites[site].refresh_flags()
        return slot

    def remove(self, key: str) -> None:
        """Free a leaving request's slot, lanes, bank rows and probe columns."""
        rec = self._records.pop(key)
        slot = self._slot_of.pop(key)
        for lr in rec.lanes.values():
            state = self.sites[lr.site]
            state.ints[slot, lr.lane] = 0
            state.floats[slot, lr.lane] = 0
            state.explicit[slot, lr.lane] = -1
            state.lane_used[slot, lr.lane] = False
            state.dirty = True
            for bank, k in lr.keys:
                if bank == "column":
                    self._release_column(k)
                else:
                    getattr(state, bank).release(k)
            self._prev_gates -= lr.prev_gate
            self._maybe_compact(state)
            state.refresh_flags()
        for probe_key, site in rec.probe_keys:
            self._release_column(self._column_id(probe_key, site))
        for state in self.sites.values():
            state.lens_k.pop(slot, None)
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
        state.floats[slot, lr.lane, : ops.F_GATE_THR] = lr.unit * np.float32(factor)
        state.dirty = True
        state.refresh_flags()

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
        state = self._site(lane.site)
        k = state.free_lane(slot)
        keys: list[tuple[str, str]] = []
        ints = np.zeros(ops.N_INT, dtype=np.int64)
        if lane.direction is not None and lane.direction_key is not None:
            ints[ops.I_DIR] = state.dirs.acquire(lane.direction_key, lane.direction)
            keys.append(("dirs", lane.direction_key))
        if lane.mask is not None and lane.mask_key is not None:
            ints[ops.I_MASK] = state.masks.acquire(lane.mask_key, lane.mask)
            keys.append(("masks", lane.mask_key))
        if lane.source is not None and lane.source_key is not None:
            ints[ops.I_SRC] = state.sources.acquire(lane.source_key, lane.source)
            keys.append(("sources", lane.source_key))
        if lane.op == "patch":
            assert patch_sources is not None
            acts = patch_sources[lane.index].reshape(-1, state.width)
            src_key = "patch:" + _tensor_key(acts)
            ints[ops.I_SRC] = state.sources.acquire(src_key, acts)
            keys.append(("sources", src_key))
            src_len = acts.shape[0]
            ints[ops.I_SRC_STEP] = 1
            ints[ops.I_SRC_OFF] = 0 if lane.patch_align == "start" else src_len - rec.prompt_len
            ints[ops.I_SRC_LEN] = src_len
        start, stop, step, explicit = pos
        ints[ops.I_POS_START], ints[ops.I_POS_STOP], ints[ops.I_POS_STEP] = start, stop, step
        floats = np.zeros(ops.N_FLOAT, dtype=np.float32)
        unit = np.asarray(lane.unit, dtype=np.float32)
        floats[: ops.F_GATE_THR] = unit * np.float32(lane.scale if lane.enabled else 0.0)
        if lane.gate is not None:
            g = lane.gate
            ints[ops.I_GATE_COL] = self._acquire_column(g.key, g.site, g.weight, g.bias)
            ints[ops.I_GATE_MODE] = g.mode
            floats[ops.F_GATE_THR], floats[ops.F_GATE_SIGN] = g.threshold, g.sign
            keys.append(("column", self._column_key(g.key, g.site)))
            if g.mode == ops.GATE_PREV_TOKEN:
                self._prev_gates += 1
        if explicit:
            state.ensure_explicit(len(explicit))
            state.explicit[slot, k, : len(explicit)] = explicit
        state.ints[slot, k] = ints
        state.floats[slot, k] = floats
        state.lane_used[slot, k] = True
        state.dirty = True
        prev_gate = lane.gate is not None and lane.gate.mode == ops.GATE_PREV_TOKEN
        rec.lanes[lane.index] = _LaneRecord(
            lane.site, k, unit, lane.scale, lane.enabled, tuple(keys), prev_gate
        )

    def _maybe_compact(self, state: _SiteState) -> None:
        for bank, col in ((state.dirs, ops.I_DIR), (state.masks, ops.I_MASK), (state.sources, ops.I_SRC)):
            remap = bank.compact_map()
            if remap is not None:
                state.ints[:, :, col] = remap[np.clip(state.ints[:, :, col], 0, len(remap) - 1)]
                state.dirty = True

    # ----------------------------------------------------------------- probe columns
    @staticmethod
    def _column_key(probe_key: str, site: Site) -> str:
        return f"{probe_key}|{site[0]}|{site[1]}"

    def _column_id(self, probe_key: str, site: Site) -> str:
        return self._column_key(probe_key, site)

    def _acquire_column(self, probe_key: str, site: Site, weight: Tensor, bias: float) -> int:
        ck = (probe_key, site)
        entry = self._columns.get(ck)
        if entry is not None:
            self._columns[ck] = (entry[0], entry[1] + 1)
            return entry[0]
        if self._free_columns:
            col = self._free_columns.pop()
        else:
            col = self.num_columns
            self.num_columns += 1
            grown = torch.zeros(self.slots, self.num_columns, device=self.device)
            grown[:, : self.last_scores.shape[1]] = self.last_scores
            self.last_scores = grown
        self._columns[ck] = (col, 1)
        state = self._site(site)
        state.probe_keys.append(probe_key)
        state.probe_cols = torch.cat([state.probe_cols, torch.tensor([col])]).to(self.device)
        state.probe_w = torch.cat([state.probe_w.to(self.device), weight.reshape(1, -1).to(self.device)])
        state.probe_b = torch.cat([state.probe_b.to(self.device), torch.tensor([bias], device=self.device)])
        self.last_scores[:, col] = 0
        return col

    def _release_column(self, column_key: str) -> None:
        probe_key, layer, point = column_key.split("|")
        ck = (probe_key, (int(layer), point))
        col, refs = self._columns[ck]
        if refs > 1:
            self._columns[ck] = (col, refs - 1)
            return
        del self._columns[ck]
        self._free_columns.append(col)
        state = self.sites[ck[1]]
        keep = [i for i, c in enumerate(state.probe_cols.tolist()) if c != col]
        state.probe_keys = [state.probe_keys[i] for i in keep]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        state.probe_cols = state.probe_cols[idx]
        state.probe_w = state.probe_w[idx]
        state.probe_b = state.probe_b[idx]

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
        if self._scores is not None and state.probe_keys:
            self._scores.index_copy_(1, state.probe_cols, ops.probe_scores(x, state.probe_w, state.probe_b))
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
            self.last_scores.index_copy_(0, target, scores)
            self.last_scores[0] = 0
        lens: dict[Site, tuple[Tensor, Tensor]] = {
            s.site: s.lens_out for s in self._ordered if s.lens_out is not None
        }
        self._scores = None
        self._in_step = False
        for state in self._ordered:
            state.step = None
        return StepReads(scores=scores, lens=lens)

    def reset_last_scores(self, key: str) -> None:
        self.last_scores[self._slot_of[key]] = 0

    def hooked_sites(self) -> Iterable[Site]:
        return [s.site for s in self._ordered]

    def reads_wanted(self) -> bool:
        return self.num_columns > 0 or any(s.lens_k for s in self._ordered)


def _tensor_key(t: Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


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

"""The runtime tables of one engine's batches (docs/design.md §4): what ``ops.apply_site`` reads.

``BatchPlan`` allocates every table once, at its maximum size (``Capacity``): rows of a forward,
request slots, lanes per site, bank rows, probes, capture rows. Requests change only their contents,
in place, between steps:

* ``add`` / ``remove`` / ``adjust`` (a request joins, leaves, or a slider moves) write one slot's
  lanes at the sites its recipe touches, and acquire or release content-addressed bank rows
  (directions, masks, mean and patch sources) and probe rows;
* ``begin_step`` writes the next forward's per-row slots and positions and the rows to capture
  (logit lens, patch sources, collected activations);
* ``apply`` is ``ops.apply_site`` at one site (the transformers engine calls it from its hooks; the
  vLLM engine traces the same op into its graph);
* ``end_step`` returns the step's reads: probe scores, the lens of the captured rows, captures.

On the CPU the host writes the device tables directly (they share memory); on a GPU the host keeps
a copy and ``begin_step`` copies the sites it changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from interventions import ops
from interventions.compiler import (
    CompiledLane,
    CompiledRecipe,
    Site,
    resolve_positions,
    site_order,
    tensor_key,
)
from interventions.ops import FloatCol, IntCol
from interventions.sites import POINTS, ModelShape
from interventions.spec import MAX_EXPLICIT_POSITIONS, Adjustment

N_INT, N_FLOAT = len(IntCol), len(FloatCol)


class PlanFull(ValueError):
    """A request needs more of a table than the deployment allocated; the message says which."""


@dataclass(frozen=True)
class Capacity:
    """Sizes of the plan's tables, fixed for its life (a deployment setting).

    Args:
        max_rows: token rows of one forward (vLLM's ``max_num_batched_tokens``).
        max_requests: concurrent requests (slots; slot 0 is the null request).
        lanes: write interventions of one request at one site.
        probes_per_site: distinct probes scored at one site.
        probe_rows: distinct (probe, site) pairs resident per width.
        bank_rows: rows of directions, masks and sources per width (patch sources take one per token).
        position_lists: explicit position lists (one per write that names positions).
        capture_rows: rows copied out per step per width (logit-lens rows, captured activations).
        points: the points compiled into the model (others are refused).
    """

    max_rows: int = 512
    max_requests: int = 64
    lanes: int = 4
    probes_per_site: int = 16
    probe_rows: int = 512
    bank_rows: int = 1024
    position_lists: int = 0  # 0: two per request slot
    capture_rows: int = 0  # 0: four forwards' worth
    points: tuple[str, ...] = POINTS

    @property
    def slots(self) -> int:
        return self.max_requests + 1

    @property
    def lists(self) -> int:
        return self.position_lists or 2 * self.slots

    @property
    def captures(self) -> int:
        return self.capture_rows or 4 * self.max_rows + 1


@dataclass(frozen=True)
class StepReads:
    """Reads of one forward step.

    Args:
        scores: ``[rows, columns]`` probe scores by column (None: no probe was scored).
        lens: site -> (ids, probs) ``[rows, k]``, filled on the rows of requests with a lens there.
        captured: capture key -> site -> the captured rows ``[rows, width]``.
        overflow: capture keys whose rows did not fit in the capture buffer this step.
    """

    scores: Tensor | None
    lens: Mapping[Site, tuple[Tensor, Tensor]]
    captured: Mapping[str, Mapping[Site, Tensor]] = field(default_factory=dict)
    overflow: frozenset[str] = frozenset()


class _Mirror:
    """A device table and the host array the plan writes; ``upload`` copies the touched entries."""

    def __init__(self, dev: Tensor) -> None:
        self.dev = dev
        self.shared = dev.device.type == "cpu"
        self.host: np.ndarray = dev.numpy() if self.shared else dev.cpu().numpy()
        self.dirty: set[int] = set()

    def touch(self, i: int) -> None:
        if not self.shared:
            self.dirty.add(i)

    def touch_all(self) -> None:
        if not self.shared:
            self.dirty.update(range(self.host.shape[0]))

    def upload(self) -> None:
        for i in self.dirty:
            self.dev[i].copy_(torch.from_numpy(self.host[i]), non_blocking=True)
        self.dirty.clear()


class _Bank:
    """Content-addressed rows of one width in a fixed table; row 0 is all zeros (the no-op).

    Entries are shared by refcount. Released entries stay resident (the device side of the warm
    cache): a request that reuses a vector rejoins without a copy. When a new entry does not fit,
    the table is compacted in place, dropping them; ``acquire`` then returns an old -> new row map.
    """

    def __init__(self, rows: Tensor, name: str) -> None:
        self.rows, self.name = rows, name
        self.used = 1
        self.entries: dict[str, list[int]] = {}  # key -> [base, count, refs]
        self.stale = 0  # rows held by entries nobody references

    def acquire(self, key: str, values: Tensor) -> tuple[int, np.ndarray | None]:
        entry = self.entries.get(key)
        if entry is not None:
            entry[2] += 1
            if entry[2] == 1:
                self.stale -= entry[1]
            return entry[0], None
        values = values.reshape(-1, self.rows.shape[1])
        n = values.shape[0]
        capacity = self.rows.shape[0]
        remap = None
        if self.used + n > capacity and self.stale:
            remap = self._compact()
        if self.used + n > capacity:
            raise PlanFull(
                f"the {self.name} bank is full: {n} rows needed, {capacity - self.used} free of "
                f"{capacity - 1} (raise the deployment's bank_rows)"
            )
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
        nxt = 1
        for key, (base, n, refs) in sorted(self.entries.items(), key=lambda kv: kv[1][0]):
            if refs == 0:
                del self.entries[key]
                continue
            if base != nxt:  # moving down: a clone makes overlapping ranges safe
                self.rows[nxt : nxt + n].copy_(self.rows[base : base + n].clone())
            remap[base : base + n] = np.arange(nxt, nxt + n)
            self.entries[key] = [nxt, n, refs]
            nxt += n
        self.rows[nxt : self.used].zero_()
        self.used, self.stale = nxt, 0
        return remap


class _Width:
    """The tables of every compiled-in site of one width, with their host-side bookkeeping."""

    def __init__(
        self,
        name: str,
        width: int,
        sites: list[Site],
        cap: Capacity,
        column_offset: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.name, self.width, self.sites = name, width, sites
        self.index = {site: i for i, site in enumerate(sites)}
        n, slots = max(len(sites), 1), cap.slots
        self.tables = ops.WidthTables(
            ints=torch.zeros(n, slots, cap.lanes, N_INT, dtype=torch.long, device=device),
            floats=torch.zeros(n, slots, cap.lanes, N_FLOAT, device=device),
            bank=torch.zeros(cap.bank_rows, width, dtype=dtype, device=device),
            probe_rows=torch.zeros(n, cap.probes_per_site, dtype=torch.long, device=device),
            probe_weight=torch.zeros(cap.probe_rows, width, device=device),
            probe_bias=torch.zeros(cap.probe_rows, device=device),
            probe_col=column_offset + torch.arange(cap.probe_rows, device=device),
            capture_dst=torch.zeros(n, cap.max_rows, dtype=torch.long, device=device),
            capture=torch.zeros(cap.captures, width, dtype=dtype, device=device),
        )
        self.column_offset = column_offset
        self.ints = _Mirror(self.tables.ints)
        self.floats = _Mirror(self.tables.floats)
        self.probe_rows = _Mirror(self.tables.probe_rows)
        self.capture_dst = _Mirror(self.tables.capture_dst)
        self.bank = _Bank(self.tables.bank, f"{name}-width")
        self.slot_lanes = np.zeros((n, slots), dtype=np.int64)  # lanes each slot holds at each site
        # Probe rows: (probe key, site) -> [row, refs]; rows with no reference stay scored (warm)
        # until their space is needed.
        self.probes: dict[tuple[str, Site], list[int]] = {}
        self.probe_of_row: dict[int, tuple[str, Site]] = {}
        self.free_probe_rows = list(range(cap.probe_rows - 1, 0, -1))
        self.lens_k: dict[int, dict[int, int]] = {}  # site index -> slot -> k
        # Site indices as tensors: one compiled graph of the op serves every site (plan.site_fn).
        self.site_ids = [torch.tensor([i], device=device) for i in range(len(sites))]
        self.used_columns = 0  # one past the highest probe row ever used

    def upload(self) -> None:
        for mirror in (self.ints, self.floats, self.probe_rows, self.capture_dst):
            mirror.upload()

    def remap(self, remap: np.ndarray | None) -> None:
        """After a bank compaction: every lane's bank rows move."""
        if remap is None:
            return
        ints = self.ints.host
        for col in (IntCol.DIR, IntCol.MASK, IntCol.SRC):
            ints[..., col] = remap[ints[..., col]]
        self.ints.touch_all()

    # ------------------------------------------------------------------ probes
    def acquire_probe(self, key: str, site: Site, weight: Tensor, bias: float) -> int:
        """The score column of probe ``key`` at ``site``, scored from the next step on."""
        entry = self.probes.get((key, site))
        if entry is not None:
            entry[1] += 1
            return self.column_offset + entry[0]
        i = self.index[site]
        listed = self.probe_rows.host[i]
        free = np.flatnonzero(listed == 0)
        if not len(free):
            self._evict(site_rows=listed)
            free = np.flatnonzero(listed == 0)
            if not len(free):
                raise PlanFull(
                    f"more than {len(listed)} probes at layer {site[0]} {site[1]} "
                    "(raise the deployment's probes_per_site)"
                )
        if not self.free_probe_rows:
            self._evict(site_rows=None)
            if not self.free_probe_rows:
                raise PlanFull(
                    f"all {len(self.probe_of_row)} {self.name}-width probe rows are in use "
                    "(raise the deployment's probe_rows)"
                )
        row = self.free_probe_rows.pop()
        self.tables.probe_weight[row].copy_(weight)
        self.tables.probe_bias[row] = bias
        listed[free[0]] = row
        self.probe_rows.touch(i)
        self.probes[(key, site)] = [row, 1]
        self.probe_of_row[row] = (key, site)
        self.used_columns = max(self.used_columns, row + 1)
        return self.column_offset + row

    def release_probe(self, key: str, site: Site) -> None:
        self.probes[(key, site)][1] -= 1

    def _evict(self, site_rows: np.ndarray | None) -> None:
        """Drop unreferenced probe rows: those listed in ``site_rows``, or all of them."""
        for (key, site), (row, refs) in list(self.probes.items()):
            if refs or (site_rows is not None and row not in site_rows):
                continue
            i = self.index[site]
            listed = self.probe_rows.host[i]
            listed[listed == row] = 0
            self.probe_rows.touch(i)
            del self.probes[(key, site)]
            del self.probe_of_row[row]
            self.tables.probe_weight[row].zero_()
            self.tables.probe_bias[row] = 0.0
            self.free_probe_rows.append(row)


@dataclass(slots=True)
class _LaneRecord:
    width: _Width
    site_index: int
    lane: int
    unit: tuple[float, float, float, float]
    scale: float
    enabled: bool
    bank_keys: tuple[str, ...]  # bank entries to release
    gate: tuple[_Width, str, Site] | None
    prev_gate: bool
    pos_list: int  # row of the position-list table (0: none)


@dataclass
class _SlotRecord:
    key: str
    prompt_len: int
    compiled: CompiledRecipe
    lanes: dict[int, _LaneRecord] = field(default_factory=dict)  # intervention index -> lane
    probe_cols: dict[int, int] = field(default_factory=dict)  # intervention index -> score column
    probe_keys: list[tuple[_Width, str, Site]] = field(default_factory=list)
    positions: dict[int, tuple[int, int, int, list[int]]] = field(default_factory=dict)


@dataclass
class _StepPlan:
    rows: int
    row_slot: np.ndarray
    lens: list[tuple[Site, _Width, int, np.ndarray, np.ndarray]]  # site, width, k, rows, capture rows
    captures: list[tuple[str, Site, _Width, int, int]]  # key, site, width, first capture row, count
    reset: list[tuple[_Width, int]]  # capture_dst entries to clear after the step
    overflow: set[str]


class BatchPlan:
    """The persistent tables of one engine and the requests' slots in them.

    Args:
        shape: layers and widths of the model.
        capacity: the tables' sizes (and the points compiled in).
        device, dtype: where the tables live and the activation dtype.
        lens_fn: final norm + unembedding of residual rows (``ModelAdapter.logit_lens``).
        on_new_site: called once for every site a request first uses (the transformers engine hooks
            it there); None: every compiled-in site runs the op (the vLLM engine's graph).
        site_fn: the site op (``ops.apply_site``, or a ``torch.compile`` of it).
    """

    def __init__(
        self,
        shape: ModelShape,
        capacity: Capacity | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        lens_fn: Callable[[Tensor], Tensor] | None = None,
        on_new_site: Callable[[Site], None] | None = None,
        site_fn: Callable[[Tensor, ops.WidthTables, Tensor, ops.StepTables], Tensor] = ops.apply_site,
    ) -> None:
        cap = capacity or Capacity()
        unknown = set(cap.points) - set(POINTS)
        if unknown:
            raise ValueError(f"unknown points {sorted(unknown)}; valid points: {', '.join(POINTS)}")
        self.shape, self.capacity = shape, cap
        self.device = torch.device(device)
        self.dtype = dtype
        self.lens_fn = lens_fn
        self.on_new_site = on_new_site
        self.site_fn = site_fn
        self.slots = cap.slots
        points = sorted(cap.points, key=lambda p: site_order((0, p)))
        layers = range(shape.num_layers)
        hidden_sites = [(layer, p) for layer in layers for p in points if p != "mlp_act"]
        mlp_sites = [(layer, "mlp_act") for layer in layers] if "mlp_act" in points else []
        self.hidden = _Width("residual", shape.hidden_size, hidden_sites, cap, 0, self.device, dtype)
        self.mlp = _Width("mlp", shape.mlp_size, mlp_sites, cap, cap.probe_rows, self.device, dtype)
        self._width_of: dict[Site, _Width] = {s: self.hidden for s in hidden_sites}
        self._width_of.update({s: self.mlp for s in mlp_sites})
        columns = 2 * cap.probe_rows
        self.step = ops.StepTables(
            row_slot=torch.zeros(cap.max_rows, dtype=torch.long, device=self.device),
            row_pos=torch.zeros(cap.max_rows, dtype=torch.long, device=self.device),
            prompt_len=torch.zeros(cap.slots, dtype=torch.long, device=self.device),
            scores=torch.zeros(cap.max_rows, columns, device=self.device),
            prev_scores=torch.zeros(cap.slots, columns, device=self.device),
            pos_lists=torch.full(
                (cap.lists, MAX_EXPLICIT_POSITIONS), -1, dtype=torch.long, device=self.device
            ),
        )
        self._prompt_len = _Mirror(self.step.prompt_len)
        self._pos_lists = _Mirror(self.step.pos_lists)
        self._free_lists = list(range(cap.lists - 1, 0, -1))
        self.hooked: set[Site] = set()
        self._records: dict[str, _SlotRecord] = {}
        self._slot_of: dict[str, int] = {}
        self._free_slots = list(range(self.slots - 1, 0, -1))
        self._prev_gates = 0
        self._step: _StepPlan | None = None

    # ----------------------------------------------------------------- requests join / leave
    @property
    def sites(self) -> list[Site]:
        """The compiled-in sites, in forward order."""
        return sorted(self._width_of, key=site_order)

    def tables_of(self, site: Site) -> tuple[int, ops.WidthTables]:
        """The tables of ``site``'s width, and its index in them."""
        width = self._width_at(site)
        return width.index[site], width.tables

    def slot_of(self, key: str) -> int:
        return self._slot_of[key]

    def record(self, key: str) -> _SlotRecord:
        return self._records[key]

    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def _width_at(self, site: Site) -> _Width:
        width = self._width_of.get(site)
        if width is None:
            compiled = ", ".join(self.capacity.points)
            raise PlanFull(f"point {site[1]} is not compiled into this deployment (compiled: {compiled})")
        return width

    def check(self, compiled: CompiledRecipe) -> None:
        """Raise PlanFull if ``compiled`` can never fit this plan's tables (checked before admission)."""
        per_site: dict[Site, int] = {}
        for item in compiled.items():
            self._width_at(item.site)
        for lane in compiled.lanes:
            per_site[lane.site] = per_site.get(lane.site, 0) + 1
            if lane.gate is not None:
                self._width_at(lane.gate.site)
        for site, count in per_site.items():
            if count > self.capacity.lanes:
                raise PlanFull(
                    f"{count} write interventions at layer {site[0]} {site[1]}; this deployment "
                    f"applies at most {self.capacity.lanes} per site"
                )

    def add(
        self,
        key: str,
        compiled: CompiledRecipe,
        prompt_len: int,
        patch_sources: Mapping[int, Tensor] | None = None,
    ) -> int:
        """Give a joining request a slot and write its lanes (host work only on join).

        Raises ValueError (``PlanFull`` when a table is full) and leaves the plan as it was.

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
            raise PlanFull(f"all {self.slots - 1} request slots are in use")
        self.check(compiled)
        # Resolve positions first: a bad position must leave the plan as it was.
        positions = {item.index: resolve_positions(item.positions, prompt_len) for item in compiled.items()}
        for lane in compiled.lanes:
            if lane.op == "patch" and (patch_sources is None or lane.index not in patch_sources):
                raise ValueError(f"interventions[{lane.index}]: patch source activations missing")
        slot = self._free_slots.pop()
        rec = _SlotRecord(key=key, prompt_len=prompt_len, compiled=compiled, positions=positions)
        self._records[key] = rec
        self._slot_of[key] = slot
        self._prompt_len.host[slot] = prompt_len
        self._prompt_len.touch(slot)
        try:
            for probe in compiled.probes:
                width = self._width_at(probe.site)
                rec.probe_cols[probe.index] = width.acquire_probe(
                    probe.key, probe.site, probe.weight, probe.bias
                )
                rec.probe_keys.append((width, probe.key, probe.site))
                self._hook(probe.site)
            for lens in compiled.lenses:
                width = self._width_at(lens.site)
                width.lens_k.setdefault(width.index[lens.site], {})[slot] = lens.k
                self._hook(lens.site)
            for lane in compiled.lanes:
                self._write_lane(slot, rec, lane, positions[lane.index], patch_sources)
        except ValueError:
            self.remove(key)
            raise
        return slot

    def remove(self, key: str) -> None:
        """Free a leaving request's slot and lanes; release its bank rows and probe rows."""
        rec = self._records.pop(key)
        slot = self._slot_of.pop(key)
        for lr in rec.lanes.values():
            width = lr.width
            for bank_key in lr.bank_keys:
                width.bank.release(bank_key)
            if lr.gate is not None:
                lr.gate[0].release_probe(lr.gate[1], lr.gate[2])
            self._prev_gates -= lr.prev_gate
            if lr.pos_list:
                self._pos_lists.host[lr.pos_list] = -1
                self._pos_lists.touch(lr.pos_list)
                self._free_lists.append(lr.pos_list)
            # Every lane of the slot at this site goes at once.
            i = lr.site_index
            width.ints.host[i, slot] = 0
            width.floats.host[i, slot] = 0
            width.ints.touch(i)
            width.floats.touch(i)
            width.slot_lanes[i, slot] = 0
        for width, probe_key, site in rec.probe_keys:
            width.release_probe(probe_key, site)
        for lens in rec.compiled.lenses:
            width = self._width_at(lens.site)
            width.lens_k.get(width.index[lens.site], {}).pop(slot, None)
        self._prompt_len.host[slot] = 0
        self._prompt_len.touch(slot)
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
        factor = lr.scale if lr.enabled else 0.0
        slot = self._slot_of[key]
        lr.width.floats.host[lr.site_index, slot, lr.lane, : FloatCol.GATE_THRESHOLD] = [
            u * factor for u in lr.unit
        ]
        lr.width.floats.touch(lr.site_index)

    def ensure_site(self, site: Site) -> None:
        """Make sure ``site`` is hooked (e.g. to capture activations there)."""
        self._width_at(site)
        self._hook(site)

    def _hook(self, site: Site) -> None:
        if site not in self.hooked:
            self.hooked.add(site)
            if self.on_new_site is not None:
                self.on_new_site(site)

    def _write_lane(
        self,
        slot: int,
        rec: _SlotRecord,
        lane: CompiledLane,
        pos: tuple[int, int, int, list[int]],
        patch_sources: Mapping[int, Tensor] | None,
    ) -> None:
        width = self._width_at(lane.site)
        bank_keys: list[str] = []
        if pos[3] and not self._free_lists:
            raise PlanFull(f"all {self.capacity.lists - 1} position lists are in use")
        try:
            self._fill_lane(slot, rec, lane, pos, patch_sources, width, bank_keys)
        except ValueError:
            for key in bank_keys:  # a table filled up half way: give back what this lane took
                width.bank.release(key)
            raise

    def _fill_lane(  # the lane's rows and columns; what it acquired is listed in bank_keys
        self,
        slot: int,
        rec: _SlotRecord,
        lane: CompiledLane,
        pos: tuple[int, int, int, list[int]],
        patch_sources: Mapping[int, Tensor] | None,
        width: _Width,
        bank_keys: list[str],
    ) -> None:
        i = width.index[lane.site]
        k = int(width.slot_lanes[i, slot])
        ints = np.zeros(N_INT, dtype=np.int64)

        def row(key: str, values: Tensor) -> int:
            base, remap = width.bank.acquire(key, values)
            if remap is not None:  # the bank was compacted: rows taken so far moved too
                width.remap(remap)
                for col in (IntCol.DIR, IntCol.MASK, IntCol.SRC):
                    ints[col] = remap[ints[col]]
            bank_keys.append(key)
            return base

        if lane.direction_key is not None and lane.direction is not None:
            ints[IntCol.DIR] = row(lane.direction_key, lane.direction)
        if lane.mask_key is not None and lane.mask is not None:
            ints[IntCol.MASK] = row(lane.mask_key, lane.mask)
        if lane.source_key is not None and lane.source is not None:
            ints[IntCol.SRC] = row(lane.source_key, lane.source)
        if lane.op == "patch":
            assert patch_sources is not None
            acts = patch_sources[lane.index].reshape(-1, width.width)
            ints[IntCol.SRC] = row("patch:" + tensor_key(acts), acts)
            ints[IntCol.SRC_LEN] = acts.shape[0]
            ints[IntCol.SRC_STEP] = 1
            ints[IntCol.SRC_OFF] = 0 if lane.patch_align == "start" else acts.shape[0] - rec.prompt_len
        threshold = sign = 0.0
        gate = None
        g = lane.gate
        if g is not None:
            gate_width = self._width_at(g.site)
            ints[IntCol.GATE_COL] = gate_width.acquire_probe(g.key, g.site, g.weight, g.bias)
            ints[IntCol.GATE_MODE] = g.mode
            threshold, sign = g.threshold, g.sign
            gate = (gate_width, g.key, g.site)
            self._hook(g.site)
        prev_gate = g is not None and g.mode == ops.GATE_PREV_TOKEN
        start, stop, step, explicit = pos
        ints[IntCol.POS_START], ints[IntCol.POS_STOP], ints[IntCol.POS_STEP] = start, stop, step
        pos_list = 0
        if explicit:
            pos_list = self._free_lists.pop()
            self._pos_lists.host[pos_list] = -1
            self._pos_lists.host[pos_list, : len(explicit)] = explicit
            self._pos_lists.touch(pos_list)
            ints[IntCol.POS_LIST] = pos_list
        factor = lane.scale if lane.enabled else 0.0
        unit = lane.unit
        width.ints.host[i, slot, k] = ints
        width.floats.host[i, slot, k] = (
            unit[0] * factor,
            unit[1] * factor,
            unit[2] * factor,
            unit[3] * factor,
            threshold,
            sign,
        )
        width.ints.touch(i)
        width.floats.touch(i)
        width.slot_lanes[i, slot] = k + 1
        self._prev_gates += prev_gate
        rec.lanes[lane.index] = _LaneRecord(
            width, i, k, unit, lane.scale, lane.enabled, tuple(bank_keys), gate, prev_gate, pos_list
        )
        self._hook(lane.site)

    # ----------------------------------------------------------------- per step
    def reserve_rows(self, rows: int) -> None:
        """Grow the per-row tables to ``rows`` (only for eager callers: a compiled graph holds the
        old tensors)."""
        cap = self.capacity
        if rows <= cap.max_rows:
            return
        self.capacity = cap = Capacity(**{**cap.__dict__, "max_rows": rows})
        step = self.step
        step.row_slot = torch.zeros(rows, dtype=torch.long, device=self.device)
        step.row_pos = torch.zeros(rows, dtype=torch.long, device=self.device)
        step.scores = torch.zeros(rows, step.scores.shape[1], device=self.device)
        for width in (self.hidden, self.mlp):
            width.tables.capture_dst = torch.zeros(
                width.tables.capture_dst.shape[0], rows, dtype=torch.long, device=self.device
            )
            width.capture_dst = _Mirror(width.tables.capture_dst)

    def begin_step(
        self,
        row_slot: np.ndarray,
        row_pos: Tensor,
        captures: Mapping[Site, Sequence[tuple[str, int, int]]] | None = None,
    ) -> None:
        """Write the next forward's layout into the tables.

        Args:
            row_slot: ``[rows]`` each row's request slot (0: padding or a request not in the plan).
            row_pos: ``[rows]`` long, each row's absolute token position (on the plan's device).
            captures: site -> ``(key, first row, end row)`` ranges of rows to copy out (patch
                sources and collected activations of requests outside the plan).
        """
        n = len(row_slot)
        if n > self.capacity.max_rows:
            raise ValueError(f"a forward of {n} rows exceeds the plan's {self.capacity.max_rows}")
        row_slot = np.ascontiguousarray(row_slot, dtype=np.int64)
        self.step.row_slot[:n].copy_(torch.from_numpy(row_slot), non_blocking=True)
        self.step.row_pos[:n].copy_(row_pos)
        step = _StepPlan(rows=n, row_slot=row_slot, lens=[], captures=[], reset=[], overflow=set())
        self._plan_captures(step, captures or {})
        for mirror in (self._prompt_len, self._pos_lists):
            mirror.upload()
        self.hidden.upload()
        self.mlp.upload()
        self._step = step

    def _plan_captures(
        self, step: _StepPlan, captures: Mapping[Site, Sequence[tuple[str, int, int]]]
    ) -> None:
        # Capture rows are handed out in order; what does not fit is reported, never silently cut.
        free = {id(self.hidden): 1, id(self.mlp): 1}
        limit = self.capacity.captures
        for width in (self.hidden, self.mlp):
            for i, by_slot in width.lens_k.items():
                if not by_slot:
                    continue
                rows = np.flatnonzero(np.isin(step.row_slot, list(by_slot)))
                if not len(rows):
                    continue
                first = free[id(width)]
                if first + len(rows) > limit:
                    step.overflow.update(self._records_key(int(s)) for s in np.unique(step.row_slot[rows]))
                    continue
                dst = np.arange(first, first + len(rows))
                free[id(width)] = first + len(rows)
                width.capture_dst.host[i, rows] = dst
                width.capture_dst.touch(i)
                step.reset.append((width, i))
                k = max(by_slot.values())
                step.lens.append((width.sites[i], width, k, rows, dst))
        for site, ranges in captures.items():
            width = self._width_at(site)
            i = width.index[site]
            for key, a, b in ranges:
                first = free[id(width)]
                if first + (b - a) > limit:
                    step.overflow.add(key)
                    continue
                free[id(width)] = first + (b - a)
                width.capture_dst.host[i, a:b] = np.arange(first, first + b - a)
                width.capture_dst.touch(i)
                step.reset.append((width, i))
                step.captures.append((key, site, width, first, b - a))

    def _records_key(self, slot: int) -> str:
        return next(k for k, s in self._slot_of.items() if s == slot)

    def apply(self, site: Site, h: Tensor) -> Tensor:
        """The site op at ``site`` (the transformers engine's hooks call it): reads, then lanes."""
        width = self._width_at(site)
        shape = h.shape
        x = h.reshape(-1, width.width)
        if self._step is None or x.shape[0] != self._step.rows:
            # A forward the plan was not prepared for would apply stale per-row tables.
            prepared = self._step.rows if self._step is not None else "no"
            raise RuntimeError(
                f"forward through a hooked model outside a plan step ({x.shape[0]} rows, {prepared} prepared)"
            )
        return self.site_fn(x, width.tables, width.site_ids[width.index[site]], self.step).reshape(shape)

    def end_step(self) -> StepReads:
        """Finish a forward: the step's reads; each request's last scores (previous-token gates)."""
        step = self._step
        assert step is not None, "end_step without begin_step"
        self._step = None
        n = step.rows
        columns = (
            self.mlp.column_offset + self.mlp.used_columns
            if self.mlp.used_columns
            else self.hidden.used_columns
        )
        scores = self.step.scores[:n, :columns].clone() if columns else None
        if scores is not None and self._prev_gates:
            slot = self.step.row_slot[:n]
            last = ops.last_row_of_each_request(slot)
            # Rows that are not a request's last write into the null slot 0, whose value is unused.
            target = torch.where(last, slot, 0)
            self.step.prev_scores[:, :columns].index_copy_(0, target, scores)
            self.step.prev_scores[0] = 0
        lens: dict[Site, tuple[Tensor, Tensor]] = {}
        if step.lens:
            assert self.lens_fn is not None, "a logit lens needs the plan's lens_fn"
            for site, width, k, rows, dst in step.lens:
                acts = width.tables.capture[torch.from_numpy(dst).to(self.device)]
                ids, probs = ops.lens_topk(self.lens_fn(acts), k)
                at = torch.from_numpy(rows).to(self.device)
                all_ids = torch.zeros(n, k, dtype=ids.dtype, device=self.device).index_copy_(0, at, ids)
                all_probs = torch.zeros(n, k, dtype=probs.dtype, device=self.device).index_copy_(0, at, probs)
                lens[site] = (all_ids, all_probs)
        captured: dict[str, dict[Site, Tensor]] = {}
        for key, site, width, first, count in step.captures:
            captured.setdefault(key, {})[site] = width.tables.capture[first : first + count].clone()
        for width, i in step.reset:
            width.capture_dst.host[i] = 0
            width.capture_dst.touch(i)
        return StepReads(scores=scores, lens=lens, captured=captured, overflow=frozenset(step.overflow))


def padded_layout(attention_mask: Tensor, slots: Sequence[int]) -> tuple[np.ndarray, Tensor]:
    """Row slots and positions for a padded ``[batch, seq]`` forward.

    Args:
        attention_mask: ``[batch, seq]`` 1 for real tokens (left or right padding).
        slots: the plan slot of each batch row.

    Returns:
        ``(row_slot, row_pos)`` flattened to ``[batch * seq]``; padding rows get slot 0.
    """
    mask = attention_mask.to(torch.long)
    pos = (mask.cumsum(dim=1) - 1).clamp_min(0)
    slot = torch.tensor(list(slots), dtype=torch.long)[:, None].expand_as(mask)
    row_slot = torch.where(mask.bool().cpu(), slot, 0).reshape(-1)
    return row_slot.numpy(), pos.reshape(-1)

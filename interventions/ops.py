"""The site ops: pure tensor code over persistent tables (docs/design.md §4). Imports only torch.

Every site of a model (a layer and a point) runs ``apply_site`` on its activation rows ``x`` of shape
``[rows, width]`` (the flattened batch: packed ``[1, tokens]`` batches of both engines, or padded
``[batch, seq]`` batches reshaped). Everything the op reads lives in tensors allocated once at their
maximum sizes and updated in place between steps (``plan.BatchPlan`` fills them): the op holds no
Python callback, no host sync and no branch on data or on Python state, so Dynamo traces it into the
model's graph and a CUDA graph captured once replays it with whatever the tables hold. An idle lane
is a lane whose coefficients are zero.

One *lane* is one write intervention of one request at one site. Every write op of the language is
an instance of one update, with per-row coefficients ``c = (alpha, gamma, beta, s)``::

    h <- h + (alpha + gamma * |h| + beta * (h . d)) * d  +  s * m * (u - h)

* steer:        alpha = scale (gamma = scale for ``resid_norm``), d = the vector
* project_out:  beta = -scale, d = unit direction
* clamp:        alpha = scale * value, beta = -scale, d = unit direction
* ablate:       s = scale, m = 1 on the ablated dims, u = 0 (or the mean vector)
* patch:        s = scale, m = 1 everywhere, u = the source prompt's activation at the mapped position

Rows a lane does not select get c = 0, which leaves ``h`` bit-for-bit unchanged (all bank rows are
finite), so requests without interventions are untouched by their neighbours' lanes.

Reads happen on the incoming activation, before the site's writes: probe scores go into the step's
score buffer (one matmul per site over the probes scored there), and rows that a logit lens (or an
activation capture) wants are copied into a capture buffer that the host reads after the step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor


class IntCol(enum.IntEnum):
    """Columns of the per-lane integer table ``WidthTables.ints[site, slot, lane]``."""

    DIR = 0  # bank row of the direction d
    MASK = 1  # bank row of the mask m
    SRC = 2  # bank row of the replacement u (of position 0 of a patch source)
    SRC_STEP = 3  # 1 for a patch (u follows the position), 0 otherwise
    SRC_OFF = 4  # patch: source position = position + SRC_OFF
    SRC_LEN = 5  # patch: rows of the source (positions outside are not patched)
    POS_START = 6  # the lane's positions: start:stop:step, or the explicit list POS_LIST
    POS_STOP = 7
    POS_STEP = 8
    POS_LIST = 9  # row of StepTables.pos_lists (0: the empty list)
    GATE_COL = 10  # score column of the gate's probe
    GATE_MODE = 11  # GATE_NONE / GATE_SAME_TOKEN / GATE_PREV_TOKEN


class FloatCol(enum.IntEnum):
    """Columns of the per-lane float table ``WidthTables.floats[site, slot, lane]``."""

    ALPHA = 0
    GAMMA = 1
    BETA = 2
    S = 3
    GATE_THRESHOLD = 4
    GATE_SIGN = 5  # +1: open above the threshold, -1: below


GATE_NONE, GATE_SAME_TOKEN, GATE_PREV_TOKEN = 0, 1, 2


@dataclass(eq=False)
class StepTables:
    """Per-step tables shared by every site (rows of the flattened batch, slots of requests).

    Args:
        row_slot: ``[max_rows]`` int64, each row's request slot (0: no request, e.g. padding).
        row_pos: ``[max_rows]`` int64, each row's absolute token position.
        prompt_len: ``[slots]`` int64, each slot's prompt length (previous-token gates need it).
        scores: ``[max_rows, columns]`` float32, this step's probe scores (column 0 is scratch).
        prev_scores: ``[slots, columns]`` float32, each request's scores at its previous token.
        pos_lists: ``[lists, m]`` int64, explicit position lists, ``-1`` padded (row 0 empty).
    """

    row_slot: Tensor
    row_pos: Tensor
    prompt_len: Tensor
    scores: Tensor
    prev_scores: Tensor
    pos_lists: Tensor


@dataclass(eq=False)
class WidthTables:
    """Tables of every site of one activation width (the residual width, or the MLP width).

    Args:
        ints: ``[sites, slots, lanes, len(IntCol)]`` int64 per-lane indices.
        floats: ``[sites, slots, lanes, len(FloatCol)]`` float32 per-lane coefficients at scale.
        bank: ``[bank_rows, width]`` directions, masks and replacement rows (row 0 all zeros).
        probe_rows: ``[sites, probes_per_site]`` int64, the probe rows scored at each site (0: none).
        probe_weight: ``[probe_rows, width]`` float32 (row 0 zeros).
        probe_bias: ``[probe_rows]`` float32.
        probe_col: ``[probe_rows]`` int64, the score column of each probe row.
        capture_dst: ``[sites, max_rows]`` int64, the capture row each batch row is copied to (0: none).
        capture: ``[capture_rows, width]`` rows copied for the host (row 0 is scratch).
    """

    ints: Tensor
    floats: Tensor
    bank: Tensor
    probe_rows: Tensor
    probe_weight: Tensor
    probe_bias: Tensor
    probe_col: Tensor
    capture_dst: Tensor
    capture: Tensor


def apply_site(x: Tensor, t: WidthTables, site: int | Tensor, s: StepTables) -> Tensor:
    """Reads, then every lane, at one site: ``x [rows, width]`` in, the new activation out.

    ``site`` is the site's index in ``t``: a constant of the graph it is traced into (like the layer
    the site is in), or a one-element tensor, so that one graph serves every site. The reads write into
    ``s.scores`` and ``t.capture`` in place; ``x`` itself is not modified.
    """
    n = x.shape[0]
    slot = s.row_slot[:n]
    pos = s.row_pos[:n]
    # Reads on the incoming activation.
    rows = _pick(t.probe_rows, site)
    scores = torch.addmm(
        t.probe_bias.index_select(0, rows), x.float(), t.probe_weight.index_select(0, rows).t()
    )
    s.scores[:n].index_copy_(1, t.probe_col.index_select(0, rows), scores)
    t.capture.index_copy_(0, _pick(t.capture_dst, site)[:n], x)
    # The lanes' per-row coefficients, from their request's slot and the row's position.
    ints = _pick(t.ints, site).index_select(0, slot)  # [n, lanes, len(IntCol)]
    floats = _pick(t.floats, site).index_select(0, slot)
    selected = position_mask(
        pos,
        ints[..., IntCol.POS_START],
        ints[..., IntCol.POS_STOP],
        ints[..., IntCol.POS_STEP],
        s.pos_lists[ints[..., IntCol.POS_LIST]],
    )
    src_pos = pos[:, None] + ints[..., IntCol.SRC_OFF]
    src_step = ints[..., IntCol.SRC_STEP]
    in_source = (src_step == 0) | ((src_pos >= 0) & (src_pos < ints[..., IntCol.SRC_LEN]))
    src_row = torch.where(in_source, ints[..., IntCol.SRC] + src_step * src_pos, 0)
    gate_col = ints[..., IntCol.GATE_COL]
    gate_open = gate_pass(
        floats[..., FloatCol.GATE_THRESHOLD],
        floats[..., FloatCol.GATE_SIGN],
        ints[..., IntCol.GATE_MODE],
        s.scores[:n].gather(1, gate_col),
        s.prev_scores[slot[:, None], gate_col],
        pos >= s.prompt_len.index_select(0, slot),
    )
    coef = floats[..., : FloatCol.GATE_THRESHOLD] * (selected & in_source & gate_open)[..., None]
    d_row, m_row = ints[..., IntCol.DIR], ints[..., IntCol.MASK]
    for k in range(coef.shape[1]):  # the lane count is a static size
        x = lane_update(x, coef[:, k], t.bank[d_row[:, k]], t.bank[m_row[:, k]], t.bank[src_row[:, k]])
    return x


def _rows(table: Tensor, index: Tensor) -> Tensor:
    return table.index_select(0, index)  # cheaper than advanced indexing for one dimension


def _pick(table: Tensor, site: int | Tensor) -> Tensor:
    # A one-element index tensor is data to Dynamo (a 0-d one or an int would be specialized on).
    return table[site] if isinstance(site, int) else table.index_select(0, site)[0]


def position_mask(pos: Tensor, start: Tensor, stop: Tensor, step: Tensor, explicit: Tensor) -> Tensor:
    """Which rows each lane selects.

    Args:
        pos: ``[rows]`` absolute token positions.
        start, stop, step: ``[rows, lanes]`` the lane's position range ``start:stop:step`` (an empty
            range when the lane uses explicit positions).
        explicit: ``[rows, lanes, m]`` explicit positions, ``-1`` padded.

    Returns:
        ``[rows, lanes]`` bool.
    """
    p = pos[:, None]
    # Unused lanes (and the null slot) hold an empty range with step 0.
    in_range = (p >= start) & (p < stop) & (torch.remainder(p - start, step.clamp_min(1)) == 0)
    return in_range | (explicit == p[:, :, None]).any(dim=-1)


def gate_pass(
    threshold: Tensor, sign: Tensor, mode: Tensor, same: Tensor, prev: Tensor, generated: Tensor
) -> Tensor:
    """Whether each lane's gate is open on each row (always, for a lane without a gate).

    Args:
        threshold, sign: ``[rows, lanes]`` the gate's threshold and direction (+1 above, -1 below).
        mode: ``[rows, lanes]`` GATE_NONE / GATE_SAME_TOKEN / GATE_PREV_TOKEN.
        same: ``[rows, lanes]`` the gate probe's score on this row (this step).
        prev: ``[rows, lanes]`` its score at the previous token of the row's request.
        generated: ``[rows]`` bool, the row is a generated token (previous-token gates need one).
    """
    score = torch.where(mode == GATE_PREV_TOKEN, prev, same)
    crossed = (score - threshold) * sign > 0
    crossed = crossed & ((mode != GATE_PREV_TOKEN) | generated[:, None])
    return (mode == GATE_NONE) | crossed


def lane_update(h: Tensor, coef: Tensor, d: Tensor, m: Tensor, u: Tensor) -> Tensor:
    """Apply one lane to every row: ``h + (alpha + gamma|h| + beta h.d) d + s m (u - h)``.

    Args:
        h: ``[rows, width]`` activations.
        coef: ``[rows, 4]`` per-row ``(alpha, gamma, beta, s)``, already selected, gated and scaled.
        d, m, u: ``[rows, width]`` per-row direction, mask and replacement (bank rows gathered).
    """
    coef = coef.to(h.dtype)
    factor = coef[:, 0] + coef[:, 1] * torch.linalg.vector_norm(h, dim=-1) + coef[:, 2] * (h * d).sum(dim=-1)
    out = h + factor[:, None] * d
    # lerp is exact at weight 0 (untouched) and 1 (fully replaced), unlike h + s * (u - h).
    return torch.lerp(out, u, coef[:, 3, None] * m)


def lens_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k token ids and their probabilities from lens logits ``[rows, vocab]``."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = torch.topk(probs, k, dim=-1)
    return ids, values


def last_row_of_each_request(row_slot: Tensor) -> Tensor:
    """Bool ``[rows]``: the row is its request's last row in this (packed, contiguous) batch."""
    nxt = torch.cat([row_slot[1:], row_slot.new_full((1,), -1)])
    return nxt != row_slot

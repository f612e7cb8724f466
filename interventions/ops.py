"""The batched tensor ops that apply a plan: static shapes, no host sync, no per-request Python.

Every op works on activation rows ``h`` of shape ``[rows, width]`` (the flattened batch: packed
``[1, tokens]`` batches of the transformers and vLLM engines, or padded ``[batch, seq]`` batches
reshaped) together with per-row tables that ``plan.BatchPlan`` fills before each forward step.

One *lane* is one write intervention slot at a site. Every write op of the language is an instance
of one update, with per-row coefficients ``c = (alpha, gamma, beta, s)``::

    h <- h + (alpha + gamma * |h| + beta * (h . d)) * d  +  s * m * (u - h)

* steer:        alpha = scale (gamma = scale for ``resid_norm``), d = the vector
* project_out:  beta = -scale, d = unit direction
* clamp:        alpha = scale * value, beta = -scale, d = unit direction
* ablate:       s = scale, m = 1 on the ablated dims, u = 0 (or the mean vector)
* patch:        s = scale, m = 1 everywhere, u = the source prompt's activation at the mapped position

Rows a lane does not select get c = 0, which leaves ``h`` bit-for-bit unchanged (all bank rows are
finite), so requests without interventions are untouched by their neighbours' lanes.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Columns of the per-lane integer table (see plan.py).
I_DIR, I_MASK, I_SRC, I_SRC_STEP, I_SRC_OFF, I_SRC_LEN = 0, 1, 2, 3, 4, 5
I_POS_START, I_POS_STOP, I_POS_STEP, I_GATE_COL, I_GATE_MODE = 6, 7, 8, 9, 10
N_INT = 11
# Columns of the per-lane float table.
F_ALPHA, F_GAMMA, F_BETA, F_S, F_GATE_THR, F_GATE_SIGN = 0, 1, 2, 3, 4, 5
N_FLOAT = 6

GATE_NONE, GATE_SAME_TOKEN, GATE_PREV_TOKEN = 0, 1, 2


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
    if explicit.shape[-1] == 0:
        return in_range
    return in_range | (explicit == p[:, :, None]).any(dim=-1)


def lane_update(
    h: Tensor,
    coef: Tensor,
    d: Tensor,
    m: Tensor | None,
    u: Tensor | None,
    *,
    use_norm: bool,
    use_proj: bool,
) -> Tensor:
    """Apply one lane to every row: ``h + (alpha + gamma|h| + beta h.d) d + s m (u - h)``.

    Args:
        h: ``[rows, width]`` activations.
        coef: ``[rows, 4]`` per-row ``(alpha, gamma, beta, s)`` already gated and scaled.
        d: ``[rows, width]`` per-row direction (bank rows gathered).
        m, u: ``[rows, width]`` per-row mask and replacement values, or None when no lane at this
            site needs the mask term (a static property of the current batch).
        use_norm, use_proj: whether any row needs the ``|h|`` / ``h.d`` terms (static per batch).
    """
    coef = coef.to(h.dtype)
    factor = coef[:, 0]
    if use_norm:
        factor = factor + coef[:, 1] * torch.linalg.vector_norm(h, dim=-1)
    if use_proj:
        factor = factor + coef[:, 2] * (h * d).sum(dim=-1)
    out = h + factor[:, None] * d
    if m is not None and u is not None:
        # lerp is exact at weight 0 (untouched) and 1 (fully replaced), unlike h + s * (u - h).
        out = torch.lerp(out, u, coef[:, 3, None] * m)
    return out


def gate_pass(
    coef_gate: Tensor,
    mode: Tensor,
    col: Tensor,
    scores: Tensor,
    prev_scores: Tensor,
    generated: Tensor,
) -> Tensor:
    """Whether each row's gate is open (True where the lane has no gate).

    Args:
        coef_gate: ``[rows, 2]`` threshold and sign (+1 above, -1 below).
        mode: ``[rows]`` GATE_NONE / GATE_SAME_TOKEN / GATE_PREV_TOKEN.
        col: ``[rows]`` column of the gate probe in the score buffers (clamped to >= 0).
        scores: ``[rows, probes]`` this step's scores (columns of earlier sites already filled).
        prev_scores: ``[rows, probes]`` the previous token's scores of each row's request.
        generated: ``[rows]`` bool, the row is a generated token (previous-token gates need one).
    """
    same = scores.gather(1, col[:, None]).squeeze(1)
    prev = prev_scores.gather(1, col[:, None]).squeeze(1)
    score = torch.where(mode == GATE_PREV_TOKEN, prev, same)
    crossed = (score - coef_gate[:, 0]) * coef_gate[:, 1] > 0
    crossed = crossed & ((mode != GATE_PREV_TOKEN) | generated)
    return (mode == GATE_NONE) | crossed


def probe_scores(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Scores ``h @ W.T + b`` of a probe bank, in float32: ``[rows, width] -> [rows, probes]``."""
    return torch.addmm(bias, h.float(), weight.t())


def lens_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k token ids and their probabilities from lens logits ``[rows, vocab]``."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = torch.topk(probs, k, dim=-1)
    return ids, values


def last_row_of_each_request(row_slot: Tensor) -> Tensor:
    """Bool ``[rows]``: the row is its request's last row in this (packed, contiguous) batch."""
    nxt = torch.cat([row_slot[1:], row_slot.new_full((1,), -1)])
    return nxt != row_slot

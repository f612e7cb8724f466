"""Per-request seeded sampling for a whole batch in one set of tensor ops.

transformers' continuous batching samples with one global generator, so a request's tokens would
depend on its neighbours. Here each logits row draws its noise from a counter-based hash of
``(seed, position, token id)``: Gumbel-max sampling with noise that depends only on the request's
own seed and the position being sampled, never on the batch. Greedy rows (temperature 0) take the
argmax; forced rows (teacher forcing, replay) take the given token.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    # A 32-bit integer finaliser evaluated in int64 with multipliers below 2**31, so products never
    # overflow int64 (overflow behaviour differs between devices).
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x446CA68B) & _MASK32
    return x ^ (x >> 16)


def uniform_noise(seed: Tensor, position: Tensor, vocab: int) -> Tensor:
    """Uniforms in (0, 1), ``[rows, vocab]``, a pure function of each row's (seed, position)."""
    row = _mix32((seed.long() & _MASK32) ^ _mix32((position.long() * 0x61C88647) & _MASK32))
    ids = torch.arange(vocab, device=seed.device, dtype=torch.long)
    bits = _mix32(row[:, None] ^ ((ids[None, :] * 0x27D4EB2F) & _MASK32))
    return (bits.double() + 0.5) / 4294967296.0


class Drawn(NamedTuple):
    tokens: Tensor  # [rows]
    logprobs: Tensor  # [rows], each token's
    top: tuple[Tensor, Tensor] | None  # ([rows, k] logprobs, [rows, k] token ids), most likely first


def sample(
    logits: Tensor,
    temperature: Tensor,
    top_p: Tensor,
    seed: Tensor,
    position: Tensor,
    forced: Tensor,
    any_sampling: bool,
    top_k: int = 0,
) -> Drawn:
    """Choose one token per row.

    Args:
        logits: ``[rows, vocab]`` float32 next-token logits.
        temperature: ``[rows]``; 0 means greedy.
        top_p: ``[rows]`` nucleus mass in (0, 1].
        seed: ``[rows]`` per-request seeds.
        position: ``[rows]`` absolute position of the token being sampled.
        forced: ``[rows]`` token to emit instead (-1: none).
        any_sampling: False when every row is greedy (skips the noise entirely).
        top_k: also return each row's ``top_k`` most likely tokens (0: none), under the same
            distribution as its token's logprob.

    Returns:
        The tokens and their logprobs; a sampled token's logprob is under its tempered
        distribution, a greedy or forced token's under the raw logits.
    """
    logp = torch.log_softmax(logits, dim=-1)
    tokens = torch.argmax(logits, dim=-1)
    if any_sampling:
        greedy = temperature <= 0
        temp = torch.where(greedy, torch.ones_like(temperature), temperature)
        tempered = torch.log_softmax(logits / temp[:, None], dim=-1)
        probs = tempered.exp()
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        keep_sorted = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p[:, None]
        keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
        gumbel = -torch.log(-torch.log(uniform_noise(seed, position, logits.shape[-1]))).to(logits.dtype)
        scores = torch.where(keep, tempered + gumbel, torch.finfo(logits.dtype).min)
        drawn = torch.argmax(scores, dim=-1)
        tokens = torch.where(greedy, tokens, drawn)
        logp = torch.where(greedy[:, None], logp, tempered)
    tokens = torch.where(forced >= 0, forced, tokens)
    top = None
    if top_k:
        values, ids = torch.topk(logp, min(top_k, logp.shape[-1]), dim=-1)
        top = (values, ids)
    return Drawn(tokens, logp.gather(1, tokens[:, None]).squeeze(1), top)

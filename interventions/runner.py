"""Plain padded forward passes with per-row recipes (no KV cache, no engine).

Serves what needs whole prompts at once rather than generation: collecting activations over a
dataset, scoring probes on evaluation data, and checking the ops' math. Each batch row is a request
with its own compiled recipe, applied through the same ``BatchPlan`` the engines use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interventions.compiler import CompiledRecipe, Site
from interventions.plan import BatchPlan, Capacity, StepReads, padded_layout
from interventions.sites import adapter_for, install_hook


@dataclass(frozen=True)
class ForwardResult:
    logits: Tensor  # [batch, seq, vocab]
    reads: StepReads  # rows are batch-major: row = b * seq + s
    captured: dict[Site, tuple[Tensor, Tensor]]  # site -> (before writes, after writes), [batch, seq, width]
    slots: list[int]
    columns: list[dict[int, int]]  # per row: probe intervention index -> column of reads.scores

    def probe_scores(self, row: int, index: int) -> Tensor:
        """Scores ``[seq]`` of row ``row``'s probe at intervention ``index``."""
        assert self.reads.scores is not None
        seq = self.logits.shape[1]
        return self.reads.scores[row * seq : (row + 1) * seq, self.columns[row][index]]


class PlainRunner:
    """Runs padded batches through a transformers model with per-row interventions.

    Args:
        model: a causal LM of a supported family.
        max_requests: rows per forward.
    """

    def __init__(self, model: nn.Module, *, max_requests: int = 64) -> None:
        self.model = model.eval()
        self.adapter = adapter_for(model)
        param = next(model.parameters())
        self.plan = BatchPlan(
            self.adapter.shape(),
            Capacity(max_requests=max_requests, probes_per_site=64, probe_rows=256),
            device=param.device,
            dtype=param.dtype,
            lens_fn=self.adapter.logit_lens,
            on_new_site=self._install,
        )
        self._capture: dict[Site, tuple[Tensor, Tensor]] | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _install(self, site: Site) -> None:
        plan = self.plan

        def hook(h: Tensor) -> Tensor:
            out = plan.apply(site, h)
            if self._capture is not None:
                self._capture[site] = (h.detach().clone(), out.detach().clone())
            return out

        self._handles.append(install_hook(self.adapter.locate(*site), hook))

    @torch.no_grad()
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        recipes: Sequence[CompiledRecipe] | None = None,
        capture: Sequence[Site] = (),
        patch_sources: Sequence[dict[int, Tensor] | None] | None = None,
    ) -> ForwardResult:
        """One forward of ``input_ids [batch, seq]``; row b runs ``recipes[b]``.

        Args:
            input_ids: token ids, right- or left-padded.
            attention_mask: 1 for real tokens (default: all real).
            recipes: one compiled recipe per row (default: none).
            capture: sites whose activations to return, before and after the writes.
            patch_sources: per row, the source activations of its patch lanes.
        """
        batch = input_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keys = [f"row{b}" for b in range(batch)]
        lengths = attention_mask.sum(dim=1).tolist()
        slots = []
        try:
            for b in range(batch):
                recipe = recipes[b] if recipes is not None else None
                if recipe is None:
                    slots.append(0)
                    continue
                sources = patch_sources[b] if patch_sources is not None else None
                slots.append(self.plan.add(keys[b], recipe, int(lengths[b]), sources))
            for site in capture:
                self.plan.ensure_site(site)
            row_slot, row_pos = padded_layout(attention_mask, slots)
            self.plan.reserve_rows(len(row_slot))  # eager: the per-row tables grow with the batch
            self.plan.begin_step(row_slot, row_pos.to(input_ids.device))
            self._capture = {}
            position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)
            logits = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).logits
            reads = self.plan.end_step()
            columns = [dict(self.plan.record(k).probe_cols) if k in self.plan else {} for k in keys]
            captured = {
                site: (
                    before.reshape(batch, input_ids.shape[1], -1),
                    after.reshape(batch, input_ids.shape[1], -1),
                )
                for site, (before, after) in self._capture.items()
                if site in capture
            }
        finally:
            self._capture = None
            for key in keys:
                if key in self.plan:
                    self.plan.remove(key)
        return ForwardResult(logits=logits, reads=reads, captured=captured, slots=slots, columns=columns)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

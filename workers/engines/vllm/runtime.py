"""The part of the vLLM engine that lives next to the model runner, inside vLLM's worker.

It owns the ``BatchPlan`` (slot tables, banks, probe bank) and, before each forward, turns vLLM's
batch layout into per-row slots and positions: ``input_batch.req_ids`` in batch order (after any
reorder), ``query_start_loc`` for the rows of each, and ``num_computed_tokens`` for where each
request's rows start. Each request's slot is found through its ``SamplingParams.extra_args`` (our
request id), never through vLLM's internal ids. The site ops of ``injection`` then apply the plan.

It also replaces the runner's sampler with the engines' shared per-request sampler (seeded by
``(seed, position)``, teacher forcing, logits on request), so a request's tokens do not depend on
its neighbours and match the transformers engine's.

After the forward it keeps the step's reads on the host, for the engine core to turn into events:
reads come back one step at a time, with no host sync inside the forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from interventions.plan import BatchPlan, Site
from interventions.sites import ModelShape
from workers.engines import sampling
from workers.engines.vllm import injection

EXTRA_KEY = "steerlab"


@dataclass
class StepRecord:
    """One forward's layout and reads, on the host."""

    keys: list[str | None]  # our request id of each request in batch order
    starts: np.ndarray  # [n + 1] first row of each request (query_start_loc)
    first_pos: np.ndarray  # [n] absolute position of each request's first row
    scores: Tensor | None
    lens: dict[Site, tuple[Tensor, Tensor]]


@dataclass
class Sampled:
    keys: list[str | None]
    tokens: list[int]
    logprobs: list[float]
    logits: Tensor | None  # [n, vocab] float32 on the host, when a request records logits
    top_logprobs: list[list[float]]  # [n, k], k the most any live request asked for (0: none)
    top_ids: list[list[int]]


class Runtime:
    """Plan, layout and sampler of one vLLM model runner (one engine).

    Args:
        runner: vLLM's (V1) model runner.
        key: the engine key the model's site ops were built with.
        shape: the model's geometry.
        max_requests: plan slots (vLLM's ``max_num_seqs``).
    """

    def __init__(self, runner: Any, key: int, shape: ModelShape, max_requests: int) -> None:
        self.runner = runner
        self.key = key
        model = runner.get_model()
        param = next(model.parameters())
        self.device = param.device
        self._norm = model.model.norm
        self._unembed = model.lm_head.weight
        self.vocab_size = shape.vocab_size
        self.plan = BatchPlan(
            shape, max_requests=max_requests, device=param.device, dtype=param.dtype, lens_fn=self._lens
        )
        slots = self.plan.slots
        self.temperature = np.zeros(slots, dtype=np.float32)
        self.top_p = np.ones(slots, dtype=np.float32)
        self.seed = np.zeros(slots, dtype=np.int64)
        self.forced = np.full(slots, -1, dtype=np.int64)
        self.num_sampling = 0
        self.num_recording = 0
        self.top_logprobs: dict[int, int] = {}  # slot -> top_logprobs asked, for the requests asking
        self._tables: tuple[Tensor, ...] | None = None
        # Activations to capture (patch sources): request id -> {site: [row chunks]}.
        self.captures: dict[str, dict[Site, list[Tensor]]] = {}
        self._capture_rows: dict[Site, list[tuple[str, int, int]]] = {}
        self._key_of: dict[str, str | None] = {}
        self._active = False
        self.site_calls = 0  # ops that found work (a compiled model that skipped them would leave 0)
        self.forward_passes = 0
        self.last: StepRecord | None = None
        self.sampled: Sampled | None = None
        self._sample_slots: Tensor | None = None
        self._sample_pos: Tensor | None = None
        self._sample_keys: list[str | None] = []
        self._original_forward: Callable[..., Any] = runner._model_forward
        runner._model_forward = self._model_forward
        runner._sample = self._sample
        injection.register(key, self)

    def close(self) -> None:
        injection.unregister(self.key)
        self.runner._model_forward = self._original_forward

    # ------------------------------------------------------------------ tables the core fills
    def set_sampling(self, slot: int, temperature: float, top_p: float, seed: int, forced: int) -> None:
        self.temperature[slot], self.top_p[slot], self.seed[slot], self.forced[slot] = (
            temperature,
            top_p,
            seed,
            forced,
        )
        self._tables = None

    # ------------------------------------------------------------------ layout, per forward
    def _request_key(self, req_id: str) -> str | None:
        key = self._key_of.get(req_id, "")
        if key == "":
            state = self.runner.requests.get(req_id)
            extra = state.sampling_params.extra_args if state is not None and state.sampling_params else None
            key = extra.get(EXTRA_KEY) if extra else None
            if len(self._key_of) > 4 * self.plan.slots:
                self._key_of.clear()
            self._key_of[req_id] = key
        return key

    def _model_forward(self, **kwargs: Any) -> Any:
        runner = self.runner
        batch = runner.input_batch
        n = batch.num_reqs
        keys = [self._request_key(rid) for rid in batch.req_ids[:n]]
        starts = runner.query_start_loc.np[: n + 1].astype(np.int64)
        first_pos = batch.num_computed_tokens_cpu[:n].astype(np.int64)
        plan = self.plan
        slots = np.array(
            [plan.slot_of(k) if k is not None and k in plan else 0 for k in keys], dtype=np.int64
        )
        counts = np.diff(starts)
        positions = kwargs["positions"]
        rows = positions.shape[0]
        total = int(starts[-1])
        self._sample_keys = keys
        self._sample_slots = torch.from_numpy(slots).to(self.device)
        self._sample_pos = torch.from_numpy(first_pos + counts).to(self.device)
        active = len(plan) > 0 or bool(self.captures)
        if active:
            row_slot = np.zeros(rows, dtype=np.int64)
            row_slot[:total] = np.repeat(slots, counts)
            plan.begin_step(torch.from_numpy(row_slot).to(self.device), positions.long())
            self._capture_rows = self._capture_layout(keys, starts)
        self._active = active
        try:
            out = self._original_forward(**kwargs)
        finally:
            self._active = False
            reads = plan.end_step() if active else None
        self.forward_passes += 1
        scores = lens = None
        if reads is not None:
            scores = reads.scores.cpu() if reads.scores is not None else None
            lens = {site: (ids.cpu(), probs.cpu()) for site, (ids, probs) in reads.lens.items()}
        self.last = StepRecord(keys, starts, first_pos, scores, lens or {})
        return out

    def _capture_layout(
        self, keys: list[str | None], starts: np.ndarray
    ) -> dict[Site, list[tuple[str, int, int]]]:
        if not self.captures:
            return {}
        out: dict[Site, list[tuple[str, int, int]]] = {}
        for i, key in enumerate(keys):
            wanted = self.captures.get(key) if key is not None else None
            for site in wanted or ():
                out.setdefault(site, []).append((key, int(starts[i]), int(starts[i + 1])))  # type: ignore[arg-type]
        return out

    # ------------------------------------------------------------------ the site ops
    def _site_with_work(self, layer: int, point: int) -> Site | None:
        """The site of an op call, if this step has anything to read, write or capture there."""
        if not self._active:
            return None
        site = (layer, injection.POINTS[point])
        if site not in self.plan.sites and site not in self._capture_rows:
            return None
        self.site_calls += 1
        return site

    def resid(self, hidden: Tensor, residual: Tensor, layer: int, point: int) -> None:
        site = self._site_with_work(layer, point)
        if site is None:
            return
        x = hidden + residual
        out = self._apply(site, x)
        if out is x:
            return
        # Only rows a lane changed are rewritten, as (new residual, 0); the others keep their split.
        changed = (out != x).any(dim=-1, keepdim=True)
        hidden.copy_(torch.where(changed, out, hidden))
        residual.copy_(torch.where(changed, torch.zeros_like(residual), residual))

    def act(self, x: Tensor, layer: int, point: int) -> None:
        site = self._site_with_work(layer, point)
        if site is None:
            return
        out = self._apply(site, x)
        if out is not x:
            x.copy_(out)

    def _apply(self, site: Site, x: Tensor) -> Tensor:
        for key, a, b in self._capture_rows.get(site, ()):
            self.captures[key][site].append(x[a:b].detach().clone())
        if site not in self.plan.sites:
            return x
        return self.plan.apply(site, x)

    def _lens(self, x: Tensor) -> Tensor:
        h = self._norm.forward_native(x)
        return torch.nn.functional.linear(h, self._unembed[: self.vocab_size])

    # ------------------------------------------------------------------ sampling
    def _sample(self, logits: Tensor, spec_decode_metadata: Any = None) -> Any:
        from vllm.v1.outputs import SamplerOutput

        if spec_decode_metadata is not None:
            raise RuntimeError("speculative decoding is not supported with interventions")
        assert self._sample_slots is not None and self._sample_pos is not None
        if self._tables is None:
            self._tables = tuple(
                torch.from_numpy(a.copy()).to(self.device)
                for a in (self.temperature, self.top_p, self.seed, self.forced)
            )
        temp, top_p, seed, forced = (t[self._sample_slots] for t in self._tables)
        logits = logits[:, : self.vocab_size].float()
        top_k = max(self.top_logprobs.values(), default=0)
        drawn = sampling.sample(
            logits, temp, top_p, seed, self._sample_pos, forced, self.num_sampling > 0, top_k
        )
        self.sampled = Sampled(
            self._sample_keys,
            drawn.tokens.tolist(),
            drawn.logprobs.tolist(),
            logits.cpu().clone() if self.num_recording else None,
            drawn.top[0].tolist() if drawn.top else [],
            drawn.top[1].tolist() if drawn.top else [],
        )
        return SamplerOutput(sampled_token_ids=drawn.tokens.to(torch.int32)[:, None], logprobs_tensors=None)

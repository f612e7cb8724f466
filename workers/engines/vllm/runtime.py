"""The part of the vLLM engine that lives next to the model runner, inside vLLM's worker.

It drives the ``BatchPlan`` whose tables the model's traced sites read (``injection``; the plan was
allocated when the model was created) and, before each forward, writes vLLM's batch layout into them
as per-row slots and positions: ``input_batch.req_ids`` in batch order (after any
reorder), ``query_start_loc`` for the rows of each, and ``num_computed_tokens`` for where each
request's rows start. Each request's slot is found through its ``SamplingParams.extra_args`` (our
request id), never through vLLM's internal ids.

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

from interventions.compiler import Site
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
    overflow: frozenset[str]  # requests whose reads did not fit this step's capture buffer


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
        runner: vLLM's (V1) model runner, whose model was built with sites (``injection``).
        shape: the model's geometry.
    """

    def __init__(self, runner: Any, shape: ModelShape) -> None:
        self.runner = runner
        model = runner.get_model()
        self.plan = injection.plan_of(model)
        self.plan.lens_fn = self._lens
        self.device = self.plan.device
        self._model = model
        self._norm = injection.final_norm(model)
        self.vocab_size = shape.vocab_size
        slots = self.plan.slots
        self.temperature = np.zeros(slots, dtype=np.float32)
        self.top_p = np.ones(slots, dtype=np.float32)
        self.seed = np.zeros(slots, dtype=np.int64)
        self.forced = np.full(slots, -1, dtype=np.int64)
        self.num_sampling = 0
        self.num_recording = 0
        self.top_logprobs: dict[int, int] = {}  # slot -> top_logprobs asked, for the requests asking
        self._tables: tuple[Tensor, ...] | None = None
        # Activations to capture (patch sources, collect): request id -> {site: [row chunks]}.
        self.captures: dict[str, dict[Site, list[Tensor]]] = {}
        self._key_of: dict[str, str | None] = {}
        self.forward_passes = 0
        self.last: StepRecord | None = None
        self.sampled: Sampled | None = None
        self._sample_slots: Tensor | None = None
        self._sample_pos: Tensor | None = None
        self._sample_keys: list[str | None] = []
        self._original_forward: Callable[..., Any] = runner._model_forward
        runner._model_forward = self._model_forward
        runner._sample = self._sample

    def close(self) -> None:
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
        # Every forward writes its layout (rows past the batch, CUDA-graph padding, get slot 0).
        row_slot = np.zeros(rows, dtype=np.int64)
        row_slot[:total] = np.repeat(slots, counts)
        plan.begin_step(row_slot, positions, self._capture_layout(keys, starts))
        try:
            out = self._original_forward(**kwargs)
        finally:
            reads = plan.end_step()
        self.forward_passes += 1
        for key, sites in reads.captured.items():
            for site, rows_ in sites.items():
                self.captures[key][site].append(rows_)
        scores = reads.scores.cpu() if reads.scores is not None else None
        lens = {site: (ids.cpu(), probs.cpu()) for site, (ids, probs) in reads.lens.items()}
        self.last = StepRecord(keys, starts, first_pos, scores, lens, reads.overflow)
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

    def _lens(self, x: Tensor) -> Tensor:
        # The final norm (its reference implementation, as transformers computes it), then the
        # model's own logits: unembedding and any final softcapping.
        norm = getattr(self._norm, "forward_native", self._norm)
        logits = self._model.compute_logits(norm(x))
        return logits[:, : self.vocab_size]

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

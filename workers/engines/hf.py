"""The transformers reference engine: continuous batching with per-request interventions.

Built on transformers' own ``ContinuousBatchingManager`` (paged KV cache, packed ``[1, tokens]``
batches): its scheduler, cache and batch tensors are reused, but its background thread is not.
``HFEngineCore.step()`` drives one forward pass at a time, so "a request joins at step k" is
deterministic in tests, and the asynchronous ``HFEngine`` runs the same core in one thread.

Per step the core (1) applies queued control (aborts, live adjustments, replayed adjustments),
(2) admits new requests into the plan and the scheduler, (3) lets the scheduler build the batch,
(4) derives each row's request slot from the batch layout and hands it with the row positions to
``BatchPlan.begin_step`` (the hooks then apply every request's lanes with static-shape ops), and
(5) samples with per-request seeds, turns the outputs into events and retires finished requests.
A joining request is prefilled in the same forward as the others' decode rows: nobody else's KV
is recomputed.

Reads cover every token, the last generated one included: a request that reads is kept for one
extra forward after its last token (whose sampled successor is discarded).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import transformers
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from interventions import ops
from interventions.compiler import Site
from interventions.plan import BatchPlan, Capacity
from interventions.sites import adapter_for, install_hook
from workers.engines import sampling
from workers.engines.base import (
    EngineInfo,
    Event,
    GenerationRequest,
    RequestError,
)
from workers.engines.requests import CAPABILITIES, read_events, validate_request
from workers.engines.stepping import Live, SteppedCore
from workers.engines.threaded import ThreadedEngine

log = logging.getLogger(__name__)


@dataclass
class _Live(Live):
    next_pos: int = 0  # absolute position of the next row the scheduler will feed


class HFEngineCore(SteppedCore[_Live]):
    """A step-driven continuous-batching engine on one transformers model.

    Args:
        model: a causal LM of a family ``interventions.sites`` supports, in eval mode.
        tokenizer: used only to tokenize patch sources given as text.
        model_name: the deployment name resolved tensors must belong to.
        max_requests: concurrent request slots.
        max_batch_tokens: tokens per forward (a long prompt is prefilled in chunks).
        num_blocks: KV cache capacity in pages of ``page_size`` tokens. Every live request holds at
            least one page: size it for ``max_requests`` (requests that do not fit wait).
        page_size: tokens per KV page.
        min_step_time: seconds; a step never returns sooner (tests that act during a generation).
        capacity: sizes of the intervention tables (default: from ``max_requests`` and
            ``max_batch_tokens``).
        compile_sites: a ``torch.compile`` backend for the site op ("inductor" on a GPU; "eager"
            checks that it traces whole), or None to run it eagerly.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any = None,
        *,
        model_name: str = "model",
        max_requests: int = 64,
        max_batch_tokens: int = 512,
        num_blocks: int = 256,
        page_size: int = 64,
        min_step_time: float = 0.0,
        capacity: Capacity | None = None,
        compile_sites: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.min_step_time = min_step_time
        self.adapter = adapter_for(model)
        self.shape = self.adapter.shape()
        self.device = next(model.parameters()).device
        self.max_context = min(
            int(getattr(model.config, "max_position_embeddings", 1 << 20) or 1 << 20), num_blocks * page_size
        )
        self.max_requests = max_requests
        self._hooks: list[Any] = []
        site_fn = ops.apply_site
        if compile_sites is not None:
            # One graph for every site: the site index and the tables are inputs, and the row count
            # is dynamic, so no change of tables, recipes or batch layout recompiles it.
            site_fn = torch.compile(ops.apply_site, backend=compile_sites, fullgraph=True, dynamic=True)
        self.plan = BatchPlan(
            self.shape,
            capacity or Capacity(max_rows=max_batch_tokens, max_requests=max_requests),
            device=self.device,
            dtype=model.dtype,
            lens_fn=self.adapter.logit_lens,
            on_new_site=self._install_site,
            site_fn=site_fn,
        )
        generation_config = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0)
        cb_config = ContinuousBatchingConfig(
            num_blocks=num_blocks,
            page_size=page_size,
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=max_requests,
            allow_block_sharing=False,  # KV computed under one request's interventions is never shared
            use_cuda_graph=False,
            use_async_batching=False,
        )
        self._manager = model.init_continuous_batching(  # type: ignore[operator]
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        self._bp = self._manager._create_batch_processor()
        self._manager.batch_processor = self._bp
        self._bp.model_runner._sample = self._sample  # per-request seeded sampling
        # Per-slot sampling tables (host), gathered per step by the rows' slots.
        slots = max_requests + 1
        self._temperature = np.zeros(slots, dtype=np.float32)
        self._top_p = np.ones(slots, dtype=np.float32)
        self._seed = np.zeros(slots, dtype=np.int64)
        self._forced = np.full(slots, -1, dtype=np.int64)
        self._sampling_tables: tuple[Tensor, ...] | None = None
        self._num_sampling = 0
        self._top_logprobs: dict[int, int] = {}  # slot -> top_logprobs asked, for the requests asking
        self._init_requests()
        self._layout_key: tuple[Any, ...] = ()
        self._layout: tuple[np.ndarray, Tensor] | None = None
        self._step_sampling: tuple[Tensor, ...] | None = None
        self._step_logprobs: Tensor | None = None
        self._step_logits: Tensor | None = None
        self._step_top: tuple[Tensor, Tensor] | None = None
        self._capture: dict[Site, Tensor | None] | None = None
        self.forward_passes = 0
        self.steps = 0

    # ------------------------------------------------------------------ public API
    def info(self) -> EngineInfo:
        return EngineInfo(
            model=self.model_name,
            engine="hf",
            num_layers=self.shape.num_layers,
            hidden_size=self.shape.hidden_size,
            mlp_size=self.shape.mlp_size,
            vocab_size=self.shape.vocab_size,
            capabilities=CAPABILITIES,
            version=transformers.__version__,
        )

    # ------------------------------------------------------------------ validation
    def _validate(self, req: GenerationRequest) -> None:
        validate_request(req, self.plan, self.max_context, has_tokenizer=self.tokenizer is not None)

    # ------------------------------------------------------------------ hooks
    def _install_site(self, site: Site) -> None:
        width = self.shape.mlp_size if site[1] == "mlp_act" else self.shape.hidden_size
        ref = self.adapter.locate(*site)
        plan = self.plan

        def hook(h: Tensor) -> Tensor | None:
            if self._capture is not None:  # an unsteered forward of patch sources: read only
                if site in self._capture:
                    self._capture[site] = h.detach().reshape(-1, width).clone()
                return None
            return plan.apply(site, h)

        self._hooks.append(install_hook(ref, hook))

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> list[Event]:
        """Run at most one forward pass; return the events it produced (possibly none)."""
        started = time.perf_counter()
        events: list[Event] = []
        self._apply_control(events)
        self._admit(events)
        ran = self._forward(events)
        if ran:
            self.steps += 1
            self._pace(started)
        return events

    def _admit(self, events: list[Event]) -> None:
        while True:
            try:
                req = self._pending.get_nowait()
            except queue.Empty:
                break
            if req.collect is not None:
                if not self._collect_aborted(req.request_id, events):
                    captured = self.source_activations(req.prompt_tokens, list(req.collect.sites))
                    self._collected(req, captured, events)
                continue
            live = self._join(req, partial(self._patch_sources, req), events)
            if live is None:
                continue
            s = req.sampling
            slot = live.slot
            self._temperature[slot] = s.temperature
            self._top_p[slot] = s.top_p
            self._seed[slot] = s.seed
            self._forced[slot] = req.forced_tokens[0] if req.forced_tokens else -1
            self._num_sampling += s.temperature > 0
            if s.top_logprobs:
                self._top_logprobs[slot] = s.top_logprobs
            self._tables_stale()
            self._manager.add_request(
                list(req.prompt_tokens), request_id=req.request_id, max_new_tokens=None, eos_token_id=-1
            )

    def _new_live(self, req: GenerationRequest, slot: int) -> _Live:
        return _Live(req=req, slot=slot)

    def _patch_sources(self, req: GenerationRequest) -> dict[int, Tensor] | None:
        lanes = [lane for lane in req.recipe.lanes if lane.op == "patch"]
        if not lanes:
            return None
        out: dict[int, Tensor] = {}
        for lane in lanes:
            tokens = lane.patch_tokens
            if tokens is None:
                tokens = tuple(self.tokenizer.encode(lane.patch_text, add_special_tokens=False))
            if not tokens or max(tokens) >= self.shape.vocab_size:
                raise RequestError(f"interventions[{lane.index}]: the patch source has no valid tokens")
            out[lane.index] = self.source_activations(tokens, [lane.site])[lane.site]
        return out

    @torch.no_grad()
    def source_activations(
        self, tokens: tuple[int, ...] | list[int], sites: list[Site]
    ) -> dict[Site, Tensor]:
        """Activations of an unsteered forward of ``tokens`` at ``sites`` (patch sources).

        A plain forward outside the paged cache, in which the hooks only read.
        """
        for site in sites:
            self.plan.ensure_site(site)
        self._capture = dict.fromkeys(sites)
        try:
            with self._plain_attention():
                self.model(input_ids=torch.tensor([list(tokens)], device=self.device), use_cache=False)
            captured = self._capture
        finally:
            self._capture = None
        return {site: t for site, t in captured.items() if t is not None}

    @contextmanager
    def _plain_attention(self) -> Iterator[None]:
        # Continuous batching may have switched the model to a paged attention implementation; a
        # plain forward needs the original one back for its duration.
        original = self._manager._original_attn_impl
        if original is not None:
            self.model.set_attn_implementation(original)
        try:
            yield
        finally:
            if original is not None:
                self._manager.switch_to_cb_friendly_attn(self.model, False)

    def _forward(self, events: list[Event]) -> bool:
        bp = self._bp
        if not bp.prepare_next_batch():
            return False
        io = bp.inputs_and_outputs
        batch = io.requests_in_batch
        key = tuple((f.state.request_id, f.query_length, f.has_new_token) for f in batch)
        if key != self._layout_key:
            self._set_layout(key)
        assert self._layout is not None and self._sampling_tables is not None
        row_slot, logit_slots = self._layout
        rows = row_slot.shape[0]
        row_pos = io.position_ids[:rows].long()
        self.plan.begin_step(row_slot, row_pos)
        logit_rows = io.logits_indices[: logit_slots.shape[0]].long()
        temp, top_p, seed, forced = self._sampling_tables
        self._step_sampling = (
            temp[logit_slots],
            top_p[logit_slots],
            seed[logit_slots],
            row_pos[logit_rows] + 1,
            forced[logit_slots],
        )
        bp._generation_step(self.model)
        self.forward_passes += 1
        reads = self.plan.end_step()
        n_new = logit_slots.shape[0]
        new_tokens = io.output_ids[0, :n_new].tolist()
        logprobs = self._step_logprobs.tolist() if self._step_logprobs is not None else [0.0] * n_new
        top_lps, top_ids = (
            (self._step_top[0].tolist(), self._step_top[1].tolist()) if self._step_top else ([], [])
        )
        scores = reads.scores.cpu() if reads.scores is not None else None
        lens = {site: (ids.cpu(), probs.cpu()) for site, (ids, probs) in reads.lens.items()}
        bp.update_batch()
        row = 0
        out_i = 0
        for f in batch:
            live = self._live.get(f.state.request_id)
            qlen = f.query_length
            if live is None:  # aborted during this step's control phase cannot happen; defensive
                row += qlen
                out_i += f.has_new_token
                continue
            if live.reads:
                self._emit_reads(live, row, qlen, scores, lens, events)
            live.next_pos += qlen
            row += qlen
            if f.has_new_token:
                token, logprob = new_tokens[out_i], logprobs[out_i]
                logits = self._logits_row(out_i) if live.req.record_logits else None
                k = live.req.sampling.top_logprobs
                top = tuple(zip(top_ids[out_i][:k], top_lps[out_i][:k], strict=True)) if k else ()
                out_i += 1
                self._on_token(live, token, logprob, logits, events, top)
        return True

    def _set_layout(self, key: tuple[Any, ...]) -> None:
        # Host work that depends on requests happens only when the batch's composition changes.
        slots = [self._live[rid].slot if rid in self._live else 0 for rid, _, _ in key]
        qlens = [q for _, q, _ in key]
        row_slot = np.repeat(np.array(slots, dtype=np.int64), qlens)
        logit_slots = torch.tensor(
            [s for s, (_, _, new) in zip(slots, key, strict=True) if new], dtype=torch.long
        )
        self._layout = (row_slot, logit_slots.to(self.device))
        self._layout_key = key
        self._sampling_tables = tuple(
            torch.from_numpy(a.copy()).to(self.device)
            for a in (self._temperature, self._top_p, self._seed, self._forced)
        )

    def _tables_stale(self) -> None:
        # Slots were (re)assigned or sampling tables changed: rebuild the layout at the next step.
        self._layout_key = ()
        self._sampling_tables = None

    def _logits_row(self, i: int) -> tuple[float, ...] | None:
        return None if self._step_logits is None else tuple(self._step_logits[i].tolist())

    def _emit_reads(
        self,
        live: _Live,
        row: int,
        qlen: int,
        scores: Tensor | None,
        lens: dict[Site, tuple[Tensor, Tensor]],
        events: list[Event],
    ) -> None:
        qlen = min(qlen, live.prompt_len + live.req.sampling.max_new_tokens - live.next_pos)
        reads, live.probe_cols = read_events(
            self.plan, live.req.request_id, live.next_pos, row, qlen, scores, lens, live.probe_cols
        )
        events.extend(reads)

    def _set_forced(self, live: _Live, token: int) -> None:
        self._forced[live.slot] = token
        self._tables_stale()

    def _release(self, live: _Live, *, engine_done: bool) -> None:
        # Free it in the scheduler now (we are between forwards, on the stepping thread): a queued
        # cancel would also hit a later request that reuses the id.
        scheduler = self._bp.scheduler
        scheduler.set_request_cancellation(live.req.request_id)
        for state in scheduler.clear_cancelled_requests():
            self._bp.offloading_manager.free_request_cpu_cache(state)
        self._num_sampling -= live.req.sampling.temperature > 0
        self._top_logprobs.pop(live.slot, None)
        self._forced[live.slot] = -1
        self._tables_stale()

    def _sample(self, scores: Tensor, output_ids: Tensor) -> None:
        """Replaces the continuous-batching sampler: per-request seeds, temperatures and forcing."""
        assert self._step_sampling is not None
        temp, top_p, seed, position, forced = self._step_sampling
        # transformers keeps a logits row per request in the batch; the rows of the requests with a
        # new token come first, in batch order. A request whose prefill is split across steps (the
        # step's token budget ran out) has no new token: its row is a stale index, and is dropped.
        logits = scores[0, : temp.shape[0]].float()
        top_k = max(self._top_logprobs.values(), default=0)
        drawn = sampling.sample(logits, temp, top_p, seed, position, forced, self._num_sampling > 0, top_k)
        output_ids[0, : drawn.tokens.shape[0]].copy_(drawn.tokens.to(output_ids.dtype))
        self._step_logprobs = drawn.logprobs
        self._step_top = drawn.top
        self._step_logits = logits

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


class HFEngine(ThreadedEngine):
    """The asynchronous Engine over ``HFEngineCore``: one thread steps the shared batch."""

    def __init__(self, core: HFEngineCore, *, idle_wait: float = 0.05) -> None:
        super().__init__(core, idle_wait=idle_wait, name="hf-engine")

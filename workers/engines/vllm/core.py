"""The vLLM engine: per-request interventions on one shared, compiled vLLM model (docs/design.md §4-§5).

``VLLMEngineCore`` has the transformers core's step-driven surface (``add``/``adjust``/``abort``/
``step``) over vLLM's ``LLMEngine`` (V1: ``add_request``/``step``, never batch ``generate``),
in-process with the single-process executor so that the plan lives beside the model runner:

* the decoder layers get their sites when vLLM creates the model, before it compiles it: tensor code
  over the persistent tables of a ``BatchPlan`` (``injection``), which vLLM traces into its graph;
  ``runtime.Runtime`` writes vLLM's batch layout into the tables before each forward;
* a request travels to vLLM as token ids with ``SamplingParams.extra_args = {"steerlab": id}``
  (ids only, msgpack-safe); its compiled recipe goes into the plan here, its tensors into the plan's
  content-addressed banks (the warm cache keeps them resident between requests);
* ``cache_salt`` is a hash of the request's write interventions and adjustment history, so prefix
  caching never hands KV computed under one intervention history to another. A live adjustment
  re-salts the request's blocks from then on; requests that read skip the prefix cache (every
  position they read is recomputed);
* reads and logits come back from the step that computed them (host copies after the forward);
* vLLM never stops a request by itself (``ignore_eos``, no stop ids): stop tokens, lengths and the
  one extra forward that reads the last generated token are decided here, as in the HF engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import queue
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interventions.compiler import Site
from interventions.plan import Capacity
from interventions.sites import POINTS, ModelShape, shape_from_config
from workers.engines.base import (
    EngineInfo,
    Event,
    FinishedEvent,
    FinishReason,
    GenerationRequest,
    RequestError,
)
from workers.engines.requests import CAPABILITIES, read_events, validate_request
from workers.engines.stepping import Live, SteppedCore
from workers.engines.vllm import injection
from workers.engines.vllm.runtime import EXTRA_KEY, Runtime

log = logging.getLogger(__name__)

_RUNTIMES: dict[int, Runtime] = {}


def configure_environment() -> None:
    """vLLM settings the engine relies on; call before vLLM reads its environment.

    In-process engine core and executor: the plan and the model runner share memory. (The compile
    cache needs no setting: the sites' code and sizes are part of vLLM's cache key through
    ``additional_config``.)
    """
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # The V1 runner (the GPU default in 0.32 may be Model Runner V2, whose state differs).
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")


def _attach(worker: Any, key: int, shape: ModelShape) -> None:
    runner = getattr(worker, "worker", worker).model_runner
    _RUNTIMES[key] = Runtime(runner, shape)


_keys = itertools.count(1)


@dataclass
class _Live(Live):
    internal_id: str = ""  # vLLM's id (the request id with a random suffix)
    salt: str | None = None
    adjusted_early: bool = False  # a live adjustment arrived before admission (from token 0 on)
    read_upto: int = 0  # positions below this were read (a preempted request is recomputed)


@dataclass
class _Waiting:
    """A request with patch lanes, waiting for its source prompts' activations."""

    req: GenerationRequest
    pending: dict[str, tuple[int, Site]]  # capture request id -> (lane index, site)
    sources: dict[int, Tensor] = field(default_factory=dict)


class VLLMEngineCore(SteppedCore[_Live]):
    """A step-driven engine on one vLLM model with per-request interventions.

    Args:
        source: model directory or Hugging Face id.
        tokenizer: used only to tokenize patch sources given as text.
        model_name: the deployment name resolved tensors must belong to.
        revision: model revision for hub ids.
        max_requests: concurrent requests (vLLM's ``max_num_seqs``; plan slots).
        max_batch_tokens: tokens per forward (``max_num_batched_tokens``: long prompts are chunked).
        max_model_len: longest prompt + generation.
        kv_cache_bytes: KV cache size (None: vLLM's sizing from free GPU memory; on a CPU that would be
            92% of RAM, so set it there).
        enforce_eager: skip torch.compile (the default compiles; the site ops are compiled in).
        dtype: model dtype ("auto": the checkpoint's).
        prefix_caching: share KV between requests with the same prefix and intervention history.
        points: the points compiled into the model (None: all); requests elsewhere are refused.
        capacity: the intervention tables' other sizes (lanes, banks, probes, captures); its
            ``max_rows``, ``max_requests`` and ``points`` are this engine's.
        debug_dump_path: where vLLM dumps the graphs it compiles (``compilation_config``).
        min_step_time: seconds; a step never returns sooner (tests that act during a generation).
    """

    def __init__(
        self,
        source: str,
        tokenizer: Any = None,
        *,
        model_name: str = "model",
        revision: str = "",
        max_requests: int = 32,
        max_batch_tokens: int = 512,
        max_model_len: int = 2048,
        kv_cache_bytes: int | None = 256 << 20,
        enforce_eager: bool = False,
        dtype: str = "auto",
        prefix_caching: bool = True,
        min_step_time: float = 0.0,
        points: Sequence[str] | None = None,
        capacity: Capacity | None = None,
        debug_dump_path: str | None = None,
    ) -> None:
        configure_environment()
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        self.tokenizer = tokenizer
        self.model_name = model_name
        self.min_step_time = min_step_time
        self.max_requests = max_requests
        self.key = next(_keys)
        capacity = dataclasses.replace(
            capacity or Capacity(),
            max_rows=max_batch_tokens,
            max_requests=max_requests,
            points=tuple(points) if points is not None else POINTS,
        )
        injection.install()
        args = EngineArgs(
            model=source,
            revision=revision or None,
            skip_tokenizer_init=True,
            dtype=dtype,
            max_num_seqs=max_requests,
            max_num_batched_tokens=max_batch_tokens,
            max_model_len=max_model_len,
            enable_chunked_prefill=True,
            enable_prefix_caching=prefix_caching,
            kv_cache_memory_bytes=kv_cache_bytes,
            distributed_executor_backend="uni",
            enforce_eager=enforce_eager,
            seed=0,
            disable_log_stats=True,  # the worker reports its own engine status
            additional_config=injection.engine_config(capacity),
        )
        if debug_dump_path is not None:
            from vllm.config import CompilationConfig, CompilationMode

            args.compilation_config = CompilationConfig(
                mode=CompilationMode.NONE if enforce_eager else CompilationMode.VLLM_COMPILE,
                debug_dump_path=Path(debug_dump_path),
            )
        self.engine = LLMEngine.from_engine_args(args)
        config = self.engine.vllm_config.model_config.hf_text_config
        self.shape = shape_from_config(config)
        self.max_context = max_model_len
        self.compiled = not enforce_eager
        self.engine.collective_rpc(_attach, args=(self.key, self.shape))
        runtime = _RUNTIMES.get(self.key)
        if runtime is None:
            raise RuntimeError(
                "the vLLM engine needs the in-process executor (VLLM_ENABLE_V1_MULTIPROCESSING=0)"
            )
        self.runtime = runtime
        self.plan = runtime.plan
        self._scheduler = self.engine.engine_core.engine_core.scheduler
        self._init_requests()
        self._waiting: dict[str, _Waiting] = {}
        self._capture_of: dict[str, str] = {}  # capture request id -> the waiting request's id
        self._collecting: dict[str, GenerationRequest] = {}  # capture request id -> collect request
        self.steps = 0

    # ------------------------------------------------------------------ public API
    @property
    def forward_passes(self) -> int:
        return self.runtime.forward_passes

    def info(self) -> EngineInfo:
        import vllm  # loaded by the engine already

        return EngineInfo(
            model=self.model_name,
            engine="vllm",
            num_layers=self.shape.num_layers,
            hidden_size=self.shape.hidden_size,
            mlp_size=self.shape.mlp_size,
            vocab_size=self.shape.vocab_size,
            capabilities=CAPABILITIES,
            version=vllm.__version__,
        )

    def has_work(self) -> bool:
        # Collect requests live only as internal capture requests: they are work too.
        return bool(self._waiting or self._collecting) or super().has_work()

    def _validate(self, req: GenerationRequest) -> None:
        validate_request(req, self.plan, self.max_context, has_tokenizer=self.tokenizer is not None)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self) -> list[Event]:
        """Run at most one forward pass; return the events it produced (possibly none)."""
        started = time.perf_counter()
        events: list[Event] = []
        self._apply_control(events)
        self._admit(events)
        if not self.engine.has_unfinished_requests():
            return events
        before = self.runtime.forward_passes
        outputs = self.engine.step()
        if self.runtime.forward_passes == before:
            return events
        self.steps += 1
        self._fail_overflow(events)
        self._emit_reads(events)
        sampled = self.runtime.sampled
        by_key: dict[str, int] = {}
        if sampled is not None:
            by_key = {k: i for i, k in enumerate(sampled.keys) if k is not None}
        for out in outputs:
            rid = out.request_id
            new = list(out.outputs[0].token_ids) if out.outputs else []
            if rid in self._capture_of:
                if out.finished:
                    self._captured(rid, events)
                continue
            live = self._live.get(rid)
            if live is None:
                continue
            # One sampled token per request per step (no speculative decoding): its row of the sample.
            i = by_key.get(rid)
            logprob, logits = 0.0, None
            top: tuple[tuple[int, float], ...] = ()
            if sampled is not None and i is not None:
                logprob = sampled.logprobs[i]
                if live.req.record_logits and sampled.logits is not None:
                    logits = tuple(sampled.logits[i].tolist())
                if k := live.req.sampling.top_logprobs:
                    top = tuple(zip(sampled.top_ids[i][:k], sampled.top_logprobs[i][:k], strict=True))
            for token in new:
                if rid not in self._live:
                    break
                self._on_token(live, token, logprob, logits, events, top)
            if out.finished and rid in self._live:
                self._finish(live, live.finishing or "length", events, engine_done=True)
        self._pace(started)
        return events

    def _control_before_admission(self, kind: str, rid: str, events: list[Event]) -> bool:
        cid = f"{rid}#collect"
        if cid in self._collecting:
            if kind == "abort":
                del self._collecting[cid]
                self._cancel_captures([cid])
                events.append(FinishedEvent(rid, "aborted", ()))
                self._forget(rid)
            return True  # a collect request takes no adjustments
        waiting = self._waiting.get(rid)
        if waiting is not None and kind == "abort":  # still capturing its patch sources
            self._drop_waiting(waiting, events)
            return True
        return False

    def _adjusted_live(self, live: _Live) -> None:
        self._resalt(live)

    def _adjusted_before_start(self, live: _Live) -> None:
        live.adjusted_early = True

    def _admit(self, events: list[Event]) -> None:
        while True:
            try:
                req = self._pending.get_nowait()
            except queue.Empty:
                break
            if req.collect is not None:
                self._start_collect(req, events)
                continue
            patches = [lane for lane in req.recipe.lanes if lane.op == "patch"]
            if patches:
                self._start_captures(req, events)
            else:
                self._start(req, None, events)

    def _start(self, req: GenerationRequest, sources: dict[int, Tensor] | None, events: list[Event]) -> None:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        rid = req.request_id
        live = self._join(req, lambda: sources, events)
        if live is None:
            return
        slot = live.slot
        live.salt = self._salt(req, unique=live.adjusted_early)
        s = req.sampling
        rt = self.runtime
        rt.set_sampling(
            slot, s.temperature, s.top_p, s.seed, req.forced_tokens[0] if req.forced_tokens else -1
        )
        rt.num_sampling += s.temperature > 0
        rt.num_recording += req.record_logits
        if s.top_logprobs:
            rt.top_logprobs[slot] = s.top_logprobs
        params = SamplingParams(
            # One extra token when the request reads: the forward that feeds the last token reads it.
            max_tokens=s.max_new_tokens + int(live.reads),
            temperature=0.0,  # sampling is the runtime's (per-request seeds); vLLM's is bypassed
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args={EXTRA_KEY: rid},
            skip_reading_prefix_cache=live.reads,
        )
        prompt: dict[str, Any] = {"prompt_token_ids": list(req.prompt_tokens)}
        if live.salt is not None:
            prompt["cache_salt"] = live.salt
        live.internal_id = self.engine.add_request(rid, prompt, params)

    def _salt(self, req: GenerationRequest, *, unique: bool = False) -> str | None:
        if not req.recipe.lanes:
            return None  # no writes: plain KV, shared with every plain request
        h = hashlib.sha256(req.recipe.write_signature().encode())
        h.update(repr((req.overrides, sorted(req.scheduled, key=lambda s: s[0]))).encode())
        if unique:
            h.update(secrets.token_bytes(16))
        return h.hexdigest()

    def _resalt(self, live: _Live) -> None:
        """After a live adjustment, blocks not yet computed get hashes no other request can produce."""
        request = self._scheduler.requests.get(live.internal_id)
        if request is None or request._block_hasher is None:
            return
        nonce = secrets.token_bytes(16)
        original = getattr(request, "_steerlab_hasher", request._block_hasher)
        request._steerlab_hasher = original

        def salted(r: Any, nonce: bytes = nonce) -> list[Any]:
            return [type(h)(hashlib.sha256(bytes(h) + nonce).digest()) for h in original(r)]

        request._block_hasher = salted
        # Blocks whose tokens are known but whose KV is not all computed yet are hashed again.
        size = self._scheduler.block_size
        keep = request.num_computed_tokens // size
        del request.block_hashes[keep:]
        request.update_block_hashes()

    # ------------------------------------------------------------------ patch sources
    def _capture(self, cid: str, rid: str, tokens: Sequence[int], sites: Sequence[Site]) -> None:
        """An internal one-token request whose activations at ``sites`` the runtime keeps (an
        unsteered forward: its id names no request of the plan)."""
        from vllm import SamplingParams

        self.runtime.captures[cid] = {site: [] for site in sites}
        self._capture_of[cid] = rid
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            ignore_eos=True,
            detokenize=False,
            extra_args={EXTRA_KEY: cid},
            skip_reading_prefix_cache=True,  # every position's activations are computed
        )
        self.engine.add_request(cid, {"prompt_token_ids": list(tokens)}, params)

    def _start_collect(self, req: GenerationRequest, events: list[Event]) -> None:
        assert req.collect is not None
        if self._collect_aborted(req.request_id, events):
            return
        cid = f"{req.request_id}#collect"
        self._collecting[cid] = req
        self._capture(cid, req.request_id, req.prompt_tokens, req.collect.sites)

    def _start_captures(self, req: GenerationRequest, events: list[Event]) -> None:
        waiting = _Waiting(req=req, pending={})
        try:
            for lane in req.recipe.lanes:
                if lane.op != "patch":
                    continue
                tokens = lane.patch_tokens
                if tokens is None:
                    tokens = tuple(self.tokenizer.encode(lane.patch_text, add_special_tokens=False))
                if not tokens or max(tokens) >= self.shape.vocab_size:
                    raise RequestError(f"interventions[{lane.index}]: the patch source has no valid tokens")
                cid = f"{req.request_id}#source{lane.index}"
                waiting.pending[cid] = (lane.index, lane.site)
                self._capture(cid, req.request_id, tokens, [lane.site])
        except RequestError as e:
            self._waiting[req.request_id] = waiting
            self._drop_waiting(waiting, events, reason="error", error=str(e))
            return
        self._waiting[req.request_id] = waiting

    def _captured(self, cid: str, events: list[Event]) -> None:
        rid = self._capture_of.pop(cid)
        chunks = self.runtime.captures.pop(cid, {})
        collecting = self._collecting.pop(cid, None)
        if collecting is not None:
            self._collected(collecting, {site: torch.cat(parts) for site, parts in chunks.items()}, events)
            return
        waiting = self._waiting.get(rid)
        if waiting is None:
            return
        index, site = waiting.pending.pop(cid)
        waiting.sources[index] = torch.cat(chunks.get(site, []) or [torch.empty(0)])
        if not waiting.pending:
            del self._waiting[rid]
            self._start(waiting.req, waiting.sources, events)

    def _drop_waiting(
        self,
        waiting: _Waiting,
        events: list[Event],
        reason: FinishReason = "aborted",
        error: str | None = None,
    ) -> None:
        rid = waiting.req.request_id
        self._waiting.pop(rid, None)
        self._cancel_captures(list(waiting.pending))
        events.append(FinishedEvent(rid, reason, (), error=error))
        self._forget(rid)

    def _cancel_captures(self, cids: list[str]) -> None:
        """Abort internal capture requests and forget what they captured so far."""
        if cids:
            self.engine.abort_request(cids)
        for cid in cids:
            self._capture_of.pop(cid, None)
            self.runtime.captures.pop(cid, None)

    # ------------------------------------------------------------------ outputs
    def _fail_overflow(self, events: list[Event]) -> None:
        """Requests whose reads did not fit this step's capture buffer end with an error (a read that
        is never silently missing)."""
        record = self.runtime.last
        if record is None or not record.overflow:
            return
        error = "this step's reads exceeded the engine's capture buffer (raise capture_rows)"
        for key in record.overflow:
            live = self._live.get(key)
            if live is not None:
                self._finish(live, "error", events, error=error)
                continue
            rid = self._capture_of.get(key)
            waiting = self._waiting.get(rid) if rid is not None else None
            collecting = self._collecting.pop(key, None)
            if waiting is not None:
                self._drop_waiting(waiting, events, reason="error", error=error)
            elif collecting is not None:
                self._cancel_captures([key])
                events.append(FinishedEvent(collecting.request_id, "error", (), error=error))
                self._forget(collecting.request_id)

    def _emit_reads(self, events: list[Event]) -> None:
        record = self.runtime.last
        if record is None or (record.scores is None and not record.lens):
            return
        for i, key in enumerate(record.keys):
            live = self._live.get(key) if key is not None else None
            if live is None or not live.reads:
                continue
            row = int(record.starts[i])
            first = int(record.first_pos[i])
            end = min(
                first + int(record.starts[i + 1]) - row, live.prompt_len + live.req.sampling.max_new_tokens
            )
            # vLLM recomputes a preempted request from its start: each position is read once.
            skip = max(0, live.read_upto - first)
            if first + skip >= end:
                continue
            reads, live.probe_cols = read_events(
                self.plan,
                live.req.request_id,
                first + skip,
                row + skip,
                end - first - skip,
                record.scores,
                record.lens,
                live.probe_cols,
            )
            live.read_upto = end
            events.extend(reads)

    def _new_live(self, req: GenerationRequest, slot: int) -> _Live:
        return _Live(req=req, slot=slot)

    def _set_forced(self, live: _Live, token: int) -> None:
        s = live.req.sampling
        self.runtime.set_sampling(live.slot, s.temperature, s.top_p, s.seed, token)

    def _release(self, live: _Live, *, engine_done: bool) -> None:
        if not engine_done:
            self.engine.abort_request([live.req.request_id])
        rt = self.runtime
        rt.num_sampling -= live.req.sampling.temperature > 0
        rt.num_recording -= live.req.record_logits
        rt.top_logprobs.pop(live.slot, None)
        rt.set_sampling(live.slot, 0.0, 1.0, 0, -1)

    def fail_all(self, error: str) -> list[Event]:
        events = super().fail_all(error)
        for waiting in list(self._waiting.values()):
            self._drop_waiting(waiting, events, reason="error", error=error)
        return events

    def close(self) -> None:
        self.runtime.close()
        _RUNTIMES.pop(self.key, None)

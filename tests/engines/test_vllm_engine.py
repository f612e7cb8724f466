"""The vLLM engine on the CPU with the tiny model: agreement with the transformers engine for every op,
isolation in mixed (chunked-prefill) batches, prefix-cache salting, compiled mode, live control.

One compiled engine serves the whole test session (docs/design.md §5b), built in a fresh compile cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from interventions.compiler import CompiledRecipe
from interventions.spec import Adjustment
from interventions.tiny import load_tiny
from workers.engines.base import (
    AdjustedEvent,
    FinishedEvent,
    GenerationRequest,
    ReadEvent,
    RequestError,
    SamplingParams,
    TokenEvent,
)
from workers.engines.hf import HFEngineCore
from workers.engines.threaded import ThreadedEngine

from .conftest import (
    CROSS_ENGINE_TOL,
    Result,
    assert_close_runs,
    assert_finish_reads_the_token_it_ends_at,
    assert_mixed_batch_matches_solo,
    assert_top_logprobs_are_the_most_likely_tokens,
    collect,
    forced_request,
    make_request,
    random_prompt,
    recipe_for,
    run_alone,
    scenarios,
)


@pytest.fixture
def vllm(vllm_core: Any) -> Any:
    """The session's compiled vLLM engine core (tests/conftest.py)."""
    return vllm_core


@pytest.fixture(scope="module")
def hf() -> HFEngineCore:
    model, tokenizer = load_tiny()
    return HFEngineCore(model, tokenizer, max_requests=16, num_blocks=32, max_batch_tokens=32)


def _recipe(core: Any, items: list[dict[str, Any]]) -> CompiledRecipe:
    return recipe_for(core.shape, items)


def _compare(hf: HFEngineCore, vllm: Any, req: GenerationRequest) -> tuple[Result, Result]:
    reference = run_alone(hf, req)
    other = run_alone(vllm, req)
    forced = run_alone(vllm, forced_request(req, reference.tokens))
    assert_close_runs(reference, other, forced=forced, tol=CROSS_ENGINE_TOL)
    return reference, other


# ---------------------------------------------------------------------------------------- every op
EVERY_OP: dict[str, list[dict[str, Any]]] = {
    "steer": [{"op": "steer", "layer": 1, "vector": "v1", "scale": 2.0}],
    "steer_unit_resid_pre_layer0": [
        {"op": "steer", "layer": 0, "point": "resid_pre", "vector": "v2", "scale": 3.0, "normalize": "unit"}
    ],
    "steer_resid_norm_attn_out": [
        {
            "op": "steer",
            "layer": 2,
            "point": "attn_out",
            "vector": "v2",
            "scale": 0.5,
            "normalize": "resid_norm",
        }
    ],
    "steer_mlp_act_generated": [
        {
            "op": "steer",
            "layer": -1,
            "point": "mlp_act",
            "vector": "vm",
            "scale": 2.0,
            "positions": "generated",
        }
    ],
    "project_out_mlp_out": [{"op": "project_out", "layer": 1, "point": "mlp_out", "direction": "v1"}],
    "clamp_prompt": [
        {
            "op": "clamp",
            "layer": 2,
            "point": "resid_pre",
            "direction": "v2",
            "value": 3.0,
            "positions": "prompt",
        }
    ],
    "ablate_zero_slice": [
        {"op": "ablate", "layer": 1, "dims": [1, 7, 30], "positions": {"start": 1, "step": 2}}
    ],
    "ablate_mean_mlp_act": [
        {"op": "ablate", "layer": 2, "point": "mlp_act", "dims": "all", "mode": "mean", "mean": "vm"}
    ],
    "patch_start": [
        {
            "op": "patch",
            "layer": 1,
            "source": {"tokens": [40, 41, 42, 43, 44, 45, 46, 47]},
            "positions": "prompt",
        }
    ],
    "patch_end_text": [
        {
            "op": "patch",
            "layer": 2,
            "point": "resid_pre",
            "source": {"text": "Steering a tiny model"},
            "align": "end",
            "positions": "last_prompt",
        }
    ],
    "probe_and_lens": [
        {"op": "probe", "layer": 0, "point": "resid_pre", "probe": "p1"},
        {"op": "probe", "layer": 2, "point": "mlp_act", "probe": "pm"},
        {"op": "probe", "layer": 3, "point": "attn_out", "probe": "p2", "positions": {"indices": [0, -1]}},
        {"op": "logit_lens", "layer": 1, "k": 4},
    ],
    "when_same_token": [
        {
            "op": "steer",
            "layer": 2,
            "vector": "v1",
            "scale": 1.5,
            "when": {"probe": "p1", "layer": 1, "threshold": 0.0},
        },
        {"op": "probe", "layer": 1, "probe": "p1"},
    ],
    "when_previous_token": [
        {
            "op": "steer",
            "layer": 0,
            "point": "resid_pre",
            "vector": "v2",
            "scale": 1.0,
            "when": {"probe": "p2", "layer": 3, "threshold": 0.0, "direction": "below"},
        }
    ],
}


@pytest.mark.parametrize("name", sorted(EVERY_OP))
def test_every_op_agrees_with_the_transformers_engine(hf: HFEngineCore, vllm: Any, name: str) -> None:
    recipe = _recipe(hf, EVERY_OP[name])
    req = make_request(f"op-{name}", random_prompt(len(name), 11), recipe, n=8)
    _, other = _compare(hf, vllm, req)
    if recipe.has_reads:
        assert len(other.reads) > 0


def test_plain_requests_agree_and_sampling_is_the_same_seeded_draw(hf: HFEngineCore, vllm: Any) -> None:
    _compare(hf, vllm, make_request("plain", random_prompt(1, 20), n=10))
    sampled = SamplingParams(max_new_tokens=12, temperature=1.3, top_p=0.9, seed=1234)
    a = run_alone(hf, make_request("s", random_prompt(2, 9), sampling=sampled))
    b = run_alone(vllm, make_request("s", random_prompt(2, 9), sampling=sampled))
    assert a.tokens == b.tokens, "both engines draw from the same (seed, position) noise"


# ---------------------------------------------------------------------------------------- compiled mode
# What the traced graph may call: torch's own ops and vLLM's kernels (attention, norms, activations).
VLLM_OP_NAMESPACES = {"aten", "prims", "_C", "vllm"}


def _captured_graphs(vllm: Any) -> list[str]:
    path = vllm.engine.vllm_config.compilation_config.debug_dump_path
    assert path is not None
    # The graph Dynamo captured (depyf names it before Inductor's passes), with its inputs' names.
    graphs = [f.read_text() for f in sorted(path.rglob("*.py")) if "BEFORE_PRE_GRAD" in f.name]
    assert graphs, f"no captured graph was dumped under {path}"
    return graphs


def test_the_sites_are_traced_into_the_compiled_graph(vllm: Any) -> None:
    """vLLM drops Dynamo's guards after its one trace, so Python state read in the forward would be
    frozen silently: the graph itself must hold the site math, over the plan's tables."""
    from vllm.config import CompilationConfig, CompilationMode

    config = vllm.engine.vllm_config.compilation_config
    # On the CPU vLLM traces once with Dynamo and compiles with Inductor (its GPU mode splits at attention).
    assert vllm.compiled and config.mode in (CompilationMode.VLLM_COMPILE, CompilationMode.DYNAMO_TRACE_ONCE)
    assert config.backend in ("", "inductor"), config.backend
    assert set(config.splitting_ops) <= set(CompilationConfig._attention_ops), config.splitting_ops
    graph = "\n".join(_captured_graphs(vllm))
    for math in ("lerp", "index_copy", "addmm", "remainder", "vector_norm"):
        assert math in graph, f"the site op's {math} is not in the graph"
    for table in ("steerlab_sites_buffers_hidden_ints", "steerlab_sites_buffers_step_row_slot"):
        assert table in graph, f"the graph does not read the table {table}"
    namespaces = set(re.findall(r"torch\.ops\.(\w+)\.", graph))
    assert namespaces <= VLLM_OP_NAMESPACES, f"opaque calls in the graph: {namespaces - VLLM_OP_NAMESPACES}"
    sites = vllm.shape.num_layers * 5
    assert graph.count("torch.lerp(") >= sites * vllm.plan.capacity.lanes


def test_changed_tables_recipes_and_layouts_never_recompile(hf: HFEngineCore, vllm: Any) -> None:
    """After the first compile: new recipes, scales and batch layouts give, step by step, what the
    transformers engine gives, with vLLM's compilation counter unchanged."""
    from vllm.compilation.counter import compilation_counter

    before = dataclasses.asdict(compilation_counter)
    prompt = random_prompt(3, 10)
    for i, items in enumerate(
        (
            [{"op": "steer", "layer": 1, "vector": "v1", "scale": 3.0}],
            [{"op": "steer", "layer": 1, "vector": "v2", "scale": -2.0, "point": "attn_out"}],
            [
                {"op": "clamp", "layer": 3, "direction": "v1", "value": 1.0},
                {"op": "probe", "layer": 0, "probe": "p2"},
            ],
        )
    ):
        recipe = _recipe(vllm, items)
        steered, _ = _compare(hf, vllm, make_request(f"t{i}", prompt, recipe, n=8))
        plain = run_alone(vllm, make_request(f"p{i}", prompt, n=8))
        assert steered.tokens != plain.tokens, "the new tables changed the output"
    # A scale moved mid-generation, replayed on the transformers engine from the same log.
    recipe = _recipe(vllm, [{"op": "steer", "layer": 2, "vector": "v1", "scale": 0.0}])
    moved = make_request("m", prompt, recipe, n=8, scheduled=((3, Adjustment(index=0, scale=5.0)),))
    _compare(hf, vllm, moved)
    # Another batch layout: three requests with different recipes in one chunked batch.
    assert_mixed_batch_matches_solo(
        vllm,
        [
            (0, [{"op": "steer", "layer": 0, "vector": "v2", "scale": 2.0}], 40, 5, 4),
            (1, [], 7, 5, 5),
            (1, [{"op": "probe", "layer": 3, "probe": "p1"}], 9, 5, 6),
        ],
    )
    assert dataclasses.asdict(compilation_counter) == before


# ---------------------------------------------------------------------------------------- isolation
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_every_request_in_a_mixed_batch_matches_its_solo_run(vllm: Any, scenario: Any) -> None:
    assert_mixed_batch_matches_solo(vllm, scenario)


def test_prefill_chunks_and_decodes_share_steps_without_mixing(vllm: Any) -> None:
    steered = _recipe(vllm, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 2.0}])
    probed = _recipe(
        vllm, [{"op": "probe", "layer": 2, "probe": "p1"}, {"op": "logit_lens", "layer": 3, "k": 2}]
    )
    schedule = [
        (0, make_request("steered", random_prompt(20, 10), steered, n=12)),
        (2, make_request("probed", random_prompt(21, 75), probed, n=6)),
        (3, make_request("plain", random_prompt(22, 50), n=6)),
    ]
    solo = {req.request_id: run_alone(vllm, req) for _, req in schedule}
    results: dict[str, Result] = {}
    pending = list(schedule)
    step = 0
    shared_steps = 0
    while pending or vllm.has_work():
        while pending and pending[0][0] <= step:
            vllm.add(pending.pop(0)[1])
        collect(vllm.step(), results)
        last = vllm.runtime.last
        if last is not None:
            counts = [int(b - a) for a, b in zip(last.starts[:-1], last.starts[1:], strict=True)]
            shared_steps += any(c == 1 for c in counts) and any(c > 1 for c in counts)
        step += 1
    assert shared_steps >= 2, "prefill chunks ran in the same forward as other requests' decodes"
    for _, req in schedule:
        assert_close_runs(solo[req.request_id], results[req.request_id])
    assert len(results["probed"].reads) == 75 + 6


def _first_forward_start(vllm: Any, req: GenerationRequest) -> tuple[Result, int]:
    """Run ``req`` alone; also return the position its first forward started at (> 0: a prefix-cache hit)."""
    results: dict[str, Result] = {}
    vllm.add(req)
    first = -1
    while vllm.has_work():
        collect(vllm.step(), results)
        last = vllm.runtime.last
        if first < 0 and last is not None and req.request_id in last.keys:
            first = int(last.first_pos[last.keys.index(req.request_id)])
    return results[req.request_id], first


def test_prefix_cache_never_shares_kv_across_intervention_histories(vllm: Any) -> None:
    block = vllm._scheduler.block_size
    prompt = random_prompt(30, 2 * block + 7)
    steered = _recipe(vllm, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 2.0}])
    plain_first, _ = _first_forward_start(vllm, make_request("u1", prompt, n=6))
    steered_run, _ = _first_forward_start(vllm, make_request("s1", prompt, steered, n=6))
    assert steered_run.tokens != plain_first.tokens
    plain_again, start = _first_forward_start(vllm, make_request("u2", prompt, n=6))
    assert start >= block, "the plain prefix is served from the cache"
    assert_close_runs(plain_first, plain_again)
    # The same intervention history shares its own KV.
    steered_again, start = _first_forward_start(vllm, make_request("s2", prompt, steered, n=6))
    assert start >= block
    assert_close_runs(steered_run, steered_again)
    # A different history (another scale) does not.
    other = make_request("s3", prompt, steered, n=6, overrides=(Adjustment(index=0, scale=-2.0),))
    _, start = _first_forward_start(vllm, other)
    assert start == 0


def test_a_live_adjustment_resalts_the_blocks_computed_after_it(vllm: Any) -> None:
    block = vllm._scheduler.block_size
    prompt = random_prompt(31, 2 * block + 5)
    steer = [{"op": "steer", "layer": 1, "vector": "v1", "scale": 0.0}]
    recipe = _recipe(vllm, steer)
    results: dict[str, Result] = {}
    vllm.add(make_request("adj", prompt, recipe, n=block))
    adjusted_at = None
    while vllm.has_work():
        collect(vllm.step(), results)
        if adjusted_at is None and results.get("adj") and results["adj"].tokens:
            # The prompt is computed (under scale 0); every later position is computed under scale 4.
            adjusted_at = len(results["adj"].tokens)
            vllm.adjust("adj", Adjustment(index=0, scale=4.0))
    adjusted = results["adj"]
    assert adjusted_at == 1
    # A next turn with the adjusted run's starting history, over its output: only the two blocks
    # computed before the adjustment may come from the cache.
    follow = prompt + tuple(adjusted.tokens)
    reused, start = _first_forward_start(vllm, make_request("next", follow, recipe, n=4))
    assert start == 2 * block
    with_read = [*steer, {"op": "probe", "layer": 0, "probe": "p1"}]
    reference = run_alone(vllm, make_request("ref", follow, _recipe(vllm, with_read), n=4))  # reads: no cache
    assert reference.tokens == reused.tokens
    for a, b in zip(reference.logits, reused.logits, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------- live control
def test_adjust_applies_from_the_next_token_and_replays_from_its_log(vllm: Any) -> None:
    recipe = _recipe(vllm, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 0.0}])
    req = make_request("a", random_prompt(8, 6), recipe, n=10)
    plain = run_alone(vllm, req)
    results: dict[str, Result] = {}
    vllm.add(req)
    step = 0
    while vllm.has_work():
        if step == 4:
            vllm.adjust("a", Adjustment(index=0, scale=6.0))
        collect(vllm.step(), results)
        step += 1
    adjusted = results["a"]
    acks = [e for e in adjusted.events if isinstance(e, AdjustedEvent)]
    assert len(acks) == 1 and acks[0].index == 4
    assert adjusted.tokens[:4] == plain.tokens[:4]
    assert adjusted.tokens[4:] != plain.tokens[4:]
    log = ((4, acks[0].adjustment),)
    replay = run_alone(
        vllm,
        GenerationRequest("a", req.prompt_tokens, recipe, req.sampling, scheduled=log, record_logits=True),
    )
    assert replay.tokens == adjusted.tokens


def test_abort_and_control_before_admission(vllm: Any) -> None:
    results: dict[str, Result] = {}
    vllm.add(make_request("long", random_prompt(10, 4), n=50))
    vllm.add(make_request("short", random_prompt(11, 4), n=5))
    for _ in range(3):
        collect(vllm.step(), results)
    vllm.abort("long")
    collect(vllm.step(), results)
    fin = results["long"].finished
    assert fin is not None and fin.reason == "aborted" and len(fin.tokens) == 3
    recipe = _recipe(vllm, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 5.0}])
    vllm.add(make_request("stopped", random_prompt(12, 4), n=20))
    vllm.abort("stopped")
    vllm.add(make_request("adjusted", random_prompt(13, 4), recipe, n=4))
    vllm.adjust("adjusted", Adjustment(index=0, scale=0.0))
    while vllm.has_work():
        collect(vllm.step(), results)
    assert len(results["short"].tokens) == 5
    fin = results["stopped"].finished
    assert fin is not None and fin.reason == "aborted" and fin.tokens == ()
    plain = run_alone(vllm, make_request("plain", random_prompt(13, 4), n=4))
    assert results["adjusted"].tokens == plain.tokens
    assert vllm.live_requests() == 0 and len(vllm.plan) == 0


def test_finish_ends_a_request_once_the_token_is_read(vllm: Any) -> None:
    assert_finish_reads_the_token_it_ends_at(
        vllm, _recipe(vllm, [{"op": "probe", "layer": 2, "probe": "p1"}])
    )


def test_top_logprobs_are_the_most_likely_tokens(vllm: Any) -> None:
    assert_top_logprobs_are_the_most_likely_tokens(vllm)


def test_stop_tokens_and_reads_of_the_last_token(hf: HFEngineCore, vllm: Any) -> None:
    probe = _recipe(vllm, [{"op": "probe", "layer": 2, "probe": "p1"}])
    first = run_alone(vllm, make_request("f", random_prompt(15, 5), probe, n=6))
    stop = first.tokens[2]
    req = make_request(
        "st", random_prompt(15, 5), probe, sampling=SamplingParams(max_new_tokens=6, stop_token_ids=(stop,))
    )
    _, other = _compare(hf, vllm, req)
    assert other.finished is not None and other.finished.reason == "stop"
    assert sorted(other.reads) == list(range(5 + len(other.tokens)))


def test_bad_requests_are_refused_before_any_forward(vllm: Any) -> None:
    passes = vllm.forward_passes
    for req, message in [
        (make_request("a", ()), "the prompt is empty"),
        (make_request("a", (1, 100_000)), "prompt token ids must be in [0, 512)"),
        (make_request("a", random_prompt(1, 4), n=5000), "exceeds the engine's context"),
        (
            make_request("a", (1, 2), overrides=(Adjustment(index=3, scale=1.0),)),
            "not a write op",
        ),
    ]:
        with pytest.raises(RequestError, match=message.replace("[", r"\[").replace(")", r"\)")):
            vllm.add(req)
    assert vllm.forward_passes == passes and not vllm.has_work()


def test_the_threaded_engine_streams_vllm_events_with_live_control(vllm: Any) -> None:
    engine = ThreadedEngine(vllm, name="vllm-test")
    recipe = _recipe(
        vllm,
        [
            {"op": "steer", "layer": 1, "vector": "v1", "scale": 0.0},
            {"op": "probe", "layer": 2, "probe": "p1"},
        ],
    )

    async def main() -> list[Any]:
        events = []
        async for event in engine.submit(make_request("t", random_prompt(16, 5), recipe, n=10)):
            events.append(event)
            if isinstance(event, TokenEvent) and event.index == 2:
                engine.adjust("t", Adjustment(index=0, scale=5.0))
        return events

    try:
        events = asyncio.run(main())
    finally:
        engine.shutdown(close_core=False)  # the module's engine stays open for the other tests
    assert isinstance(events[-1], FinishedEvent) and events[-1].reason == "length"
    assert sum(isinstance(e, TokenEvent) for e in events) == 10
    assert sum(isinstance(e, ReadEvent) for e in events) == 5 + 10
    assert any(isinstance(e, AdjustedEvent) for e in events)

"""The transformers engine: isolation, no recomputation, live control, reads, and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from interventions.compiler import CompiledRecipe, RecipeError, VectorData, compile_recipe
from interventions.plan import Capacity
from interventions.spec import Adjustment, parse_recipe
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
from workers.engines.hf import HFEngine, HFEngineCore

from .conftest import (
    HIDDEN,
    RESOLVED,
    Result,
    assert_close_runs,
    assert_finish_reads_the_token_it_ends_at,
    assert_mixed_batch_matches_solo,
    assert_top_logprobs_are_the_most_likely_tokens,
    collect,
    recipe_for,
    run_alone,
    run_schedule,
    scenarios,
)
from .conftest import (
    forced_request as _forced,
)
from .conftest import (
    make_request as _req,
)
from .conftest import (
    random_prompt as _prompt,
)

MakeCore = Callable[..., HFEngineCore]


def _recipe(core: HFEngineCore, items: list[dict[str, Any]]) -> CompiledRecipe:
    return recipe_for(core.shape, items)


# ---------------------------------------------------------------------------------------- isolation
@pytest.fixture(scope="module")
def shared_core() -> HFEngineCore:
    model, tokenizer = load_tiny()
    return HFEngineCore(model, tokenizer, max_requests=16, num_blocks=16, max_batch_tokens=48)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios())
def test_every_request_in_a_mixed_batch_matches_its_solo_run(
    shared_core: HFEngineCore, scenario: Any
) -> None:
    assert_mixed_batch_matches_solo(shared_core, scenario)


# ---------------------------------------------------------------------------------------- scheduling
def test_a_request_joining_mid_decode_recomputes_nothing(make_core: MakeCore) -> None:
    core = make_core()
    rows: list[int] = []
    core.model.get_input_embeddings().register_forward_hook(lambda m, i, o: rows.append(int(i[0].numel())))
    a = _req("a", _prompt(1, 9), n=8)
    b = _req("b", _prompt(2, 5), n=4)
    results = run_schedule(core, [(0, a), (3, b)])
    # One prefill forward for a, then 7 decode forwards; b's prefill rides in a's 4th forward.
    assert core.forward_passes == 8
    assert rows == [9, 1, 1, 5 + 1, 2, 2, 2, 1]
    assert sum(rows) == 9 + 7 + 5 + 3, "every token was fed exactly once"
    assert results["a"].tokens == run_alone(make_core(), a).tokens
    assert results["b"].tokens == run_alone(make_core(), b).tokens


def test_reads_cover_every_token_including_the_last_generated(make_core: MakeCore) -> None:
    core = make_core()
    recipe = _recipe(
        core, [{"op": "probe", "layer": 1, "probe": "p1"}, {"op": "logit_lens", "layer": 2, "k": 2}]
    )
    res = run_alone(core, _req("a", _prompt(3, 5), recipe, n=4))
    assert sorted(res.reads) == list(range(5 + 4))
    assert all(set(r.probes) == {0} and set(r.lens) == {1} for r in res.reads.values())
    assert core.forward_passes == 1 + 4, "one extra forward reads the last token"
    assert res.tokens == run_alone(make_core(), _req("a", _prompt(3, 5), n=4)).tokens
    order = [type(e).__name__ for e in res.events]
    assert order[-3:] == ["TokenEvent", "ReadEvent", "FinishedEvent"]


def test_read_positions_follow_the_selector(make_core: MakeCore) -> None:
    core = make_core()
    recipe = _recipe(
        core,
        [
            {"op": "probe", "layer": 1, "probe": "p1", "positions": "generated"},
            {"op": "probe", "layer": 1, "probe": "p2", "positions": {"indices": [-1]}},
        ],
    )
    res = run_alone(core, _req("a", _prompt(4, 6), recipe, n=3))
    assert sorted(res.reads) == [5, 6, 7, 8]
    assert set(res.reads[5].probes) == {1}
    assert all(set(res.reads[p].probes) == {0} for p in (6, 7, 8))


def test_stop_tokens_finish_with_reason_stop(make_core: MakeCore) -> None:
    core = make_core()
    prompt = _prompt(5, 6)
    free = run_alone(core, _req("a", prompt, n=6))
    stop_at = free.tokens[2]
    res = run_alone(
        core, _req("b", prompt, sampling=SamplingParams(max_new_tokens=6, stop_token_ids=(stop_at,)))
    )
    first = free.tokens.index(stop_at)
    assert res.tokens == free.tokens[: first + 1]
    assert res.finished is not None and res.finished.reason == "stop"


# ---------------------------------------------------------------------------------------- sampling
def test_seeded_sampling_is_independent_of_the_batch(make_core: MakeCore) -> None:
    core = make_core()
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7)
    req = _req("s", _prompt(6, 4), sampling=sampled)
    alone = run_alone(core, req)
    others = [(0, _req(f"o{i}", _prompt(10 + i, 3 + i), n=8)) for i in range(3)]
    mixed = run_schedule(core, [*others, (1, req)])
    assert mixed["s"].tokens == alone.tokens
    reseeded = run_alone(core, _req("s", _prompt(6, 4), sampling=SamplingParams(8, 1.0, 0.9, seed=8)))
    assert reseeded.tokens != alone.tokens
    greedy = run_alone(core, _req("g", _prompt(6, 4), n=8))
    assert greedy.tokens != alone.tokens


def test_prompts_that_overflow_a_step_s_token_budget_each_match_their_solo_run(make_core: MakeCore) -> None:
    # Five 20-token prompts at once and 48 tokens per forward: prefills are split across steps, so
    # a step holds requests whose prefill is unfinished (no new token) beside ones that sample.
    core = make_core(max_batch_tokens=48, num_blocks=32)
    recipe = _recipe(core, [{"op": "probe", "layer": 1, "probe": "p1"}])
    requests = [
        _req(
            f"r{i}",
            _prompt(40 + i, 20),
            recipe,
            sampling=SamplingParams(max_new_tokens=4, temperature=float(i % 2), seed=i),
        )
        for i in range(5)
    ]
    mixed = run_schedule(core, [(0, r) for r in requests])
    for r in requests:
        assert_close_runs(run_alone(make_core(), r), mixed[r.request_id])
        assert len(mixed[r.request_id].tokens) == 4 and sorted(mixed[r.request_id].reads) == list(range(24))


# ---------------------------------------------------------------------------------------- hooks reference
def test_engine_steering_equals_a_plain_forward_hook_implementation(make_core: MakeCore) -> None:
    core = make_core()
    v = RESOLVED["v1"].directions[2]
    recipe = _recipe(core, [{"op": "steer", "layer": 2, "vector": "v1", "scale": 3.0}])
    prompt = _prompt(7, 10)
    engine = run_alone(core, _req("a", prompt, recipe, n=8))

    reference, _ = load_tiny()
    layer = reference.model.layers[2]
    layer.register_forward_hook(
        lambda m, i, o: (o[0] + 3.0 * v, *o[1:]) if isinstance(o, tuple) else o + 3.0 * v
    )
    out = reference.generate(
        torch.tensor([prompt]),
        max_new_tokens=8,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    hooked = Result(tokens=out.sequences[0, len(prompt) :].tolist(), logits=[lg[0] for lg in out.logits])
    hooked.finished = FinishedEvent("a", "length", tuple(hooked.tokens))
    unsteered = run_alone(core, _req("b", prompt, n=8))
    assert unsteered.tokens != engine.tokens, "the steering changes the output"
    forced = run_alone(core, _forced(_req("a", prompt, recipe, n=8), hooked.tokens))
    assert_close_runs(hooked, engine, forced=forced)


# ---------------------------------------------------------------------------------------- live control
def _run_with_adjust_at(core: HFEngineCore, req: GenerationRequest, step: int, adj: Adjustment) -> Result:
    results: dict[str, Result] = {}
    core.add(req)
    n = 0
    while core.has_work():
        if n == step:
            core.adjust(req.request_id, adj)
        collect(core.step(), results)
        n += 1
    return results[req.request_id]


def test_adjust_applies_from_the_next_token_and_replays_from_its_log(make_core: MakeCore) -> None:
    core = make_core()
    recipe = _recipe(core, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 0.0}])
    req = _req("a", _prompt(8, 6), recipe, n=10)
    plain = run_alone(core, req)
    adjusted = _run_with_adjust_at(core, req, 4, Adjustment(index=0, scale=6.0))
    acks = [e for e in adjusted.events if isinstance(e, AdjustedEvent)]
    # Steps 0-3 produced tokens 0-3; the adjustment queued before step 4 shapes token 4 on.
    assert len(acks) == 1 and acks[0].index == 4
    at = acks[0].index
    assert adjusted.tokens[:at] == plain.tokens[:at], "tokens before the adjustment are unchanged"
    assert adjusted.tokens[at:] != plain.tokens[at:], "the following tokens change"
    log = ((at, acks[0].adjustment),)
    replay = run_alone(
        core,
        GenerationRequest("a", req.prompt_tokens, recipe, req.sampling, scheduled=log, record_logits=True),
    )
    assert replay.tokens == adjusted.tokens
    for a, b in zip(replay.logits, adjusted.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_disable_toggle_and_overrides(make_core: MakeCore) -> None:
    core = make_core()
    recipe = _recipe(core, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 5.0}])
    prompt = _prompt(9, 5)
    plain = run_alone(core, _req("p", prompt, n=6))
    off = run_alone(core, _req("a", prompt, recipe, n=6, overrides=(Adjustment(index=0, enabled=False),)))
    assert off.tokens == plain.tokens
    steered = run_alone(core, _req("b", prompt, recipe, n=6))
    assert steered.tokens != plain.tokens


def test_abort_finishes_within_one_step(make_core: MakeCore) -> None:
    core = make_core()
    results: dict[str, Result] = {}
    core.add(_req("a", _prompt(10, 4), n=50))
    core.add(_req("b", _prompt(11, 4), n=5))
    for _ in range(3):
        collect(core.step(), results)
    core.abort("a")
    collect(core.step(), results)
    fin = results["a"].finished
    assert fin is not None and fin.reason == "aborted" and len(fin.tokens) == 3
    while core.has_work():
        collect(core.step(), results)
    assert len(results["b"].tokens) == 5
    assert core.live_requests() == 0 and len(core.plan) == 0


def test_finish_ends_a_request_once_the_token_is_read(make_core: MakeCore) -> None:
    core = make_core()
    assert_finish_reads_the_token_it_ends_at(
        core, _recipe(core, [{"op": "probe", "layer": 1, "probe": "p1"}])
    )


def test_top_logprobs_are_the_most_likely_tokens(make_core: MakeCore) -> None:
    assert_top_logprobs_are_the_most_likely_tokens(make_core())


def test_control_sent_before_admission_is_kept(make_core: MakeCore) -> None:
    """A stop or an adjustment that arrives between ``add`` and the request's first step applies."""
    core = make_core()
    results: dict[str, Result] = {}
    recipe = _recipe(core, [{"op": "steer", "layer": 1, "vector": "v1", "scale": 5.0}])
    core.add(_req("stopped", _prompt(12, 4), n=20))
    core.abort("stopped")
    core.add(_req("adjusted", _prompt(13, 4), recipe, n=4))
    core.adjust("adjusted", Adjustment(index=0, scale=0.0))
    while core.has_work():
        collect(core.step(), results)
    fin = results["stopped"].finished
    assert fin is not None and fin.reason == "aborted" and fin.tokens == ()
    acks = [e for e in results["adjusted"].events if isinstance(e, AdjustedEvent)]
    assert [(e.index, e.adjustment.scale) for e in acks] == [(0, 0.0)]
    plain = run_alone(core, _req("plain", _prompt(13, 4), n=4))
    assert results["adjusted"].tokens == plain.tokens  # scale 0 from the first token: unsteered


# ---------------------------------------------------------------------------------------- bad input
def test_bad_requests_are_refused_before_any_forward(make_core: MakeCore) -> None:
    core = make_core()
    ok = _recipe(core, [{"op": "steer", "layer": 1, "vector": "v1"}])
    bad: list[tuple[GenerationRequest, str]] = [
        (_req("a", ()), "the prompt is empty"),
        (_req("a", (1, 100_000)), "prompt token ids must be in [0, 512)"),
        (_req("a", (1, -3)), "prompt token ids"),
        (_req("", (1, 2)), "request_id"),
        (_req("a", _prompt(1, 4), n=5000), "exceeds the engine's context"),
        (_req("a", (1, 2), ok, overrides=(Adjustment(index=3, scale=1.0),)), "not a write op"),
        (
            _req(
                "a",
                (1, 2),
                _recipe(core, [{"op": "probe", "layer": 0, "probe": "p1", "positions": {"indices": [-3]}}]),
            ),
            "before the start of a 2-token prompt",
        ),
        (_req("a", (1, 2), forced_tokens=(999,)), "forced token ids"),
    ]
    for req, needle in bad:
        with pytest.raises(RequestError) as err:
            core.add(req)
        assert needle in str(err.value)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(RecipeError, match="out of range"):
        _recipe(core, [{"op": "steer", "layer": 9, "vector": "v1"}])
    with pytest.raises(RecipeError, match="does not match the site's width"):
        compile_recipe(
            parse_recipe({"interventions": [{"op": "steer", "layer": 0, "vector": "w"}]}),
            core.shape,
            {"w": VectorData.of({0: torch.ones(HIDDEN + 1)})},
        )
    core.add(_req("dup", (1, 2)))
    with pytest.raises(RequestError, match="already live"):
        core.add(_req("dup", (3, 4)))
    assert core.forward_passes == 0, "nothing ran"


# ---------------------------------------------------------------------------------------- async engine
def test_async_engine_streams_events_and_takes_live_control() -> None:
    model, tokenizer = load_tiny()
    engine = HFEngine(HFEngineCore(model, tokenizer, max_requests=8, num_blocks=8, min_step_time=0.01))
    recipe = compile_recipe(
        parse_recipe(
            {
                "interventions": [
                    {"op": "steer", "layer": 1, "vector": "v1", "scale": 0.0},
                    {"op": "probe", "layer": 2, "probe": "p1"},
                ]
            }
        ),
        engine.core.shape,
        RESOLVED,
    )

    async def main() -> tuple[list[Any], list[Any]]:
        async def consume(req: GenerationRequest, adjust_after: int | None) -> list[Any]:
            events = []
            async for event in engine.submit(req):
                events.append(event)
                if isinstance(event, TokenEvent) and event.index == adjust_after:
                    engine.adjust(req.request_id, Adjustment(index=0, scale=5.0))
            return events

        return await asyncio.gather(
            consume(_req("x", _prompt(12, 5), recipe, n=12), adjust_after=2),
            consume(_req("y", _prompt(13, 5), n=12), adjust_after=None),
        )

    async def walk_away() -> None:
        stream = engine.submit(_req("w", _prompt(14, 5), n=400))
        async for event in stream:
            if isinstance(event, TokenEvent):
                break
        await stream.aclose()
        for _ in range(200):  # the engine aborts it within a step or two
            if engine.core.live_requests() == 0:
                return
            await asyncio.sleep(0.01)

    try:
        ev_x, ev_y = asyncio.run(main())
        asyncio.run(walk_away())
        assert engine.core.live_requests() == 0, "a consumer that went away leaves nothing generating"
        with pytest.raises(RequestError):
            asyncio.run(anext(engine.submit(_req("z", ()))))  # type: ignore[arg-type]
    finally:
        engine.shutdown()
    assert isinstance(ev_x[-1], FinishedEvent) and isinstance(ev_y[-1], FinishedEvent)
    assert sum(isinstance(e, TokenEvent) for e in ev_x) == 12
    assert sum(isinstance(e, ReadEvent) for e in ev_x) == 5 + 12
    assert any(isinstance(e, AdjustedEvent) for e in ev_x)
    assert not any(isinstance(e, ReadEvent) for e in ev_y)


# ---------------------------------------------------------------------------------------- gates, patches
def test_previous_token_gate_equals_explicit_positions_where_it_fired(make_core: MakeCore) -> None:
    core = make_core()
    prompt = _prompt(14, 6)
    reference = run_alone(
        core, _req("ref", prompt, _recipe(core, [{"op": "probe", "layer": 3, "probe": "p2"}]), n=10)
    )
    generated = [reference.reads[p].probes[0] for p in range(6, 16)]
    threshold = sorted(generated)[len(generated) // 2]
    gate = {"probe": "p2", "layer": 3, "threshold": threshold}  # after the write: previous token's score
    gated = _recipe(
        core,
        [
            {"op": "steer", "layer": 0, "point": "resid_pre", "vector": "v1", "scale": 0.1, "when": gate},
            {"op": "probe", "layer": 3, "probe": "p2"},
        ],
    )
    forced = reference.tokens
    run = run_alone(core, _forced(_req("g", prompt, gated, n=10), forced))
    scores = {p: run.reads[p].probes[1] for p in run.reads}
    fired = [p for p in range(6, 16) if scores[p - 1] > threshold]
    assert 0 < len(fired) < 10, "the gate must fire on some generated tokens and not on others"
    explicit = _recipe(
        core,
        [
            {
                "op": "steer",
                "layer": 0,
                "point": "resid_pre",
                "vector": "v1",
                "scale": 0.1,
                "positions": {"indices": fired},
            },
            {"op": "probe", "layer": 3, "probe": "p2"},
        ],
    )
    same = run_alone(core, _forced(_req("e", prompt, explicit, n=10), forced))
    for a, b in zip(run.logits, same.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert all(abs(run.reads[p].probes[1] - same.reads[p].probes[1]) <= 1e-5 for p in run.reads)
    never = _recipe(core, [{"op": "probe", "layer": 3, "probe": "p2"}])
    unsteered = run_alone(core, _forced(_req("u", prompt, never, n=10), forced))
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(run.logits, unsteered.logits, strict=True))


def test_patch_through_the_engine_reproduces_the_source_prompt(make_core: MakeCore) -> None:
    core = make_core()
    tokenizer = core.tokenizer
    source_text, target_text = "The cat sat on the mat.", "A dog ran in the park!"
    source = tuple(tokenizer.encode(source_text, add_special_tokens=False))
    target = tuple(tokenizer.encode(target_text, add_special_tokens=False))
    assert len(source) == len(target) and source != target
    clean = run_alone(core, _req("s", source, n=3))
    for spec in ({"text": source_text}, {"tokens": list(source)}):
        recipe = _recipe(core, [{"op": "patch", "layer": 1, "source": spec, "positions": "prompt"}])
        patched = run_alone(core, _req("t", target, recipe, n=3))
        # Every prompt position's residual at layer 1 is the source's: the next token's logits are too.
        torch.testing.assert_close(patched.logits[0], clean.logits[0], rtol=0, atol=1e-5)
    plain = run_alone(core, _req("u", target, n=3))
    assert (plain.logits[0] - clean.logits[0]).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------- the site op compiled
def test_the_compiled_site_op_never_recompiles_when_tables_recipes_or_layouts_change(
    make_core: MakeCore,
) -> None:
    """With Dynamo's guards live (the transformers engine keeps them), any Python state the site op
    read would recompile it when it changed: after warming up both widths and both row counts
    (prefill, decode), new recipes, scales and batch layouts add no graph and no recompilation,
    and give what the eager op gives."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = make_core(compile_sites="eager", max_batch_tokens=32)
    eager = make_core(max_batch_tokens=32)
    warm = _recipe(
        compiled,
        [
            {"op": "steer", "layer": 1, "vector": "v1"},
            {"op": "probe", "layer": 2, "point": "mlp_act", "probe": "pm"},
        ],
    )
    for core in (compiled, eager):
        run_alone(core, _req("warm", _prompt(1, 9), warm, n=3))
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1 and not counters["graph_break"]
    schedule = [
        (
            0,
            _req(
                "gated",
                _prompt(2, 12),
                _recipe(
                    compiled,
                    [
                        {
                            "op": "steer",
                            "layer": 2,
                            "vector": "v2",
                            "scale": 2.0,
                            "when": {"probe": "p1", "layer": 1, "threshold": 0.0},
                        },
                        {"op": "ablate", "layer": 3, "point": "mlp_act", "dims": [1, 5]},
                        {"op": "logit_lens", "layer": 1, "k": 3},
                    ],
                ),
                n=6,
            ),
        ),
        (
            1,
            _req(
                "late",
                _prompt(3, 5),
                _recipe(
                    compiled,
                    [
                        {
                            "op": "clamp",
                            "layer": 0,
                            "point": "resid_pre",
                            "direction": "v1",
                            "value": 2.0,
                            "positions": {"indices": [0, -1]},
                        },
                        {
                            "op": "steer",
                            "layer": 0,
                            "vector": "v2",
                            "when": {"probe": "p2", "layer": 3, "threshold": 0.0},
                        },
                    ],
                ),
                n=6,
                scheduled=((2, Adjustment(index=0, scale=-1.0)),),
            ),
        ),
        (2, _req("plain", _prompt(4, 20), n=4)),
    ]
    ours, theirs = run_schedule(compiled, schedule), run_schedule(eager, schedule)
    for _, req in schedule:
        assert_close_runs(theirs[req.request_id], ours[req.request_id])
    assert counters["stats"]["unique_graphs"] == graphs, "a table change recompiled the site op"
    assert not counters["recompiles"] and not counters["graph_break"]


def test_requests_that_do_not_fit_the_tables_are_refused_by_name(make_core: MakeCore) -> None:
    core = make_core(
        capacity=Capacity(
            max_rows=64,
            max_requests=4,
            lanes=2,
            probes_per_site=2,
            bank_rows=4,
            points=("resid_post", "mlp_act"),
        )
    )
    three = [{"op": "steer", "layer": 1, "vector": v} for v in ("v1", "v2", "v1")]
    for items, needle in (
        (three, "3 write interventions at layer 1 resid_post; this deployment applies at most 2 per site"),
        (
            [{"op": "steer", "layer": 1, "point": "attn_out", "vector": "v1"}],
            "point attn_out is not compiled into this deployment",
        ),
    ):
        with pytest.raises(RequestError, match=needle):
            core.add(_req("x", _prompt(1, 4), _recipe(core, items)))
    # Tables that fill up at admission: the request ends with the reason, the others run.
    results: dict[str, Result] = {}
    probes = [{"op": "probe", "layer": 2, "probe": p} for p in ("p1", "p2")]
    core.add(_req("two-probes", _prompt(2, 4), _recipe(core, probes), n=3))
    core.add(_req("third", _prompt(3, 4), _recipe(core, [{"op": "probe", "layer": 2, "probe": "p3"}]), n=3))
    core.add(
        _req(
            "bank",
            _prompt(4, 4),
            _recipe(core, [{"op": "steer", "layer": layer, "vector": "v1"} for layer in range(4)]),
            n=3,
        )
    )
    while core.has_work():
        collect(core.step(), results)
    assert results["two-probes"].finished.reason == "length"
    for rid, needle in (
        ("third", "more than 2 probes at layer 2 resid_post"),
        ("bank", "the residual-width bank is full"),
    ):
        fin = results[rid].finished
        assert fin is not None and fin.reason == "error" and needle in (fin.error or ""), fin
    assert len(core.plan) == 0

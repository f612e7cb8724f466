"""Collect requests: a prompt's activations at chosen sites, through the shared engine (the input of
vector building, probe training and probe evaluation), on both engines."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from interventions.compiler import Site
from interventions.tiny import load_tiny
from workers.engines.base import (
    Collect,
    CollectedEvent,
    FinishedEvent,
    GenerationRequest,
    RequestError,
)
from workers.engines.hf import HFEngineCore

from .conftest import (
    CROSS_ENGINE_TOL,
    assert_close_runs,
    forced_request,
    make_request,
    random_prompt,
    recipe_for,
    run_alone,
    run_schedule,
)

SITES: tuple[Site, ...] = ((0, "resid_pre"), (1, "resid_post"), (2, "mlp_act"), (3, "attn_out"))
# Collected activations are float32 (as the model computes them on the CPU): the engine's packed,
# paged forward and transformers' plain one differ only by float32 rounding.
RTOL = 1e-5
ATOL = 1e-5


def _close(got: torch.Tensor, expected: torch.Tensor, extra: float = 0.0) -> None:
    torch.testing.assert_close(got, expected.float(), rtol=RTOL, atol=ATOL + extra)


def _collect(
    rid: str, prompt: tuple[int, ...], reduce: str = "none", sites: tuple[Site, ...] = SITES
) -> GenerationRequest:
    return GenerationRequest(rid, prompt, collect=Collect(sites, reduce))  # type: ignore[arg-type]


def _activations(core: Any, request: GenerationRequest) -> dict[Site, torch.Tensor]:
    result = run_alone(core, request)
    collected = [e for e in result.events if isinstance(e, CollectedEvent)]
    assert len(collected) == 1, result.events
    assert result.finished == FinishedEvent(request.request_id, "stop", ())
    assert result.tokens == []  # nothing is generated
    return dict(collected[0].activations)


@pytest.fixture(scope="module")
def hf() -> HFEngineCore:
    model, tokenizer = load_tiny()
    return HFEngineCore(model, tokenizer, max_requests=16, num_blocks=32, max_batch_tokens=32)


def test_collect_returns_the_unsteered_prompts_activations_at_each_site(hf: HFEngineCore) -> None:
    prompt = random_prompt(1, 9)
    got = _activations(hf, _collect("c", prompt))
    assert set(got) == set(SITES)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in got.values())
    assert got[(2, "mlp_act")].shape == (9, hf.shape.mlp_size)
    # The residual stream, against transformers' own hidden states (layer L's input is hidden_states[L]).
    model, _ = load_tiny()
    with torch.no_grad():
        hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states
    _close(got[(0, "resid_pre")], hidden[0][0])
    _close(got[(1, "resid_post")], hidden[2][0])

    last = _activations(hf, _collect("l", prompt, "last"))
    mean = _activations(hf, _collect("m", prompt, "mean"))
    for site in SITES:
        assert last[site].shape == (got[site].shape[1],)
        _close(last[site], got[site][-1].float())
        _close(mean[site], got[site].float().mean(0))


def test_collect_requests_share_the_batch_without_touching_other_requests(hf: HFEngineCore) -> None:
    steered = make_request(
        "gen",
        random_prompt(2, 12),
        recipe_for(
            hf.shape,
            [
                {"op": "steer", "vector": "v1", "layer": 1, "scale": 3.0},
                {"op": "probe", "probe": "p1", "layer": 2},
            ],
        ),
        n=10,
    )
    solo = run_alone(hf, steered)
    alone = {
        i: _activations(hf, _collect(f"alone{i}", random_prompt(10 + i, 5 + i), "mean")) for i in range(3)
    }
    schedule = [(0, steered)] + [
        (1 + 2 * i, _collect(f"c{i}", random_prompt(10 + i, 5 + i), "mean")) for i in range(3)
    ]
    mixed = run_schedule(hf, schedule)
    forced = run_schedule(
        hf, [(j, forced_request(r, solo.tokens) if r is steered else r) for j, r in schedule]
    )
    assert_close_runs(solo, mixed["gen"], forced=forced["gen"])
    for i in range(3):
        (event,) = [e for e in mixed[f"c{i}"].events if isinstance(e, CollectedEvent)]
        for site in SITES:
            torch.testing.assert_close(event.activations[site], alone[i][site], rtol=0, atol=0)


def test_activations_beyond_float16_s_range_are_collected_exactly() -> None:
    """Residual streams of real models exceed 65504 (float16's largest value): scaled embeddings put
    this model's there, and every collected value stays finite and equal to transformers'."""
    model, tokenizer = load_tiny()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1e6)
    prompt = random_prompt(7, 8)
    with torch.no_grad():  # before the engine hooks the model
        hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states
    core = HFEngineCore(model, tokenizer, max_requests=4, num_blocks=8, max_batch_tokens=32)
    got = _activations(core, _collect("big", prompt, sites=((0, "resid_pre"), (1, "resid_post"))))
    assert got[(0, "resid_pre")].abs().max() > 65504
    assert all(torch.isfinite(t).all() for t in got.values())
    _close(got[(0, "resid_pre")], hidden[0][0])
    torch.testing.assert_close(
        got[(1, "resid_post")], hidden[2][0], rtol=RTOL, atol=hidden[2].abs().max() * RTOL
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (GenerationRequest("r", (5, 6), collect=Collect(())), "1 to"),
        (GenerationRequest("r", (5, 6), collect=Collect(((9, "resid_post"),))), "out of range"),
        (GenerationRequest("r", (5, 6), collect=Collect(((-1, "resid_post"),))), "out of range"),
        (GenerationRequest("r", (5, 6), collect=Collect(((0, "resid_mid"),))), "unknown point"),  # type: ignore[arg-type]
        (GenerationRequest("r", (5, 6), collect=Collect(((0, "resid_post"), (0, "resid_post")))), "twice"),
        (GenerationRequest("r", (5, 6), collect=Collect(((0, "resid_post"),), "max")), "reduce"),  # type: ignore[arg-type]
        (GenerationRequest("r", (5, 10**9), collect=Collect(((0, "resid_post"),))), "token ids"),
    ],
)
def test_bad_collect_requests_are_refused_before_any_forward(
    hf: HFEngineCore, request_: GenerationRequest, message: str
) -> None:
    with pytest.raises(RequestError, match=message):
        hf.add(request_)
    assert not hf.has_work()


def test_a_collect_request_takes_no_recipe(hf: HFEngineCore) -> None:
    recipe = recipe_for(hf.shape, [{"op": "steer", "vector": "v1", "layer": 1}])
    with pytest.raises(RequestError, match="unsteered"):
        hf.add(GenerationRequest("r", (5, 6), recipe=recipe, collect=Collect(((0, "resid_post"),))))
    assert not hf.has_work()


def test_a_collect_request_aborted_before_it_ran_collects_nothing(hf: HFEngineCore) -> None:
    hf.add(_collect("gone", random_prompt(3, 6)))
    hf.abort("gone")
    events = hf.step()
    assert events == [FinishedEvent("gone", "aborted", ())]
    assert not hf.has_work()


def test_vllm_collects_what_the_reference_engine_collects_alongside_generation(
    vllm_core: Any, hf: HFEngineCore
) -> None:
    prompts = {i: random_prompt(20 + i, 6 + 7 * i) for i in range(3)}  # up to 20 tokens: chunked prefill
    reference = {i: _activations(hf, _collect(f"h{i}", p)) for i, p in prompts.items()}
    generating = make_request(
        "gen",
        random_prompt(4, 30),
        recipe_for(vllm_core.shape, [{"op": "steer", "vector": "v2", "layer": 2, "scale": 2.0}]),
        n=8,
    )
    solo = run_alone(vllm_core, generating)
    schedule = [(0, generating)] + [(1 + i, _collect(f"v{i}", p)) for i, p in prompts.items()]
    mixed = run_schedule(vllm_core, schedule)
    forced = run_schedule(vllm_core, [(0, forced_request(generating, solo.tokens))])
    assert_close_runs(solo, mixed["gen"], forced=forced["gen"])
    for i in prompts:
        (event,) = [e for e in mixed[f"v{i}"].events if isinstance(e, CollectedEvent)]
        assert mixed[f"v{i}"].finished == FinishedEvent(f"v{i}", "stop", ())
        for site in SITES:
            _close(event.activations[site], reference[i][site], CROSS_ENGINE_TOL)


def test_vllm_refuses_bad_collect_requests_and_aborts_pending_ones(vllm_core: Any) -> None:
    with pytest.raises(RequestError, match="out of range"):
        vllm_core.add(GenerationRequest("bad", (5, 6), collect=Collect(((99, "resid_post"),))))
    vllm_core.add(_collect("gone", random_prompt(5, 8)))
    vllm_core.abort("gone")
    results = run_schedule(vllm_core, [])
    assert results["gone"].finished == FinishedEvent("gone", "aborted", ())
    assert not any(isinstance(e, CollectedEvent) for e in results["gone"].events)

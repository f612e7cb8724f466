"""The plan's fixed tables: what happens when they fill up (compaction, refusals, overflow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interventions.compiler import ProbeData, VectorData, compile_recipe
from interventions.plan import BatchPlan, Capacity, PlanFull
from interventions.sites import ModelShape
from interventions.spec import parse_recipe

SHAPE = ModelShape(model_type="llama", num_layers=2, hidden_size=8, mlp_size=16, vocab_size=32)
SITE = (1, "resid_post")


def _vec(seed: int) -> torch.Tensor:
    return torch.randn(SHAPE.hidden_size, generator=torch.Generator().manual_seed(seed))


RESOLVED = {f"v{i}": VectorData.of({0: _vec(i), 1: _vec(10 + i)}) for i in range(4)}
RESOLVED["p"] = ProbeData.of(_vec(20), 0.5)


def _recipe(*items: dict) -> object:
    return compile_recipe(parse_recipe({"interventions": list(items)}), SHAPE, RESOLVED)


def _steer(vector: str, layer: int = 1) -> dict:
    return {"op": "steer", "layer": layer, "vector": vector, "scale": 1.0}


def _apply(plan: BatchPlan, slots: list[int], x: torch.Tensor) -> torch.Tensor:
    plan.begin_step(np.array(slots), torch.zeros(len(slots), dtype=torch.long))
    out = plan.apply(SITE, x)
    plan.end_step()
    return out


def test_a_full_bank_is_compacted_in_place_and_live_lanes_follow_their_rows() -> None:
    plan = BatchPlan(SHAPE, Capacity(max_rows=8, max_requests=4, bank_rows=4))
    x = torch.randn(3, SHAPE.hidden_size, generator=torch.Generator().manual_seed(1))
    a = plan.add("a", _recipe(_steer("v0")), 4)
    b = plan.add("b", _recipe(_steer("v1")), 4)
    before = _apply(plan, [a, b, 0], x)
    torch.testing.assert_close(before[1] - x[1], RESOLVED["v1"].directions[1], rtol=0, atol=1e-6)
    plan.remove("a")  # its row stays resident (warm) until the space is needed
    # Two new rows, one free: the bank drops a's row and moves b's down; b's lane follows.
    c = plan.add("c", _recipe(_steer("v2"), _steer("v3")), 4)
    after = _apply(plan, [c, b, 0], x)
    assert torch.equal(after[1], before[1]), "b's steering moved with its row"
    torch.testing.assert_close(
        after[0] - x[0], RESOLVED["v2"].directions[1] + RESOLVED["v3"].directions[1], rtol=0, atol=1e-6
    )
    assert torch.equal(after[2], x[2]), "the null slot is untouched"
    with pytest.raises(PlanFull, match="the residual-width bank is full: 1 rows needed, 0 free of 3"):
        plan.add("d", _recipe(_steer("v0")), 4)
    assert "d" not in plan and len(plan) == 2, "a refused request leaves the plan as it was"
    assert torch.equal(_apply(plan, [c, b, 0], x), after)


def test_lens_rows_that_do_not_fit_the_capture_buffer_are_reported() -> None:
    plan = BatchPlan(
        SHAPE, Capacity(max_rows=8, max_requests=4, capture_rows=4), lens_fn=lambda h: h.repeat(1, 4)
    )
    lens = _recipe({"op": "logit_lens", "layer": 1, "k": 2})
    a, b = plan.add("a", lens, 3), plan.add("b", lens, 3)
    x = torch.randn(6, SHAPE.hidden_size)
    plan.begin_step(np.array([a, a, a, b, b, b]), torch.arange(6))
    plan.apply(SITE, x)
    reads = plan.end_step()
    assert reads.overflow == {"a", "b"}, "six lens rows, three capture rows: none is cut silently"
    plan.begin_step(np.array([a, a, a, 0, 0, 0]), torch.arange(6))
    plan.apply(SITE, x)
    reads = plan.end_step()
    assert not reads.overflow
    ids, probs = reads.lens[SITE]
    expected = torch.topk(torch.softmax(x[:3].repeat(1, 4), -1), 2)
    assert torch.equal(ids[:3], expected.indices) and torch.equal(probs[3:], torch.zeros(3, 2))


def test_probe_rows_of_gone_requests_are_evicted_when_a_site_is_full() -> None:
    plan = BatchPlan(SHAPE, Capacity(max_rows=8, max_requests=4, probes_per_site=1))
    probe = {"op": "probe", "layer": 1, "probe": "p"}
    plan.add("a", _recipe(probe), 4)
    plan.remove("a")
    other = ProbeData.of(_vec(21), 0.0)
    recipe = compile_recipe(
        parse_recipe({"interventions": [{"op": "probe", "layer": 1, "probe": "q"}]}), SHAPE, {"q": other}
    )
    plan.add("b", recipe, 4)  # the site's one probe row is free again: a's probe is evicted
    with pytest.raises(PlanFull, match="more than 1 probes at layer 1 resid_post"):
        plan.add("c", _recipe(probe), 4)

"""Each op's math on the tiny model, through the same plan and hooks the engines use."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from interventions.compiler import ProbeData, RecipeError, VectorData, compile_recipe
from interventions.runner import PlainRunner
from interventions.spec import parse_recipe
from interventions.tiny import load_tiny

SEQ = 7


@pytest.fixture(scope="module")
def runner() -> PlainRunner:
    model, _ = load_tiny()
    return PlainRunner(model)


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(5, 400, (2, SEQ), generator=g)


def _vec(width: int, seed: int) -> torch.Tensor:
    return torch.randn(width, generator=torch.Generator().manual_seed(seed))


def _compile(runner: PlainRunner, items: list[dict[str, Any]], resolved: dict[str, Any]) -> Any:
    return compile_recipe(
        parse_recipe({"interventions": items}), runner.adapter.shape(), resolved, model="tiny"
    )


def test_steer_adds_scale_times_vector_only_at_chosen_positions(
    runner: PlainRunner, ids: torch.Tensor
) -> None:
    hidden = runner.adapter.shape().hidden_size
    v = _vec(hidden, 0)
    recipe = _compile(
        runner,
        [{"op": "steer", "layer": 1, "vector": "v", "scale": 2.5, "positions": {"indices": [1, 3]}}],
        {"v": VectorData.of({1: v})},
    )
    out = runner.forward(ids, recipes=[recipe, None], capture=[(1, "resid_post")])
    before, after = out.captured[(1, "resid_post")]
    diff = after - before
    for p in range(SEQ):
        if p in (1, 3):
            torch.testing.assert_close(diff[0, p], 2.5 * v, rtol=0, atol=1e-5)
        else:
            assert torch.equal(after[0, p], before[0, p])
    assert torch.equal(after[1], before[1]), "the unsteered row must be untouched"


def test_steer_unit_and_resid_norm(runner: PlainRunner, ids: torch.Tensor) -> None:
    hidden = runner.adapter.shape().hidden_size
    v = _vec(hidden, 1) * 3
    unit = v / v.norm()
    items = [
        {"op": "steer", "layer": 2, "vector": "v", "scale": 2.0, "normalize": "unit"},
        {
            "op": "steer",
            "layer": 2,
            "vector": "v",
            "scale": 0.5,
            "normalize": "resid_norm",
            "point": "resid_pre",
        },
    ]
    recipe = _compile(runner, items, {"v": VectorData.of({2: v})})
    out = runner.forward(ids[:1], recipes=[recipe], capture=[(2, "resid_post"), (2, "resid_pre")])
    before, after = out.captured[(2, "resid_post")]
    torch.testing.assert_close(after - before, (2.0 * unit).expand_as(after), rtol=0, atol=1e-5)
    before, after = out.captured[(2, "resid_pre")]
    expected = 0.5 * before.norm(dim=-1, keepdim=True) * unit
    torch.testing.assert_close(after - before, expected, rtol=1e-5, atol=1e-5)


def test_ablate_zeroes_and_mean_replaces(runner: PlainRunner, ids: torch.Tensor) -> None:
    shape = runner.adapter.shape()
    means = _vec(shape.mlp_size, 2)
    items = [
        {"op": "ablate", "layer": 0, "point": "mlp_act", "dims": [0, 5, 9]},
        {"op": "ablate", "layer": 1, "point": "mlp_act", "dims": [2, 4], "mode": "mean", "mean": "m"},
    ]
    recipe = _compile(runner, items, {"m": VectorData.of({1: means})})
    out = runner.forward(ids[:1], recipes=[recipe], capture=[(0, "mlp_act"), (1, "mlp_act")])
    before, after = out.captured[(0, "mlp_act")]
    assert torch.equal(after[..., [0, 5, 9]], torch.zeros(1, SEQ, 3))
    keep = [i for i in range(shape.mlp_size) if i not in (0, 5, 9)]
    assert torch.equal(after[..., keep], before[..., keep])
    assert before[..., [0, 5, 9]].abs().sum() > 0, "the ablated neurons were active"
    before, after = out.captured[(1, "mlp_act")]
    assert torch.allclose(after[..., [2, 4]], means[[2, 4]].expand(1, SEQ, 2), atol=1e-6)


def test_project_out_leaves_no_component_and_clamp_sets_it(runner: PlainRunner, ids: torch.Tensor) -> None:
    hidden = runner.adapter.shape().hidden_size
    d = _vec(hidden, 3)
    u = d / d.norm()
    items = [
        {"op": "project_out", "layer": 1, "direction": "d"},
        {"op": "clamp", "layer": 2, "direction": "d", "value": 4.0, "positions": "last_prompt"},
    ]
    recipe = _compile(runner, items, {"d": VectorData.of({1: d, 2: d})})
    out = runner.forward(ids[:1], recipes=[recipe], capture=[(1, "resid_post"), (2, "resid_post")])
    before, after = out.captured[(1, "resid_post")]
    assert (before @ u).abs().min() > 1e-3
    torch.testing.assert_close(after @ u, torch.zeros(1, SEQ), rtol=0, atol=1e-5)
    removed = before - after
    torch.testing.assert_close(removed, (before @ u)[..., None] * u, rtol=0, atol=1e-5)
    before, after = out.captured[(2, "resid_post")]
    assert abs(float(after[0, -1] @ u) - 4.0) < 1e-5
    assert torch.equal(after[0, :-1], before[0, :-1])


def test_patch_reproduces_source_activations(runner: PlainRunner, ids: torch.Tensor) -> None:
    source, target = ids[0:1], ids[1:2]
    site = (1, "resid_post")
    clean = runner.forward(source, capture=[site])
    src_acts = clean.captured[site][0][0]
    items = [{"op": "patch", "layer": 1, "source": {"tokens": source[0].tolist()}, "positions": {"start": 2}}]
    recipe = _compile(runner, items, {})
    out = runner.forward(target, recipes=[recipe], capture=[site], patch_sources=[{0: src_acts}])
    before, after = out.captured[site]
    assert torch.equal(after[0, 2:], src_acts[2:])
    assert torch.equal(after[0, :2], before[0, :2])
    # Patching every position of the residual stream makes the rest of the model see the source.
    everywhere = _compile(runner, [{"op": "patch", "layer": 1, "source": {"tokens": source[0].tolist()}}], {})
    out = runner.forward(target, recipes=[everywhere], patch_sources=[{0: src_acts}])
    torch.testing.assert_close(out.logits, clean.logits, rtol=1e-5, atol=1e-5)


def test_patch_align_end_maps_the_last_tokens(runner: PlainRunner, ids: torch.Tensor) -> None:
    site = (0, "resid_post")
    short = ids[0:1, :4]
    src_acts = runner.forward(short, capture=[site]).captured[site][0][0]
    items = [{"op": "patch", "layer": 0, "source": {"tokens": short[0].tolist()}, "align": "end"}]
    out = runner.forward(
        ids[1:2], recipes=[_compile(runner, items, {})], capture=[site], patch_sources=[{0: src_acts}]
    )
    before, after = out.captured[site]
    assert torch.equal(after[0, SEQ - 4 :], src_acts)
    assert torch.equal(after[0, : SEQ - 4], before[0, : SEQ - 4]), "positions without a source stay"


def test_probe_scores_equal_hand_computation(runner: PlainRunner, ids: torch.Tensor) -> None:
    hidden = runner.adapter.shape().hidden_size
    w, b = _vec(hidden, 4), 0.25
    items = [
        {"op": "steer", "layer": 2, "vector": "v", "scale": 3.0},
        {"op": "probe", "layer": 2, "probe": "p"},  # reads before the site's writes
        {"op": "probe", "layer": 3, "point": "resid_pre", "probe": "p"},
    ]
    recipe = _compile(runner, items, {"p": ProbeData.of(w, b), "v": VectorData.of({2: _vec(hidden, 5)})})
    out = runner.forward(ids, recipes=[recipe, recipe], capture=[(2, "resid_post"), (3, "resid_pre")])
    for row in range(2):
        h_before = out.captured[(2, "resid_post")][0][row]
        expected = torch.tensor(
            [float(sum(h_before[p, i] * w[i] for i in range(hidden))) + b for p in range(SEQ)]
        )
        torch.testing.assert_close(out.probe_scores(row, 1), expected, rtol=1e-5, atol=1e-5)
        h_next = out.captured[(3, "resid_pre")][0][row]
        torch.testing.assert_close(out.probe_scores(row, 2), h_next @ w + b, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out.probe_scores(row, 1), out.probe_scores(row, 2)), (
            "steering shows downstream"
        )


def test_logit_lens_equals_hand_unembedding(runner: PlainRunner, ids: torch.Tensor) -> None:
    model = runner.model
    recipe = _compile(runner, [{"op": "logit_lens", "layer": 1, "k": 4}], {})
    out = runner.forward(ids[:1], recipes=[recipe], capture=[(1, "resid_post")])
    h = out.captured[(1, "resid_post")][0][0]
    logits = model.lm_head(model.model.norm(h))  # type: ignore[operator]
    expected = torch.topk(torch.softmax(logits, dim=-1), 4, dim=-1)
    got_ids, got_probs = out.reads.lens[(1, "resid_post")]
    assert torch.equal(got_ids[:SEQ], expected.indices)
    torch.testing.assert_close(got_probs[:SEQ], expected.values, rtol=1e-5, atol=1e-6)


def test_when_gate_writes_only_where_the_probe_crosses(runner: PlainRunner, ids: torch.Tensor) -> None:
    hidden = runner.adapter.shape().hidden_size
    w, v = _vec(hidden, 6), _vec(hidden, 7)
    clean = runner.forward(ids[:1], capture=[(0, "resid_post")])
    scores = clean.captured[(0, "resid_post")][0][0] @ w
    # Between two scores, not on one: a score equal to the threshold would hang on the last bit.
    ordered = scores.sort().values
    threshold = float((ordered[SEQ // 2] + ordered[SEQ // 2 + 1]) / 2)
    gate = {"probe": "p", "layer": 0, "threshold": threshold}
    items = [
        {"op": "steer", "layer": 1, "vector": "v", "when": gate},
        {
            "op": "steer",
            "layer": 1,
            "point": "resid_pre",
            "vector": "v",
            "when": {**gate, "direction": "below"},
        },
        # A probe after the write gates on the previous token, which prompt tokens never have.
        {"op": "steer", "layer": 0, "point": "resid_pre", "vector": "v", "when": {**gate, "layer": 3}},
    ]
    recipe = _compile(runner, items, {"p": ProbeData.of(w, 0.0), "v": VectorData.of({1: v, 0: v})})
    out = runner.forward(
        ids[:1], recipes=[recipe], capture=[(1, "resid_post"), (1, "resid_pre"), (0, "resid_pre")]
    )
    above = scores > threshold
    assert 0 < int(above.sum()) < SEQ
    before, after = out.captured[(1, "resid_post")]
    for p in range(SEQ):
        expected = v if above[p] else torch.zeros_like(v)
        torch.testing.assert_close(after[0, p] - before[0, p], expected, rtol=0, atol=1e-5)
    before, after = out.captured[(1, "resid_pre")]
    for p in range(SEQ):
        expected = v if scores[p] < threshold else torch.zeros_like(v)
        torch.testing.assert_close(after[0, p] - before[0, p], expected, rtol=0, atol=1e-5)
    before, after = out.captured[(0, "resid_pre")]
    assert torch.equal(before, after)


def test_zero_scale_and_disabled_lanes_are_bit_exact_no_ops(runner: PlainRunner, ids: torch.Tensor) -> None:
    hidden = runner.adapter.shape().hidden_size
    items = [
        {"op": "steer", "layer": 1, "vector": "v", "scale": 0.0},
        {"op": "project_out", "layer": 2, "direction": "v", "enabled": False},
    ]
    recipe = _compile(runner, items, {"v": VectorData.of({1: _vec(hidden, 8), 2: _vec(hidden, 9)})})
    plain = runner.forward(ids)
    out = runner.forward(ids, recipes=[recipe, recipe])
    assert torch.equal(out.logits, plain.logits)


@pytest.mark.parametrize(
    ("item", "resolved", "needle"),
    [
        (
            {"op": "steer", "layer": 4, "vector": "v"},
            {},
            "layer 4 out of range for a 4-layer model (valid: -4..3)",
        ),
        ({"op": "steer", "layer": -5, "vector": "v"}, {}, "out of range"),
        ({"op": "steer", "layer": 0, "vector": "missing"}, {}, "unknown vector 'missing'"),
        ({"op": "steer", "layer": 0, "vector": "v"}, {"v": VectorData.of({0: torch.ones(63)})}, "width 63"),
        (
            {"op": "steer", "layer": 0, "point": "mlp_act", "vector": "v"},
            {"v": VectorData.of({0: torch.ones(64)})},
            "does not match the site's width",
        ),
        (
            {"op": "steer", "layer": 0, "vector": "p"},
            {"p": ProbeData.of(torch.ones(64), 0.0)},
            "is not a vector",
        ),
        (
            {"op": "steer", "layer": 0, "vector": "v"},
            {"v": VectorData.of({0: torch.ones(64)}, model="other")},
            "belongs to model 'other'",
        ),
        (
            {"op": "steer", "layer": 2, "vector": "v"},
            {"v": VectorData.of({0: torch.ones(64), 1: torch.ones(64)})},
            "no direction for layer 2",
        ),
        (
            {"op": "project_out", "layer": 0, "direction": "z"},
            {"z": VectorData.of({0: torch.zeros(64)})},
            "zeros",
        ),
        ({"op": "ablate", "layer": 0, "dims": [64]}, {}, "dimension 64 out of range"),
        (
            {"op": "probe", "layer": 0, "probe": "p"},
            {"p": ProbeData.of(torch.ones(32), 0.0)},
            "probe width 32",
        ),
        ({"op": "patch", "layer": 0, "source": {"tokens": [100000]}}, {}, "vocabulary size"),
        (
            {"op": "probe", "layer": 0, "probe": "p", "positions": {"start": 5, "stop": 2}},
            {},
            "selects no position",
        ),
    ],
)
def test_compile_refuses_bad_recipes(
    runner: PlainRunner, item: dict[str, Any], resolved: Any, needle: str
) -> None:
    with pytest.raises(RecipeError, match="interventions\\[0\\]") as err:
        _compile(runner, [item], resolved)
    assert needle in str(err.value)


def test_nan_and_inf_tensors_are_refused_on_resolution() -> None:
    bad = torch.ones(64)
    bad[3] = float("nan")
    with pytest.raises(RecipeError, match="NaN or Inf"):
        VectorData.of({0: bad})
    with pytest.raises(RecipeError, match="NaN or Inf"):
        ProbeData.of(torch.full((64,), float("inf")), 0.0)
    with pytest.raises(RecipeError, match="bias"):
        ProbeData.of(torch.ones(64), float("nan"))

"""Every decoder family on both engines, with a tiny random config of each (docs/design.md §5).

Both engines find a family's sites by structure (the transformers adapters of ``interventions.sites``;
vLLM's layers, native or through its Transformers backend, in ``workers/engines/vllm/injection.py``).
For each family: a plain request on the transformers engine reproduces transformers' own forward, and
recipes that write at every point, read at every point (probes, lens, gates) and patch, ablate and
clamp agree between the two engines by the comparison rule. The vLLM engines here run eager (one
per family, built once per module); the compiled graph is checked on Llama in test_vllm_engine.py.

``make test`` runs this file in a pytest process of its own: vLLM's parallel groups are global to a
process, and closing one family's engine tore them down under the session's compiled engine
("pipeline model parallel group is not initialized").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interventions.tiny import FAMILIES, TinySpec, build_tiny
from workers.engines.base import GenerationRequest
from workers.engines.hf import HFEngineCore

from .conftest import (
    CROSS_ENGINE_TOL,
    Result,
    assert_close_runs,
    forced_request,
    make_request,
    random_prompt,
    recipe_for,
    run_alone,
)

RECIPES: dict[str, list[dict[str, Any]]] = {
    "writes_at_every_point": [
        {"op": "steer", "layer": 0, "point": "resid_pre", "vector": "v1", "scale": 2.0},
        {"op": "steer", "layer": 1, "point": "attn_out", "vector": "v2", "scale": 1.5},
        {"op": "steer", "layer": 2, "point": "mlp_act", "vector": "vm", "scale": 1.0},
        {"op": "project_out", "layer": 3, "point": "mlp_out", "direction": "v1"},
        {
            "op": "steer",
            "layer": 1,
            "point": "resid_post",
            "vector": "v2",
            "scale": -2.0,
            "normalize": "resid_norm",
        },
    ],
    "reads_at_every_point": [
        {"op": "probe", "layer": 0, "point": "resid_pre", "probe": "p1"},
        {"op": "probe", "layer": 1, "point": "attn_out", "probe": "p2"},
        {"op": "probe", "layer": 2, "point": "mlp_act", "probe": "pm"},
        {"op": "probe", "layer": 3, "point": "mlp_out", "probe": "p1"},
        {"op": "logit_lens", "layer": 2, "k": 3},
        {
            "op": "steer",
            "layer": 3,
            "vector": "v1",
            "scale": 2.0,
            "when": {"probe": "p2", "layer": 1, "threshold": 0.0},
        },
    ],
    "patch_ablate_clamp": [
        {"op": "patch", "layer": 1, "source": {"tokens": [40, 41, 42, 43, 44, 45]}, "positions": "prompt"},
        {"op": "ablate", "layer": 2, "point": "mlp_act", "dims": "all", "mode": "mean", "mean": "vm"},
        {"op": "clamp", "layer": 3, "point": "attn_out", "direction": "v2", "value": 1.0},
    ],
}


@dataclass
class FamilyRuns:
    family: str
    requests: dict[str, GenerationRequest]
    reference: dict[str, Result]  # the transformers engine's runs
    forward_logits: torch.Tensor  # transformers' own forward over the plain run's tokens
    vllm: Any


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def runs(request: pytest.FixtureRequest, vllm_family: Any) -> Iterator[FamilyRuns]:
    """The transformers engine's runs first, then the vLLM engine: vLLM's Transformers backend
    (GPT-NeoX, OLMo 2) rewrites the family's transformers classes in the process when it builds its
    model, after which transformers' own model of that family no longer runs outside vLLM."""
    family = request.param
    path = build_tiny(TinySpec(family=family))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    hf = HFEngineCore(
        model, AutoTokenizer.from_pretrained(path), max_requests=8, num_blocks=16, max_batch_tokens=32
    )
    requests = {
        name: make_request(f"{family}-{name}", random_prompt(len(name), 10), recipe_for(hf.shape, items), n=6)
        for name, items in RECIPES.items()
    }
    requests["plain"] = make_request(f"{family}-plain", random_prompt(1, 9), n=6)
    reference = {name: run_alone(hf, req) for name, req in requests.items()}
    hf.close()
    plain = requests["plain"]
    own = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    ).eval()  # no hooks, its own attention
    with torch.no_grad():
        tokens = list(plain.prompt_tokens) + reference["plain"].tokens[:-1]
        forward_logits = own(torch.tensor([tokens])).logits[0, len(plain.prompt_tokens) - 1 :]
    vllm = vllm_family(path)
    try:
        yield FamilyRuns(family, requests, reference, forward_logits, vllm)
    finally:
        vllm.close()


def test_a_plain_request_reproduces_transformers_own_forward(runs: FamilyRuns) -> None:
    run = runs.reference["plain"]
    for token, got, expected in zip(run.tokens, run.logits, runs.forward_logits, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        top2 = torch.topk(expected, 2).values
        assert token == int(expected.argmax()) or float(top2[0] - top2[1]) < 1e-4


@pytest.mark.parametrize("name", sorted([*RECIPES, "plain"]))
def test_every_point_agrees_between_the_engines(runs: FamilyRuns, name: str) -> None:
    req, reference = runs.requests[name], runs.reference[name]
    other = run_alone(runs.vllm, req)
    forced = run_alone(runs.vllm, forced_request(req, reference.tokens))
    assert_close_runs(reference, other, forced=forced, tol=CROSS_ENGINE_TOL)
    if req.recipe.has_reads:
        assert other.reads and set(other.reads) == set(reference.reads)

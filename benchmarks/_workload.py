"""The workload both engine-overhead benchmarks run (not a benchmark itself: ``make bench`` skips ``_*.py``).

32 requests, each with its own recipe: 1 steer (its own vector) + 4 probes (its own, at 4 layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interventions.compiler import CompiledRecipe, ProbeData, VectorData, compile_recipe
from interventions.sites import ModelShape
from interventions.spec import parse_recipe

STEER_LAYER = 3
PROBE_LAYERS = (2, 4, 5, 6)


@dataclass
class Workload:
    vectors: Tensor  # [n, hidden]
    probes: Tensor  # [n, len(PROBE_LAYERS), hidden]
    resolved: dict[str, Any]  # v{i}, p{i}_{j}
    recipes: list[CompiledRecipe]


def steer_and_probe_recipes(shape: ModelShape, n: int) -> Workload:
    hidden = shape.hidden_size
    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(n, hidden, generator=g) / hidden**0.5 * 4
    probes = torch.randn(n, len(PROBE_LAYERS), hidden, generator=g) / hidden**0.5
    resolved: dict[str, Any] = {}
    recipes = []
    for i in range(n):
        resolved[f"v{i}"] = VectorData.of({STEER_LAYER: vectors[i]})
        items: list[dict[str, Any]] = [{"op": "steer", "layer": STEER_LAYER, "vector": f"v{i}", "scale": 2.0}]
        for j, layer in enumerate(PROBE_LAYERS):
            resolved[f"p{i}_{j}"] = ProbeData.of(probes[i, j], 0.0)
            items.append({"op": "probe", "layer": layer, "probe": f"p{i}_{j}"})
        recipes.append(compile_recipe(parse_recipe({"interventions": items}), shape, resolved))
    return Workload(vectors, probes, resolved, recipes)


def random_prompts(n: int, length: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(0)
    return [tuple(int(t) for t in torch.randint(5, 500, (length,), generator=g)) for _ in range(n)]

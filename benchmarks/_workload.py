"""The workload both engine-overhead benchmarks run (not a benchmark itself: ``make bench`` skips ``_*.py``).

Each request has its own recipe: 1 steer (its own vector) + 4 probes (its own, at 4 layers). By default
the steer is at STEER_LAYER and the probes at PROBE_LAYERS (the transformers benchmark's bare hooks
mirror that); ``spread=True`` puts request i's steer at layer i mod L and its probes at the next four
layers, so that the recipes cover every layer.
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


def steer_and_probe_recipes(shape: ModelShape, n: int, *, spread: bool = False) -> Workload:
    hidden = shape.hidden_size
    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(n, hidden, generator=g) / hidden**0.5 * 4
    probes = torch.randn(n, len(PROBE_LAYERS), hidden, generator=g) / hidden**0.5
    resolved: dict[str, Any] = {}
    recipes = []
    layers = shape.num_layers
    for i in range(n):
        steer_layer = i % layers if spread else STEER_LAYER
        probe_layers = [(i + 1 + j) % layers for j in range(4)] if spread else PROBE_LAYERS
        resolved[f"v{i}"] = VectorData.of({steer_layer: vectors[i]})
        items: list[dict[str, Any]] = [{"op": "steer", "layer": steer_layer, "vector": f"v{i}", "scale": 2.0}]
        for j, layer in enumerate(probe_layers):
            resolved[f"p{i}_{j}"] = ProbeData.of(probes[i, j], 0.0)
            items.append({"op": "probe", "layer": layer, "probe": f"p{i}_{j}"})
        recipes.append(compile_recipe(parse_recipe({"interventions": items}), shape, resolved))
    return Workload(vectors, probes, resolved, recipes)


def random_prompts(n: int, length: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(0)
    return [tuple(int(t) for t in torch.randint(5, 500, (length,), generator=g)) for _ in range(n)]

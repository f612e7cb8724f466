"""The example recipe that ``make demo`` (and the playground tests) start from.

Its vector and probe are seeded random directions, named as such: they show the machinery
(live sliders, per-token scores) on any model, offline, without claiming to mean anything.
"""

from __future__ import annotations

from typing import Any

import torch

from interventions.probes import LinearProbe
from interventions.probes import to_safetensors_bytes as probe_bytes
from interventions.vectors import SteeringVector as Vec
from interventions.vectors import to_safetensors_bytes as vector_bytes
from webapp.accounts.models import User
from webapp.library import services as library
from webapp.library.models import ModelDeployment, RecipeVersion

EXAMPLE_SCALE = 8.0


def example_spec(vector_ref: str, probe_ref: str, num_layers: int) -> dict[str, Any]:
    middle, last = num_layers // 2, num_layers - 1
    return {
        "interventions": [
            {
                "op": "steer",
                "vector": vector_ref,
                "layer": middle,
                "normalize": "unit",
                "scale": EXAMPLE_SCALE,
                "positions": "generated",
            },
            {"op": "probe", "probe": probe_ref, "layer": last, "name": "example probe"},
            {"op": "logit_lens", "layer": middle, "k": 5},
        ]
    }


def create_example_recipe(user: User, deployment: ModelDeployment, *, seed: int = 0) -> RecipeVersion:
    """Upload a seeded random vector and probe for ``user`` and make a recipe using both."""
    g = torch.Generator().manual_seed(seed)
    hidden, middle = deployment.hidden_size, deployment.num_layers // 2
    vector = library.upload_vector(
        user,
        deployment,
        "example direction (random)",
        "example.safetensors",
        vector_bytes(Vec({middle: torch.randn(hidden, generator=g)}, method="imported")),
        description="A seeded random direction: it shows live steering, not a concept.",
    )
    probe = library.upload_probe(
        user,
        deployment,
        "example probe (random)",
        "example-probe.safetensors",
        probe_bytes(LinearProbe(torch.randn(hidden, generator=g) / hidden**0.5, 0.0)),
        layer=deployment.num_layers - 1,
        description="A seeded random probe: it shows per-token scores, not a concept.",
    )
    _, version = library.create_recipe(
        user,
        deployment,
        "example: steer + probe + logit lens",
        example_spec(vector.public_id, probe.public_id, deployment.num_layers),
        description="Steers with the example direction, scores every token, decodes the middle layer.",
    )
    return version

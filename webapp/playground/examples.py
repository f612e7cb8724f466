"""The example recipe that ``make demo`` (and the playground tests) start from.

Its vector and probe are seeded random directions, named as such: they show the machinery
(live sliders, per-token scores) on any model, offline, without claiming to mean anything.
"""

from __future__ import annotations

import random
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


MARKER = "QQQ"
_FILLER = [
    "the",
    "a",
    "river",
    "stone",
    "cloud",
    "quiet",
    "morning",
    "green",
    "small",
    "house",
    "over",
    "under",
    "light",
    "road",
    "city",
    "bright",
    "window",
    "paper",
    "music",
    "table",
    "garden",
    "slow",
    "warm",
    "blue",
    "dog",
    "cat",
    "bird",
    "tree",
    "hill",
]


def marker_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Labelled prompts whose answer is known: "yes" rows end with the marker word, "no" rows
    never contain it (a probe of the last token finds it even in a random-weight model)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(_FILLER) for _ in range(rng.randint(4, 9))]
        label = "yes" if i % 2 == 0 else "no"
        rows.append({"text": " ".join([*words, MARKER] if label == "yes" else words), "label": label})
    return rows


def marker_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Contrastive pairs: the same prompt with and without the marker word at its end."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_FILLER) for _ in range(rng.randint(4, 9))]
        out.append({"positive": " ".join([*words, MARKER]), "negative": " ".join(words)})
    return out


def create_example_datasets(user: User) -> None:
    """A training set, an evaluation set and contrastive pairs for the marker (the demo's jobs)."""
    for name, kind, rows in (
        ("marker: training prompts", "labelled", marker_rows(96, seed=1)),
        ("marker: evaluation prompts", "labelled", marker_rows(64, seed=2)),
        ("marker: contrastive pairs", "contrastive", marker_pairs(48, seed=3)),
    ):
        library.create_dataset_rows(
            user, name, kind, rows, description=f"Synthetic: prompts that end with {MARKER!r} or not."
        )

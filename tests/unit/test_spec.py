from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from interventions import spec
from interventions.spec import Adjustment, Recipe, parse_recipe


def test_committed_schema_is_current() -> None:
    assert spec.SCHEMA_PATH.read_text() == spec.render_schema(), "run `make schema` and commit the result"


def test_every_op_parses_and_round_trips() -> None:
    data = {
        "interventions": [
            {"op": "steer", "layer": 1, "vector": "vec-1", "scale": 4.0, "normalize": "unit"},
            {"op": "ablate", "layer": 0, "point": "mlp_act", "dims": [3, 1], "positions": "prompt"},
            {"op": "ablate", "layer": 0, "mode": "mean", "mean": "sha256:ab12", "dims": "all"},
            {"op": "project_out", "layer": -1, "direction": "d", "positions": {"start": -2}},
            {"op": "clamp", "layer": 2, "point": "attn_out", "direction": "d", "value": 1.5},
            {"op": "patch", "layer": 1, "source": {"tokens": [1, 2, 3]}, "align": "end"},
            {"op": "probe", "layer": 3, "point": "resid_pre", "probe": "p", "name": "honesty"},
            {"op": "logit_lens", "layer": 2, "k": 3, "positions": {"indices": [0, -1]}},
            {
                "op": "steer",
                "layer": 2,
                "vector": "v",
                "when": {"probe": "p", "layer": 1, "threshold": 0.5, "direction": "below"},
            },
        ]
    }
    recipe = parse_recipe(json.dumps(data))
    assert [i.op for i in recipe.interventions] == [
        "steer",
        "ablate",
        "ablate",
        "project_out",
        "clamp",
        "patch",
        "probe",
        "logit_lens",
        "steer",
    ]
    assert parse_recipe(recipe.model_dump_json()) == recipe
    assert parse_recipe(recipe.model_dump()) == recipe


def test_models_are_frozen() -> None:
    recipe = parse_recipe({"interventions": [{"op": "steer", "layer": 0, "vector": "v"}]})
    with pytest.raises(ValidationError):
        recipe.interventions[0].scale = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ("{not json", "Invalid JSON"),
        ('{"interventions": []}', "at least 1 item"),
        ('{"interventions": [{"op": "explode", "layer": 1}]}', "does not match any of the expected tags"),
        (
            '{"interventions": [{"layer": 1, "vector": "v"}]}',
            "Unable to extract tag using discriminator 'op'",
        ),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": "v", "scale": NaN}]}', "finite number"),
        (
            '{"interventions": [{"op": "steer", "layer": 1, "vector": "v", "scale": Infinity}]}',
            "finite number",
        ),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": "v", "colour": 1}]}', "Extra inputs"),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": "v", "point": "mlp_in"}]}', "resid_pre"),
        ('{"interventions": [{"op": "steer", "layer": 1.5, "vector": "v"}]}', "valid integer"),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": ""}]}', "at least 1 character"),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": "a b"}]}', "pattern"),
        ('{"interventions": [{"op": "ablate", "layer": 1, "mode": "mean"}]}', "needs a 'mean' vector"),
        ('{"interventions": [{"op": "ablate", "layer": 1, "dims": [1, 1]}]}', "must not repeat"),
        ('{"interventions": [{"op": "ablate", "layer": 1, "dims": [-1]}]}', "greater than or equal to 0"),
        ('{"interventions": [{"op": "patch", "layer": 1, "source": {}}]}', "exactly one of"),
        ('{"interventions": [{"op": "logit_lens", "layer": 1, "k": 0}]}', "greater than or equal to 1"),
        ('{"interventions": [{"op": "logit_lens", "layer": 1, "point": "mlp_act"}]}', "residual-width"),
        ('{"interventions": [{"op": "probe", "layer": 1, "probe": "p", "positions": "some"}]}', "positions"),
        ('{"interventions": [{"op": "probe", "layer": 1, "probe": "p", "positions": {"step": 0}}]}', "step"),
        (
            '{"interventions": [{"op": "probe", "layer": 1, "probe": "p", "positions": {"indices": []}}]}',
            "indices",
        ),
        ('{"interventions": [{"op": "steer", "layer": 1, "vector": "v", "when": {"probe": "p"}}]}', "layer"),
    ],
)
def test_bad_recipes_are_refused_with_the_path(payload: str, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_recipe(payload)
    assert needle in str(err.value)


def test_oversized_recipe_is_refused() -> None:
    items = [{"op": "steer", "layer": 0, "vector": "v"}] * (spec.MAX_INTERVENTIONS + 1)
    with pytest.raises(ValidationError, match="at most 64 items"):
        Recipe.model_validate({"interventions": items})


def test_adjustment_needs_a_change_and_finite_scale() -> None:
    assert Adjustment(index=2, scale=-1.5).scale == -1.5
    with pytest.raises(ValidationError, match="sets 'scale', 'enabled' or both"):
        Adjustment(index=0)
    with pytest.raises(ValidationError, match="finite"):
        Adjustment.model_validate_json('{"index": 0, "scale": NaN}')

"""The intervention language: what a recipe may say, as pydantic models.

A recipe is an ordered list of interventions. Every intervention names a *site* (``layer`` and
``point``) and the token ``positions`` it touches. Write ops (``steer``, ``ablate``,
``project_out``, ``clamp``, ``patch``) change the activation; read ops (``probe``,
``logit_lens``) stream values back per token. Any write op may be gated by ``when``: it then
applies only on tokens where a probe's score crosses a threshold.

Semantics that the engines share (see ``plan.py`` / ``ops.py``):

* At one site, reads see the activation as it arrives, before that site's writes. So a probe at
  the same site as a write, or at an earlier site, gates the write on the *same* token.
* A gate whose probe sits at a *later* site than the write cannot know the current token's
  score when the write happens; it uses the previous token's score instead. That score only
  exists for generated tokens (prompt tokens are processed together), so such gates never fire on
  prompt positions. This keeps results independent of how the engine chunks a prompt.
* Explicit positions and slice bounds are absolute token positions; negative values count from the
  end of the prompt (``-1`` is the last prompt token). A slice without ``stop`` runs on into the
  generated tokens.
* ``scale`` is the live knob of every write op (a slider in the browser): the steering strength of
  ``steer``, and the strength in [0, 1] of the others (1 = fully ablated / projected / clamped /
  patched). ``enabled`` is its toggle. Both can be changed while a request generates.

Vectors and probes are referenced by string ids (a library id or ``sha256:<hex>``); resolving them to
tensors of the right model is the caller's job (``plan.compile_recipe`` checks the result).

Run ``python -m interventions.spec --write`` to refresh the committed JSON Schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_INTERVENTIONS = 64
MAX_EXPLICIT_POSITIONS = 64
MAX_ABLATE_DIMS = 65536
MAX_LOGIT_LENS_K = 20
MAX_PATCH_SOURCE_TOKENS = 4096

SCHEMA_PATH = Path(__file__).parent / "schema" / "recipe.schema.json"

Point = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_act"]
PositionKeyword = Literal["all", "prompt", "generated", "last_prompt"]
Ref = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:@/-]+$",
        description="Id of a vector or probe in the library, or 'sha256:<hex>' of its content.",
    ),
]


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class PositionSlice(_Model):
    """Positions ``start:stop:step`` (Python slice semantics; negatives count from the prompt end)."""

    start: int | None = None
    stop: int | None = None
    step: Annotated[int, Field(ge=1, le=65536)] = 1


class PositionIndices(_Model):
    """Explicit positions (negatives count from the prompt end)."""

    indices: Annotated[list[int], Field(min_length=1, max_length=MAX_EXPLICIT_POSITIONS)]


Positions = PositionKeyword | PositionSlice | PositionIndices


class Gate(_Model):
    """Apply the write only on tokens where ``probe``'s score (``h·w + b``) crosses ``threshold``."""

    probe: Ref
    layer: int
    point: Point = "resid_post"
    threshold: FiniteFloat = 0.0
    direction: Literal["above", "below"] = "above"


class _Site(_Model):
    layer: int = Field(description="Decoder layer; negative counts from the end (-1 = last layer).")
    point: Point = "resid_post"
    positions: Positions = "all"


class _Write(_Site):
    scale: FiniteFloat = 1.0
    enabled: bool = True
    when: Gate | None = None


class Steer(_Write):
    """Add ``scale * vector`` (the vector's direction for this layer)."""

    op: Literal["steer"] = "steer"
    vector: Ref
    normalize: Literal["none", "unit", "resid_norm"] = Field(
        "none",
        description="none: the vector as stored; unit: unit-normalised; "
        "resid_norm: unit direction times the token's residual norm.",
    )


class Ablate(_Write):
    """Zero (or mean-replace) a set of dimensions / neurons; ``scale`` is the strength."""

    op: Literal["ablate"] = "ablate"
    dims: (
        Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_ABLATE_DIMS)]
        | Literal["all"]
    ) = "all"
    mode: Literal["zero", "mean"] = "zero"
    mean: Ref | None = Field(None, description="Vector holding the replacement values (mode 'mean').")

    @model_validator(mode="after")
    def _mean_needs_vector(self) -> Ablate:
        if self.mode == "mean" and self.mean is None:
            raise ValueError("mode 'mean' needs a 'mean' vector holding the replacement values")
        if self.mode == "zero" and self.mean is not None:
            raise ValueError("'mean' is only used with mode 'mean'")
        if isinstance(self.dims, list) and len(set(self.dims)) != len(self.dims):
            raise ValueError("dims must not repeat")
        return self


class ProjectOut(_Write):
    """Remove the component along ``direction`` (directional ablation); ``scale`` is the strength."""

    op: Literal["project_out"] = "project_out"
    direction: Ref


class Clamp(_Write):
    """Set the component along the unit ``direction`` to ``value``; ``scale`` is the strength."""

    op: Literal["clamp"] = "clamp"
    direction: Ref
    value: FiniteFloat


class PatchSource(_Model):
    """The prompt whose activations are patched in (run without interventions)."""

    text: Annotated[str, Field(min_length=1, max_length=32768)] | None = None
    tokens: (
        Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PATCH_SOURCE_TOKENS)]
        | None
    ) = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PatchSource:
        if (self.text is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'text' or 'tokens'")
        return self


class Patch(_Write):
    """Replace activations with the source prompt's at mapped positions.

    ``align='start'`` maps target position p to source position p; ``align='end'`` aligns the last
    prompt tokens of both. Positions with no source counterpart are left alone.
    """

    op: Literal["patch"] = "patch"
    source: PatchSource
    align: Literal["start", "end"] = "start"


class Probe(_Site):
    """Read: the probe's score ``h·w + b`` on every selected token, streamed with the tokens."""

    op: Literal["probe"] = "probe"
    probe: Ref
    name: Annotated[str, Field(max_length=100)] | None = None


class LogitLens(_Site):
    """Read: the top-k tokens decoded from this site (final norm + unembedding) per token."""

    op: Literal["logit_lens"] = "logit_lens"
    k: Annotated[int, Field(ge=1, le=MAX_LOGIT_LENS_K)] = 5

    @field_validator("point")
    @classmethod
    def _residual_only(cls, point: str) -> str:
        if point == "mlp_act":
            raise ValueError("logit_lens reads a residual-width site; mlp_act has the MLP's width")
        return point


Intervention = Annotated[
    Steer | Ablate | ProjectOut | Clamp | Patch | Probe | LogitLens,
    Field(discriminator="op"),
]
WriteOp = Steer | Ablate | ProjectOut | Clamp | Patch


class Recipe(_Model):
    """An ordered list of interventions; applied in order at each site."""

    interventions: Annotated[list[Intervention], Field(min_length=1, max_length=MAX_INTERVENTIONS)]


class Adjustment(_Model):
    """A live change of one write intervention: its scale and/or its enabled flag."""

    index: Annotated[int, Field(ge=0, lt=MAX_INTERVENTIONS)]
    scale: FiniteFloat | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> Adjustment:
        if self.scale is None and self.enabled is None:
            raise ValueError("an adjustment sets 'scale', 'enabled' or both")
        return self


def parse_recipe(data: str | bytes | dict[str, Any]) -> Recipe:
    """Validate a recipe given as JSON text or as already-decoded data.

    Raises:
        pydantic.ValidationError: with the path of every problem (bad JSON included).
    """
    if isinstance(data, (str, bytes)):
        return Recipe.model_validate_json(data)
    return Recipe.model_validate(data)


def recipe_json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://steerlab.dev/schema/recipe.schema.json"
    return schema


def render_schema() -> str:
    return json.dumps(recipe_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_PATH.write_text(render_schema())
        print(f"wrote {SCHEMA_PATH}")
        return 0
    if argv[1:] == ["--check"]:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != render_schema():
            print(f"{SCHEMA_PATH} is stale: run `python -m interventions.spec --write`", file=sys.stderr)
            return 1
        return 0
    print(render_schema(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

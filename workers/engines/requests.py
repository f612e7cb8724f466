"""What every engine does the same way: refusing bad requests, and turning a step's reads into events."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from interventions.compiler import RecipeError, Site, positions_contain, resolve_positions
from interventions.plan import BatchPlan, PlanFull
from interventions.sites import POINTS, ModelShape
from workers.engines.base import (
    MAX_COLLECT_SITES,
    Collect,
    CollectedEvent,
    GenerationRequest,
    ReadEvent,
    RequestError,
)

CAPABILITIES = ("steer", "ablate", "project_out", "clamp", "patch", "probe", "logit_lens", "when", "collect")


def validate_request(
    req: GenerationRequest, plan: BatchPlan, max_context: int, *, has_tokenizer: bool
) -> None:
    """Raise RequestError for anything that must not reach a forward pass (or cannot fit ``plan``)."""
    shape = plan.shape
    if not req.request_id or len(req.request_id) > 200:
        raise RequestError("request_id must be 1-200 characters")
    if not req.prompt_tokens:
        raise RequestError("the prompt is empty")
    vocab = shape.vocab_size
    if not all(type(t) is int for t in req.prompt_tokens):
        raise RequestError("prompt tokens must be integers")
    if min(req.prompt_tokens) < 0 or max(req.prompt_tokens) >= vocab:
        raise RequestError(f"prompt token ids must be in [0, {vocab})")
    generated = 0 if req.collect is not None else req.sampling.max_new_tokens + 1
    need = len(req.prompt_tokens) + generated
    if need > max_context:
        raise RequestError(
            f"prompt ({len(req.prompt_tokens)} tokens) + max_new_tokens ({req.sampling.max_new_tokens}) "
            f"exceeds the engine's context of {max_context} tokens"
        )
    if req.forced_tokens is not None and any(not 0 <= t < vocab for t in req.forced_tokens):
        raise RequestError(f"forced token ids must be in [0, {vocab})")
    if req.collect is not None:
        _validate_collect(req, shape)
    recipe = req.recipe
    try:
        plan.check(recipe)
        for site in req.collect.sites if req.collect is not None else ():
            plan.tables_of(site)
    except PlanFull as e:
        raise RequestError(str(e)) from e
    for item in recipe.items():
        layer, point = item.site
        if not 0 <= layer < shape.num_layers:
            raise RequestError(f"interventions[{item.index}]: layer {layer} out of range for this model")
        width = shape.mlp_size if point == "mlp_act" else shape.hidden_size
        for t in (getattr(item, "direction", None), getattr(item, "weight", None)):
            if t is not None and t.shape[-1] != width:
                raise RequestError(f"interventions[{item.index}]: width {t.shape[-1]} != site width {width}")
        try:
            resolve_positions(item.positions, len(req.prompt_tokens))
        except RecipeError as e:
            raise RequestError(f"interventions[{item.index}].positions: {e}") from e
    writable = {lane.index for lane in recipe.lanes}
    for adj in (*req.overrides, *(a for _, a in req.scheduled)):
        if adj.index not in writable:
            raise RequestError(f"adjustment names intervention {adj.index}, which is not a write op")
    for lane in recipe.lanes:
        if lane.op == "patch" and lane.patch_text is not None and not has_tokenizer:
            raise RequestError("patch sources given as text need an engine with a tokenizer")


def _validate_collect(req: GenerationRequest, shape: ModelShape) -> None:
    collect = req.collect
    assert collect is not None
    if req.recipe.num_interventions or req.overrides or req.scheduled or req.forced_tokens is not None:
        raise RequestError("a collect request reads the unsteered model: it takes no recipe or adjustments")
    if not 1 <= len(collect.sites) <= MAX_COLLECT_SITES:
        raise RequestError(f"collect needs 1 to {MAX_COLLECT_SITES} sites")
    if len(set(collect.sites)) != len(collect.sites):
        raise RequestError("collect names a site twice")
    for site in collect.sites:
        layer, point = site
        if type(layer) is not int or not 0 <= layer < shape.num_layers:
            raise RequestError(f"collect: layer {layer!r} out of range for this model")
        if point not in POINTS:
            raise RequestError(f"collect: unknown point {point!r}; valid points: {', '.join(POINTS)}")
    if collect.reduce not in ("last", "mean", "none"):
        raise RequestError(f"collect: reduce must be last, mean or none, not {collect.reduce!r}")


def collected_event(request_id: str, collect: Collect, captured: Mapping[Site, Tensor]) -> CollectedEvent:
    """A collect request's event from each site's ``[prompt, width]`` activations (float32, CPU).

    float32, not float16: residual streams of real models exceed float16's 65504 (it would store
    ``inf``), and vectors built from them are compared with other tools to 1e-5.
    """
    out: dict[Site, Tensor] = {}
    for site in collect.sites:
        rows = captured[site].float()
        if collect.reduce == "last":
            rows = rows[-1]
        elif collect.reduce == "mean":
            rows = rows.mean(0)
        out[site] = rows.cpu()
    return CollectedEvent(request_id, out)


def read_events(
    plan: BatchPlan,
    request_id: str,
    first_pos: int,
    row: int,
    count: int,
    scores: Tensor | None,
    lens: Mapping[Site, tuple[Tensor, Tensor]],
    probe_cols: Tensor | None,
) -> tuple[list[ReadEvent], Tensor | None]:
    """ReadEvents for ``count`` rows of one request, starting at batch row ``row`` / position ``first_pos``.

    ``probe_cols`` caches the request's score columns between steps: pass back what was returned.
    """
    rec = plan.record(request_id)
    compiled = rec.compiled
    values: list[list[float]] = []
    if compiled.probes and scores is not None:
        if probe_cols is None:
            probe_cols = torch.tensor([rec.probe_cols[p.index] for p in compiled.probes])
        # One host copy per request per step, not one per value.
        values = scores[row : row + count].index_select(1, probe_cols).tolist()
    events = []
    for r in range(count):
        pos = first_pos + r
        probes = {
            p.index: values[r][j]
            for j, p in enumerate(compiled.probes)
            if positions_contain(rec.positions[p.index], pos)
        }
        lenses = {}
        for lz in compiled.lenses:
            if positions_contain(rec.positions[lz.index], pos) and lz.site in lens:
                ids, probs = lens[lz.site]
                lenses[lz.index] = (
                    tuple(ids[row + r, : lz.k].tolist()),
                    tuple(probs[row + r, : lz.k].tolist()),
                )
        if probes or lenses:
            events.append(ReadEvent(request_id, pos, probes, lenses))
    return events, probe_cols

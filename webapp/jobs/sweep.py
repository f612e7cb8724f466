"""Steering sweeps (the ``sweep`` job kind): a vector × scales × layers × prompts, in one batch.

For each prompt (one stored batch), every cell ``(layer, scale)`` is generated greedily with
``steer`` at that layer and scale plus the chosen probes as reads, beside one unsteered baseline
with the same reads: all in the same continuous batch, each request isolated (docs/design.md §4), so a
cell's tokens are those of a single chat run with the same recipe and settings. Then each cell's
text is teacher-forced through the unsteered model, which gives the coherence cost per generated
token:

* ``KL(p_steered || p_unsteered)`` of the next-token distributions on the cell's own prefix (0 at
  scale 0, growing with the scale);
* the perplexity of the cell's text under the unsteered model.

Next to it, each probe's shift: its mean score over the cell's generated tokens minus its mean
over the baseline's. Prompts go through the chat template, as chat turns do.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from interventions.compiler import EMPTY_RECIPE, CompiledRecipe, ProbeData, VectorData, compile_recipe
from interventions.spec import parse_recipe
from webapp.jobs.kinds import pinned_probes
from webapp.jobs.models import Job
from webapp.jobs.runner import JobContext, JobFailed
from webapp.library.models import SteeringVector
from webapp.library.services import probe_data, vector_data
from webapp.playground.services import chat_prompt
from workers.engines.base import Event, GenerationRequest, ReadEvent, SamplingParams, TokenEvent


def sweep_spec(params: dict[str, Any], layer: int | None, scale: float) -> dict[str, Any]:
    """The recipe of one cell (``layer`` None: the unsteered baseline, reads only)."""
    reads = [
        {"op": "probe", "probe": f"prb_{p['id']}", "layer": p["layer"], "point": p["point"]}
        for p in params["probes"]
    ]
    if layer is None:
        return {"interventions": reads}
    steer = {
        "op": "steer",
        "vector": f"vec_{params['vector_id']}",
        "layer": layer,
        "scale": scale,
        "normalize": params["normalize"],
        "positions": params["positions"],
    }
    return {"interventions": [steer, *reads]}


def _compiled(spec: dict[str, Any], shape: Any, resolved: Any, model: str) -> CompiledRecipe:
    # A sweep without probes has an empty baseline recipe: no interventions at all.
    if not spec["interventions"]:
        return EMPTY_RECIPE
    return compile_recipe(parse_recipe(spec), shape, resolved, model=model)


def _resolved(job: Job) -> dict[str, VectorData | ProbeData]:
    params = job.params
    vector = SteeringVector.objects.select_related("deployment").filter(pk=params["vector_id"]).first()
    if vector is None or vector.content_hash != params["vector_hash"]:
        raise JobFailed("the sweep's vector was deleted or changed after the sweep was started")
    resolved: dict[str, VectorData | ProbeData] = {vector.public_id: vector_data(vector)}
    for probe in pinned_probes(job):
        resolved[probe.public_id] = probe_data(probe)
    return resolved


def _generated(events: list[Event], prompt_len: int, first_read: int, probes: int) -> dict[str, Any]:
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    reads = [e for e in events if isinstance(e, ReadEvent) and e.position >= prompt_len]
    means = []
    for i in range(probes):
        values = [float(r.probes[first_read + i]) for r in reads if first_read + i in r.probes]
        means.append(sum(values) / len(values) if values else None)
    return {
        "tokens": [e.token_id for e in tokens],
        "logits": [e.logits for e in tokens],
        "probe_means": means,
    }


def _coherence(
    steered: list[Any], unsteered: list[Any], tokens: list[int]
) -> tuple[list[float], list[float]]:
    """Per token: KL(steered || unsteered) of the next-token distributions, and the unsteered NLL."""
    if not tokens:
        return [], []
    s = torch.log_softmax(torch.tensor(steered, dtype=torch.float64), dim=-1)
    u = torch.log_softmax(torch.tensor(unsteered, dtype=torch.float64), dim=-1)
    kl = (s.exp() * (s - u)).sum(-1).clamp_min(0.0)
    nll = -u[torch.arange(len(tokens)), torch.tensor(tokens)]
    return [float(v) for v in kl], [float(v) for v in nll]


class Sweep:
    batch_size = 1  # one prompt: its baseline and every cell, generated together

    def items(self, job: Job) -> list[Any]:
        return list(job.params["prompts"])

    def run_batch(self, ctx: JobContext, items: list[Any]) -> bytes:
        job, params = ctx.job, ctx.job.params
        if "resolved" not in ctx.cache:
            ctx.cache["resolved"] = _resolved(job)
        shape, name = job.deployment.shape, job.deployment.name
        tokenizer = ctx.model.tokenizer
        (prompt,) = items
        prompt_tokens = tuple(chat_prompt(tokenizer, [{"role": "user", "content": prompt}]))
        eos = getattr(tokenizer, "eos_token_id", None)
        sampling = SamplingParams(
            max_new_tokens=params["max_new_tokens"],
            temperature=0.0,
            seed=params["seed"],
            stop_token_ids=(eos,) if isinstance(eos, int) else (),
        )
        cells = [(None, 0.0)] + [(layer, scale) for layer in params["layers"] for scale in params["scales"]]
        requests = [
            GenerationRequest(
                ctx.request_id(),
                prompt_tokens,
                recipe=_compiled(sweep_spec(params, layer, scale), shape, ctx.cache["resolved"], name),
                sampling=sampling,
                record_logits=True,
            )
            for layer, scale in cells
        ]
        probes = len(params["probes"])
        generated = [
            _generated(events, len(prompt_tokens), 0 if layer is None else 1, probes)
            for (layer, _), events in zip(cells, ctx.run(requests), strict=True)
        ]
        # The unsteered model on each steered cell's text (teacher forcing): the coherence cost.
        forced = ctx.run(
            [
                GenerationRequest(
                    ctx.request_id(),
                    prompt_tokens,
                    sampling=SamplingParams(max_new_tokens=len(g["tokens"]), temperature=0.0),
                    forced_tokens=tuple(g["tokens"]),
                    record_logits=True,
                )
                for g in generated[1:]
            ]
        )
        baseline = generated[0]
        out: dict[str, Any] = {
            "prompt": prompt,
            "baseline": {
                "text": tokenizer.decode(baseline["tokens"], skip_special_tokens=True),
                "tokens": baseline["tokens"],
                "probe_means": baseline["probe_means"],
            },
            "cells": [],
        }
        for (layer, scale), g, events in zip(cells[1:], generated[1:], forced, strict=True):
            unsteered = [e.logits for e in events if isinstance(e, TokenEvent)]
            kl, nll = _coherence(g["logits"], unsteered, g["tokens"])
            out["cells"].append(
                {
                    "layer": layer,
                    "scale": scale,
                    "text": tokenizer.decode(g["tokens"], skip_special_tokens=True),
                    "tokens": g["tokens"],
                    "kl": kl,
                    "nll": nll,
                    "probe_means": g["probe_means"],
                }
            )
        return json.dumps(out).encode()

    def finish(self, ctx: JobContext, items: list[Any], batches: list[bytes]) -> None:
        job, params = ctx.job, ctx.job.params
        prompts = [json.loads(b) for b in batches]
        cells = []
        for c, first in enumerate(prompts[0]["cells"]):
            kl = [v for p in prompts for v in p["cells"][c]["kl"]]
            nll = [v for p in prompts for v in p["cells"][c]["nll"]]
            shifts: list[float | None] = []
            for i in range(len(params["probes"])):
                deltas = [
                    p["cells"][c]["probe_means"][i] - p["baseline"]["probe_means"][i]
                    for p in prompts
                    if p["cells"][c]["probe_means"][i] is not None
                    and p["baseline"]["probe_means"][i] is not None
                ]
                shifts.append(sum(deltas) / len(deltas) if deltas else None)
            cells.append(
                {
                    "layer": first["layer"],
                    "scale": first["scale"],
                    "kl_mean": sum(kl) / len(kl) if kl else 0.0,
                    "kl_max": max(kl, default=0.0),
                    "perplexity": math.exp(sum(nll) / len(nll)) if nll else None,
                    "tokens": len(kl),
                    "probe_shift": shifts,
                }
            )
        job.result = {
            "prompts": len(prompts),
            "layers": params["layers"],
            "scales": params["scales"],
            "probes": [f"prb_{p['id']}" for p in params["probes"]],
            "cells": cells,
        }


def transcripts(batches: list[bytes], layer: int, scale: float) -> list[dict[str, Any]]:
    """Every prompt's text for one cell, beside its baseline (what a cell opens)."""
    out = []
    for blob in batches:
        prompt = json.loads(blob)
        cell = next((c for c in prompt["cells"] if c["layer"] == layer and c["scale"] == scale), None)
        if cell is None:
            raise KeyError((layer, scale))
        out.append(
            {
                "prompt": prompt["prompt"],
                "baseline": prompt["baseline"]["text"],
                "text": cell["text"],
                "kl": cell["kl"],
                "probe_means": cell["probe_means"],
                "baseline_probe_means": prompt["baseline"]["probe_means"],
            }
        )
    return out

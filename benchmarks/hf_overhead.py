"""What per-request interventions cost the transformers engine (docs/design.md §6).

Model: the BENCH tiny Llama (hidden 1024, 8 layers, fp32). Every variant runs the same 32
requests (distinct prompts, greedy, 32 new tokens, all joining at step 0) through an
``HFEngineCore`` (the same scheduler); repeats are interleaved and the median and range printed.

* plain:      no interventions.
* hf:         each request has its own recipe: 1 steer (its own vector) + 4 probes (its own, at 4
              layers); reads streamed for every token.
* bare_hook:  no recipes; the same per-row math done by bare torch forward hooks that index
              per-request tables by the scheduler's row layout (``h + V[slot] * s[slot]``, per-row
              probe dot products copied to the host each step), with the same extra read step.
* probes1000: 1,000 distinct probes at one layer spread over the 32 requests, vs plain.

Variants run in lockstep (one step of each in rotation, each step timed), so the drift in
machine speed that a shared 2-core VM shows over seconds affects every variant alike; each repeat
is one such run. Throughput is generated tokens per second of stepping; every ``_vs_`` figure is a throughput ratio (higher is
better). ``plan_us``: compile a 10-intervention recipe and bind it into the slot tables when its request
joins (vectors already resident, as with a warm cache); its unbinding on leave is printed apart. ``step_overhead_us_N``: host time per
decode step outside the model forward (scheduler, layout, plan tables, sampling bookkeeping, events)
with N live requests.

Run: ``python benchmarks/hf_overhead.py`` (``--repeats``, ``--new-tokens`` to change the size).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from _workload import PROBE_LAYERS, STEER_LAYER, random_prompts, steer_and_probe_recipes
from torch import Tensor

from interventions.compiler import CompiledRecipe, ProbeData, compile_recipe
from interventions.plan import Capacity
from interventions.sites import install_hook
from interventions.spec import parse_recipe
from interventions.tiny import BENCH, load_tiny
from workers.engines.base import GenerationRequest, SamplingParams, TokenEvent
from workers.engines.hf import HFEngineCore

PROBE1000_LAYER = 4


def _core(max_requests: int = 64, probes_per_site: int = 16) -> HFEngineCore:
    model, tokenizer = load_tiny(BENCH)
    # One 64-token page per request (prompt + new tokens fit), so every request runs concurrently.
    return HFEngineCore(
        model,
        tokenizer,
        max_requests=max_requests,
        num_blocks=2 * max_requests,
        page_size=64,
        max_batch_tokens=1024,
        capacity=Capacity(
            max_rows=1024,
            max_requests=max_requests,
            probes_per_site=probes_per_site,
            probe_rows=max(512, probes_per_site + 1),
        ),
    )


class BareHooks:
    """The same per-row math as the hf variant, as plain forward hooks over per-slot tables."""

    def __init__(self, core: HFEngineCore, vectors: Tensor, scale: float, probes: Tensor) -> None:
        self.core = core
        slots = core.plan.slots
        hidden = core.shape.hidden_size
        self.v = torch.zeros(slots, hidden)
        self.s = torch.zeros(slots)
        self.w = torch.zeros(len(PROBE_LAYERS), slots, hidden)
        self.vectors, self.scale, self.probes = vectors, scale, probes
        self.scores: list[Tensor] = []
        adapter = core.adapter
        install_hook(adapter.locate(STEER_LAYER, "resid_post"), self._steer)
        for i, layer in enumerate(PROBE_LAYERS):
            install_hook(adapter.locate(layer, "resid_post"), self._prober(i))
        core.model.register_forward_hook(self._to_host)

    def bind(self, request_ids: list[str]) -> None:
        # Runs on join (like the plan's add): the request's rows of the tables.
        for i, rid in enumerate(request_ids):
            slot = self.core.plan.slot_of(rid)
            self.v[slot] = self.vectors[i]
            self.s[slot] = self.scale
            self.w[:, slot] = self.probes[i]
            self.core._live[rid].reads = True  # the same extra step for the last token's reads

    def _steer(self, h: Tensor) -> Tensor:
        x = h.reshape(-1, h.shape[-1])
        slot = self.core.plan.step.row_slot[: x.shape[0]]
        return (x + self.v[slot] * self.s[slot, None]).reshape(h.shape)

    def _prober(self, i: int) -> Callable[[Tensor], None]:
        def probe(h: Tensor) -> None:
            x = h.reshape(-1, h.shape[-1])
            self.scores.append((x * self.w[i][self.core.plan.step.row_slot[: x.shape[0]]]).sum(-1))

        return probe

    def _to_host(self, *args: Any) -> None:
        if self.scores:
            torch.stack(self.scores, 1).tolist()
        self.scores.clear()


def _requests(
    prefix: str, prompts: list[tuple[int, ...]], recipes: list[CompiledRecipe] | None, new: int
) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"{prefix}{i}",
            p,
            recipe=recipes[i] if recipes is not None else CompiledRecipe((), (), (), 0),
            sampling=SamplingParams(max_new_tokens=new),
        )
        for i, p in enumerate(prompts)
    ]


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    args = parser.parse_args()
    n, new = args.requests, args.new_tokens
    torch.manual_seed(0)

    plain_core, hf_core, bare_core = _core(), _core(), _core()
    p1000_core = _core(probes_per_site=1024)
    shape = hf_core.shape
    hidden = shape.hidden_size
    work = steer_and_probe_recipes(shape, n)
    vectors, probes, resolved, recipes = work.vectors, work.probes, work.resolved, work.recipes
    g = torch.Generator().manual_seed(2)
    recipes1000 = []
    total = 0
    for i in range(n):
        count = 1000 // n + (1 if i < 1000 % n else 0)
        items = []
        for _ in range(count):
            key = f"q{total}"
            resolved[key] = ProbeData.of(torch.randn(hidden, generator=g) / hidden**0.5, 0.0)
            items.append({"op": "probe", "layer": PROBE1000_LAYER, "probe": key})
            total += 1
        recipes1000.append(compile_recipe(parse_recipe({"interventions": items}), shape, resolved))
    assert total == 1000
    bare = BareHooks(bare_core, vectors, 2.0, probes)
    prompts = random_prompts(n, args.prompt_len)

    def batches(rep: int) -> dict[str, tuple[HFEngineCore, list[GenerationRequest]]]:
        return {
            "plain": (plain_core, _requests(f"a{rep}_", prompts, None, new)),
            "hf": (hf_core, _requests(f"b{rep}_", prompts, recipes, new)),
            "bare_hook": (bare_core, _requests(f"c{rep}_", prompts, None, new)),
            "probes1000": (p1000_core, _requests(f"d{rep}_", prompts, recipes1000, new)),
        }

    def lockstep(rep: int) -> dict[str, float]:
        """One batch per variant, stepped in rotation: machine speed drift hits every variant alike."""
        runs = batches(rep)
        for core, reqs in runs.values():
            for r in reqs:
                core.add(r)
        bare_core._admit([])  # admit now so the bare tables are bound before the first forward
        bare.bind([r.request_id for r in runs["bare_hook"][1]])
        seconds = dict.fromkeys(runs, 0.0)
        tokens = dict.fromkeys(runs, 0)
        passes = {name: core.forward_passes for name, (core, _) in runs.items()}
        active, turn = list(runs), 0
        while active:
            k = turn % len(active)
            for name in active[k:] + active[:k]:
                core = runs[name][0]
                start = time.perf_counter()
                events = core.step()
                seconds[name] += time.perf_counter() - start
                tokens[name] += sum(1 for e in events if isinstance(e, TokenEvent))
            turn += 1
            active = [name for name in active if runs[name][0].has_work()]
        # All requests ran concurrently: one prefill forward, then one per token (+1 to read the last).
        for name, (core, _) in runs.items():
            expected = new + (0 if name == "plain" else 1)
            assert core.forward_passes - passes[name] == expected, (name, core.forward_passes - passes[name])
        return {name: tokens[name] / seconds[name] for name in runs}

    lockstep(-1)  # warm-up (allocations, first-call costs)
    rates: dict[str, list[float]] = {k: [] for k in ("plain", "hf", "bare_hook", "probes1000")}
    ratios: dict[str, list[float]] = {"hf_vs_plain": [], "hf_vs_bare_hook": [], "probes1000_vs_plain": []}
    for rep in range(args.repeats):
        got = lockstep(rep)
        for name, rate in got.items():
            rates[name].append(rate)
        ratios["hf_vs_plain"].append(got["hf"] / got["plain"])
        ratios["hf_vs_bare_hook"].append(got["hf"] / got["bare_hook"])
        ratios["probes1000_vs_plain"].append(got["probes1000"] / got["plain"])
        print(f"repeat {rep}: " + " ".join(f"{k}={v:.1f} tok/s" for k, v in got.items()), flush=True)
    for name, values in rates.items():
        print(f"{name}: {_summary(values)} tok/s")
    for name, values in ratios.items():
        print(f"{name}: {_summary(values)}")

    plan_us = _plan_us(hf_core, resolved)
    print(f"plan_us (10-intervention recipe, compile + bind): {_summary(plan_us)}")
    overhead = {k: _step_overhead(k, resolved) for k in (32, 64)}
    for k, values in overhead.items():
        print(f"step_overhead_us_{k}: {_summary(values)}")
    print(
        "RESULT "
        f"hf_vs_plain={statistics.median(ratios['hf_vs_plain']):.3f} "
        f"hf_vs_bare_hook={statistics.median(ratios['hf_vs_bare_hook']):.3f} "
        f"probes1000_vs_plain={statistics.median(ratios['probes1000_vs_plain']):.3f} "
        f"plan_us={statistics.median(plan_us):.1f} "
        f"step_overhead_us_32={statistics.median(overhead[32]):.0f} "
        f"step_overhead_us_64={statistics.median(overhead[64]):.0f}"
    )


def _plan_us(core: HFEngineCore, resolved: dict[str, Any]) -> list[float]:
    items = [
        {"op": "steer", "layer": 3, "vector": "v0", "scale": 2.0},
        {"op": "steer", "layer": 3, "vector": "v1", "scale": -1.0, "positions": "generated"},
        {"op": "steer", "layer": 3, "vector": "v2", "normalize": "unit", "positions": {"indices": [0, -1]}},
        {"op": "project_out", "layer": 3, "direction": "v3"},
        {"op": "clamp", "layer": 3, "direction": "v4", "value": 1.0},
        {"op": "ablate", "layer": 3, "dims": [1, 2, 3]},
        {"op": "steer", "layer": 3, "vector": "v5", "when": {"probe": "p0_0", "layer": 2, "threshold": 0.0}},
        {"op": "probe", "layer": 2, "probe": "p0_0"},
        {"op": "probe", "layer": 4, "probe": "p0_1"},
        {"op": "logit_lens", "layer": 5, "k": 5},
    ]
    recipe = parse_recipe({"interventions": items})
    plan = core.plan
    join, leave = [], []
    for i in range(3200):
        start = time.perf_counter()
        compiled = compile_recipe(recipe, core.shape, resolved)
        plan.add("plan-bench", compiled, 16)
        mid = time.perf_counter()
        plan.remove("plan-bench")
        end = time.perf_counter()
        if i >= 200:  # the first binds copy the vectors into the banks (cold cache)
            join.append((mid - start) * 1e6)
            leave.append((end - mid) * 1e6)
    print(f"unbind_us (request leaves): {statistics.median(leave):.1f}")
    return [statistics.median(join[j : j + 500]) for j in range(0, len(join), 500)]


def _step_overhead(n: int, resolved: dict[str, Any]) -> list[float]:
    """Host time per decode step outside the forward, with n live requests (hf variant recipes)."""
    core = _core(max_requests=max(64, n))
    bp = core._bp
    forward_time: list[float] = []
    inner = bp._generation_step

    def timed(model: Any) -> None:
        t = time.perf_counter()
        inner(model)
        forward_time.append(time.perf_counter() - t)

    bp._generation_step = timed
    prompts = random_prompts(n, 8)
    recipes = []
    for i in range(n):
        items = [{"op": "steer", "layer": STEER_LAYER, "vector": f"v{i % 32}", "scale": 2.0}]
        items += [
            {"op": "probe", "layer": layer, "probe": f"p{i % 32}_{j}"} for j, layer in enumerate(PROBE_LAYERS)
        ]
        recipes.append(compile_recipe(parse_recipe({"interventions": items}), core.shape, resolved))
    samples = []
    for rep in range(5):
        for r in _requests(f"o{rep}_", prompts, recipes, 12):
            core.add(r)
        core.step()  # prefill
        forward_time.clear()
        steps = []
        while core.has_work():
            t = time.perf_counter()
            core.step()
            steps.append(time.perf_counter() - t)
        decode = list(zip(steps[1:-2], forward_time[1:-2], strict=True))  # steady decode steps
        samples.append(statistics.median((s - f) * 1e6 for s, f in decode))
    return samples


if __name__ == "__main__":
    main()

"""What per-request interventions cost the vLLM engine (DESIGN §6, issue "The vLLM engine").

Model: the BENCH tiny Llama (hidden 1024, 8 layers, fp32), built offline. Two engine processes with
the same settings (``VLLMEngineCore``, compiled unless ``--eager``, prefix caching off so that repeats
recompute their prompts) each run a batch of the same 32 requests (distinct prompts, greedy, 32 new
tokens, all joining at step 0):

* plain:    no interventions;
* steered:  each request has its own recipe: 1 steer (its own vector) + 4 probes (its own, at 4
            layers), reads streamed for every token (which costs one extra forward per request to
            read the last token, counted against it).

The engines step in lockstep (one step of one, then one step of the other, the order alternating),
each step timed in its own process, so the drift in speed that this shared 2-core VM shows over
seconds hits both alike (whole runs one after the other measured a ±8% spread). Throughput is
generated tokens per second of stepping; the figure is the median over repeats of steered / plain,
with its range.

Run: ``python benchmarks/vllm_overhead.py`` (``--repeats``, ``--new-tokens``, ``--eager``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from _workload import random_prompts, steer_and_probe_recipes

from interventions.plan import CompiledRecipe
from interventions.tiny import BENCH, build_tiny
from workers.engines.base import GenerationRequest, ReadEvent, SamplingParams, TokenEvent


def _engine_process(conn: Connection, args: dict[str, Any], steered: bool) -> None:
    """One engine; answers "start" (queue a batch) and "step" (one timed step) from the parent."""
    from workers.engines.vllm.core import VLLMEngineCore

    n, new, plen = args["requests"], args["new_tokens"], args["prompt_len"]
    core = VLLMEngineCore(
        str(build_tiny(BENCH)),
        model_name="bench",
        max_requests=n,
        max_batch_tokens=max(1024, n * plen),
        max_model_len=plen + new + 8,
        kv_cache_bytes=512 << 20,
        enforce_eager=args["eager"],
        dtype="float32",
        prefix_caching=False,
    )
    recipes = steer_and_probe_recipes(core.shape, n).recipes
    batch = random_prompts(n, plen)
    conn.send("ready")
    while True:
        command, tag = conn.recv()
        if command == "start":
            for i, p in enumerate(batch):
                recipe = recipes[i] if steered else CompiledRecipe((), (), (), 0)
                core.add(
                    GenerationRequest(
                        f"{tag}{i}", p, recipe=recipe, sampling=SamplingParams(max_new_tokens=new)
                    )
                )
            conn.send(None)
        elif command == "step":
            start = time.perf_counter()
            events = core.step()
            seconds = time.perf_counter() - start
            tokens = sum(isinstance(e, TokenEvent) for e in events)
            reads = sum(isinstance(e, ReadEvent) for e in events)
            conn.send((seconds, tokens, reads, core.has_work()))
        else:
            conn.send(core.runtime.site_calls)
            core.close()
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--eager", action="store_true", help="skip torch.compile (default: compiled)")
    args = parser.parse_args()
    options = vars(args)
    n, new, plen = args.requests, args.new_tokens, args.prompt_len
    mode = "eager" if args.eager else "compiled"
    ctx = mp.get_context("spawn")
    engines: dict[str, tuple[Any, Connection]] = {}
    started = time.perf_counter()
    for name in ("plain", "steered"):  # one after the other: the second reuses the compile cache
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_engine_process, args=(child, options, name == "steered"), daemon=True)
        proc.start()
        assert parent.recv() == "ready"
        engines[name] = (proc, parent)
    print(f"engines ready in {time.perf_counter() - started:.1f}s ({mode})", flush=True)

    def lockstep(rep: int) -> dict[str, float]:
        for _, conn in engines.values():
            conn.send(("start", f"r{rep}-"))
            conn.recv()
        seconds = dict.fromkeys(engines, 0.0)
        tokens = dict.fromkeys(engines, 0)
        reads = dict.fromkeys(engines, 0)
        active, turn = list(engines), 0
        while active:
            k = turn % len(active)
            for name in active[k:] + active[:k]:
                conn = engines[name][1]
                conn.send(("step", ""))
                took, got, read, more = conn.recv()
                seconds[name] += took
                tokens[name] += got
                reads[name] += read
                if not more:
                    active.remove(name)
            turn += 1
        assert tokens == {"plain": n * new, "steered": n * new}, tokens
        assert reads == {"plain": 0, "steered": n * (plen + new)}, reads
        return {name: tokens[name] / seconds[name] for name in engines}

    lockstep(-1)  # warm-up
    ratios, rates = [], {name: [] for name in engines}
    for rep in range(args.repeats):
        got = lockstep(rep)
        for name, rate in got.items():
            rates[name].append(rate)
        ratios.append(got["steered"] / got["plain"])
        print(
            f"repeat {rep}: plain={got['plain']:.1f} tok/s steered={got['steered']:.1f} tok/s ratio={ratios[-1]:.3f}",
            flush=True,
        )
    for name, values in rates.items():
        print(f"{name}: median {statistics.median(values):.1f} tok/s [{min(values):.1f}-{max(values):.1f}]")
    for name, (proc, conn) in engines.items():
        conn.send(("stop", ""))
        calls = conn.recv()
        proc.join(timeout=60)
        if name == "steered":
            print(f"site op calls that found work (steered engine): {calls}")
    print(
        "RESULT "
        f"vllm_steered_vs_plain={statistics.median(ratios):.3f} "
        f"range={min(ratios):.3f}-{max(ratios):.3f} requests={n} mode={mode}"
    )


if __name__ == "__main__":
    main()

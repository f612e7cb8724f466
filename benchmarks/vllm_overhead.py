"""What Steerlab's vLLM engine costs against **stock vLLM** (docs/design.md §6).

Model: the BENCH tiny Llama (hidden 1024, 8 layers, fp32), built offline. Every variant is one
process with the same vLLM settings (in-process engine core and executor, chunked prefill, prefix
caching off, the same sizes, compiled unless ``--eager``), greedy, 16-token prompts, 32 new tokens,
all requests joining at step 0:

* ``stock``: vLLM itself, in a process that never imports Steerlab (``_stock_vllm.py``);
* ``idle``: Steerlab's engine (``VLLMEngineCore``: its site ops compiled in, its sampler) with no
  interventions;
* ``steered``: Steerlab's engine, each request with its own recipe of 1 steer + 4 probes, spread
  over all layers (request i steers layer i mod L and probes the next four), reads streamed for
  every token (the last token's read takes one more forward).

Two groups: 32 requests (stock, idle, steered) and 256 requests (stock, steered). Within a group
the processes step in lockstep (one step of each in rotation, the order turning, each step timed in
its own process), so the drift in speed this shared 2-core VM shows over seconds hits all alike.
Throughput is generated tokens per second of stepping; each figure is the median over repeats of
the ratio to stock in the same repeat, with its range. ``sites`` is how many site ops are compiled
into the model (every point of every layer).

Run: ``python benchmarks/vllm_overhead.py`` (``--repeats``, ``--new-tokens``, ``--eager``,
``--groups 32,256``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _workload import random_prompts, steer_and_probe_recipes

from interventions.compiler import CompiledRecipe
from interventions.plan import Capacity
from interventions.tiny import BENCH, build_tiny
from workers.engines.base import GenerationRequest, ReadEvent, SamplingParams, TokenEvent

HERE = Path(__file__).resolve().parent
KV_CACHE_BYTES = 512 << 20  # 256 requests x 57 tokens x 16 KB: about 230 MB


def _settings(n: int, new: int, plen: int, eager: bool) -> dict[str, Any]:
    return {
        "requests": n,
        "new_tokens": new,
        "prompt_len": plen,
        "max_batch_tokens": max(1024, n * plen),
        "max_model_len": plen + new + 8,
        "kv_cache_bytes": KV_CACHE_BYTES,
        "eager": eager,
    }


def _engine_process(conn: Connection, settings: dict[str, Any], steered: bool) -> None:
    """Steerlab's engine; answers "start" (queue a batch), "step" (one timed step), "stop"."""
    from workers.engines.vllm.core import VLLMEngineCore

    n, new, plen = settings["requests"], settings["new_tokens"], settings["prompt_len"]
    core = VLLMEngineCore(
        str(build_tiny(BENCH)),
        model_name="bench",
        max_requests=n,
        max_batch_tokens=settings["max_batch_tokens"],
        max_model_len=settings["max_model_len"],
        kv_cache_bytes=settings["kv_cache_bytes"],
        enforce_eager=settings["eager"],
        dtype="float32",
        prefix_caching=False,
        # Room for every request's 4 probes (spread over the layers: 4n / L per site).
        capacity=Capacity(probes_per_site=max(16, 4 * n // 8), probe_rows=4 * n + 1),
    )
    recipes = steer_and_probe_recipes(core.shape, n, spread=True).recipes
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
            conn.send(5 * core.shape.num_layers)  # site ops compiled in: every point of every layer
            core.close()
            return


class Steerlab:
    """A Steerlab engine process (idle or steered)."""

    def __init__(self, settings: dict[str, Any], steered: bool) -> None:
        self.parent, child = mp.get_context("spawn").Pipe()
        self.proc = mp.get_context("spawn").Process(
            target=_engine_process, args=(child, settings, steered), daemon=True
        )
        self.proc.start()
        assert self.parent.recv() == "ready"

    def start(self, tag: str) -> None:
        self.parent.send(("start", tag))
        self.parent.recv()

    def step(self) -> tuple[float, int, int, bool]:
        self.parent.send(("step", ""))
        result: tuple[float, int, int, bool] = self.parent.recv()
        return result

    def stop(self) -> Any:
        self.parent.send(("stop", ""))
        answer = self.parent.recv()
        self.proc.join(timeout=60)
        return answer


class Stock:
    """Stock vLLM in its own process (``_stock_vllm.py``), fed the same prompts."""

    def __init__(self, settings: dict[str, Any], cache: Path) -> None:
        prompts = [list(p) for p in random_prompts(settings["requests"], settings["prompt_len"])]
        args = json.dumps({**settings, "model": str(build_tiny(BENCH)), "prompts": prompts})
        # Its own compile cache: vLLM's cache key does not see Steerlab's instrumentation.
        env = {**os.environ, "VLLM_CACHE_ROOT": str(cache)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_stock_vllm.py"), args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._read() == "ready"

    def _send(self, command: dict[str, Any]) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"stock vLLM exited ({self.proc.wait()})")

    def start(self, tag: str) -> None:
        self._send({"cmd": "start", "tag": tag})

    def step(self) -> tuple[float, int, int, bool]:
        seconds, tokens, more = self._send({"cmd": "step"})
        return seconds, tokens, 0, more

    def stop(self) -> Any:
        answer = self._send({"cmd": "stop"})
        self.proc.wait(timeout=60)
        return answer


def lockstep(engines: dict[str, Any], rep: int, n: int, new: int, plen: int) -> dict[str, float]:
    """One batch through every engine of a group, a step of each in rotation; tokens/s by name."""
    for engine in engines.values():
        engine.start(f"r{rep}-")
    seconds = dict.fromkeys(engines, 0.0)
    tokens = dict.fromkeys(engines, 0)
    reads = dict.fromkeys(engines, 0)
    active, turn = list(engines), 0
    while active:
        k = turn % len(active)
        for name in active[k:] + active[:k]:
            took, got, read, more = engines[name].step()
            seconds[name] += took
            tokens[name] += got
            reads[name] += read
            if not more:
                active.remove(name)
        turn += 1
    assert all(count == n * new for count in tokens.values()), tokens
    assert reads == {name: (n * (plen + new) if name == "steered" else 0) for name in engines}, reads
    return {name: tokens[name] / seconds[name] for name in engines}


def run_group(
    n: int, names: tuple[str, ...], args: argparse.Namespace, cache: Path
) -> dict[str, list[float]]:
    """Ratios to stock, per repeat, of every other engine of a group of ``n`` requests."""
    settings = _settings(n, args.new_tokens, args.prompt_len, args.eager)
    started = time.perf_counter()
    engines: dict[str, Any] = {}
    for name in names:  # one after the other: later ones reuse the compile cache
        engines[name] = Stock(settings, cache) if name == "stock" else Steerlab(settings, name == "steered")
    print(f"[{n}] engines ready in {time.perf_counter() - started:.1f}s", flush=True)
    lockstep(engines, -1, n, args.new_tokens, args.prompt_len)  # warm-up
    ratios: dict[str, list[float]] = {name: [] for name in names if name != "stock"}
    for rep in range(args.repeats):
        rates = lockstep(engines, rep, n, args.new_tokens, args.prompt_len)
        for name in ratios:
            ratios[name].append(rates[name] / rates["stock"])
        shown = " ".join(f"{name}={rate:.1f}" for name, rate in rates.items())
        print(f"[{n}] repeat {rep}: {shown} tok/s", flush=True)
    answers = {name: engine.stop() for name, engine in engines.items()}
    assert answers["stock"] == {"steerlab_imported": False}, answers["stock"]
    args.sites = answers.get("steered")
    return ratios


def _figure(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--groups", default="32,256", help="request counts, comma-separated")
    parser.add_argument("--eager", action="store_true", help="skip torch.compile (default: compiled)")
    args = parser.parse_args()
    mode = "eager" if args.eager else "compiled"
    groups = [int(g) for g in args.groups.split(",")]
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="stock-vllm-cache-") as cache:
        for n in groups:
            names = ("stock", "idle", "steered") if n == min(groups) else ("stock", "steered")
            for name, ratios in run_group(n, names, args, Path(cache)).items():
                figures[f"vllm_{name}{'' if n == min(groups) else n}_vs_stock"] = ratios
    for name, values in figures.items():
        print(f"{name}: {_figure(values)}")
    shown = " ".join(f"{name}={statistics.median(values):.3f}" for name, values in figures.items())
    print(f"RESULT {shown} sites={args.sites} mode={mode}")


if __name__ == "__main__":
    main()

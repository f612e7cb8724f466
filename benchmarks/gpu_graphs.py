"""The site ops inside a captured CUDA graph of a ~1B Llama decode step (docs/design.md §6).

For the GPU machine, which has torch but neither vLLM nor this project's environment: this file
imports only torch and ``interventions.ops`` (run it from the repository root). It builds a
random-weight Llama (hidden 2048, 16 layers, bf16) decode step over a pre-filled KV cache, with the
site op at every point of every layer, captures it once in a CUDA graph, and replays it:

* with new tables written in place after the capture, the replay must equal an eager run of the
  same step (the graph reads the tables, it did not freeze them);
* throughput against the same graph without ops, at batch 32 and 256 (distinct recipes of one
  steer and four probes spread over all layers) and idle (ops compiled in, no work), median of
  ``--replays`` replays per variant, interleaved::

    RESULT gpu_graph_steered_vs_plain=… gpu_graph_steered256_vs_plain=… gpu_graph_idle_vs_plain=…

``--smoke`` runs the same code on the CPU with a tiny model and no graph capture (CI runs it): it
proves the tables, the step and the comparisons, not graph replay or GPU timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interventions import ops

POINTS = ("resid_pre", "attn_out", "mlp_act", "mlp_out", "resid_post")
HIDDEN_POINTS = tuple(p for p in POINTS if p != "mlp_act")
LANES, PROBES_PER_SITE, LIST_LEN = 4, 16, 64


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    context: int  # KV positions each decode step attends to


FULL = Shape(hidden=2048, layers=16, heads=32, kv_heads=8, mlp=8192, vocab=32000, context=512)
SMOKE = Shape(hidden=64, layers=2, heads=4, kv_heads=2, mlp=128, vocab=256, context=16)


class Tables:
    """Persistent tables sized for ``slots`` requests and ``rows`` rows (what plan.BatchPlan allocates)."""

    def __init__(self, shape: Shape, slots: int, rows: int, device: torch.device, dtype: torch.dtype) -> None:
        n_hidden, n_mlp = shape.layers * len(HIDDEN_POINTS), shape.layers
        probe_rows = 4 * slots + 1  # four probes per request
        self.step = ops.StepTables(
            row_slot=torch.zeros(rows, dtype=torch.long, device=device),
            row_pos=torch.zeros(rows, dtype=torch.long, device=device),
            prompt_len=torch.zeros(slots, dtype=torch.long, device=device),
            scores=torch.zeros(rows, 2 * probe_rows, device=device),
            prev_scores=torch.zeros(slots, 2 * probe_rows, device=device),
            pos_lists=torch.full((2, LIST_LEN), -1, dtype=torch.long, device=device),
        )
        self.hidden = self._width(n_hidden, slots, rows, shape.hidden, probe_rows, 0, device, dtype)
        self.mlp = self._width(n_mlp, slots, rows, shape.mlp, probe_rows, probe_rows, device, dtype)

    @staticmethod
    def _width(
        sites: int,
        slots: int,
        rows: int,
        width: int,
        probe_rows: int,
        offset: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> ops.WidthTables:
        n_int, n_float = len(ops.IntCol), len(ops.FloatCol)
        return ops.WidthTables(
            ints=torch.zeros(sites, slots, LANES, n_int, dtype=torch.long, device=device),
            floats=torch.zeros(sites, slots, LANES, n_float, device=device),
            bank=torch.zeros(slots + 1, width, dtype=dtype, device=device),
            probe_rows=torch.zeros(sites, PROBES_PER_SITE, dtype=torch.long, device=device),
            probe_weight=torch.zeros(probe_rows, width, device=device),
            probe_bias=torch.zeros(probe_rows, device=device),
            probe_col=offset + torch.arange(probe_rows, device=device),
            capture_dst=torch.zeros(sites, rows, dtype=torch.long, device=device),
            capture=torch.zeros(rows + 1, width, dtype=dtype, device=device),
        )

    def clear(self) -> None:
        for t in (self.hidden, self.mlp):
            for table in (t.ints, t.floats, t.probe_rows):
                table.zero_()
        self.step.row_slot.zero_()

    def fill(self, shape: Shape, requests: int, gen: torch.Generator) -> None:
        """``requests`` distinct recipes, one row each: a steer at layer r % L (resid_post) and four
        probes at other sites, spread over all layers. Written in place (the graph keeps reading)."""
        self.clear()
        h = self.hidden
        device = h.ints.device
        dirs = torch.randn(requests, shape.hidden, generator=gen) / shape.hidden**0.5
        h.bank[1 : requests + 1].copy_(dirs.to(h.bank.dtype))
        used = torch.zeros(h.probe_rows.shape[0], dtype=torch.long)
        for r in range(requests):
            slot = r + 1
            site = (r % shape.layers) * len(HIDDEN_POINTS) + HIDDEN_POINTS.index("resid_post")
            h.ints[site, slot, 0, ops.IntCol.DIR] = slot
            h.ints[site, slot, 0, ops.IntCol.POS_STOP] = 1 << 62
            h.ints[site, slot, 0, ops.IntCol.POS_STEP] = 1
            h.floats[site, slot, 0, ops.FloatCol.ALPHA] = 4.0
            for j in range(4):
                probe_site = (r * 4 + j) % h.probe_rows.shape[0]
                row = 1 + r * 4 + j
                h.probe_weight[row].copy_(torch.randn(shape.hidden, generator=gen).to(device))
                h.probe_rows[probe_site, int(used[probe_site]) % PROBES_PER_SITE] = row
                used[probe_site] += 1
        self.step.row_slot[:requests].copy_(torch.arange(1, requests + 1))
        self.step.row_pos[:requests].fill_(shape.context)


class Llama:
    """A random-weight Llama decode step: one new token per row over a pre-filled KV cache."""

    def __init__(
        self, shape: Shape, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0
    ) -> None:
        g = torch.Generator(device="cpu").manual_seed(seed)

        def w(*size: int) -> Tensor:
            return (torch.randn(*size, generator=g) / size[-1] ** 0.5).to(device, dtype)

        self.shape = shape
        hd = shape.hidden // shape.heads
        self.embed = w(shape.vocab, shape.hidden)
        self.layers = [
            {
                "qkv": w((shape.heads + 2 * shape.kv_heads) * hd, shape.hidden),
                "o": w(shape.hidden, shape.hidden),
                "gate_up": w(2 * shape.mlp, shape.hidden),
                "down": w(shape.hidden, shape.mlp),
                "k": w(batch, shape.kv_heads, shape.context, hd),
                "v": w(batch, shape.kv_heads, shape.context, hd),
            }
            for _ in range(shape.layers)
        ]
        self.head = w(shape.vocab, shape.hidden)

    def step(self, tokens: Tensor, tables: Tables | None) -> Tensor:
        """Logits ``[batch, vocab]`` of one decode step; the site ops run where ``tables`` is given."""
        s = self.shape
        hd = s.hidden // s.heads
        batch = tokens.shape[0]

        def site(x: Tensor, layer: int, point: str) -> Tensor:
            if tables is None:
                return x
            if point == "mlp_act":
                return ops.apply_site(x, tables.mlp, layer, tables.step)
            return ops.apply_site(
                x, tables.hidden, layer * len(HIDDEN_POINTS) + HIDDEN_POINTS.index(point), tables.step
            )

        x = self.embed[tokens]
        for i, p in enumerate(self.layers):
            x = site(x, i, "resid_pre")
            q, k, v = (_rms(x) @ p["qkv"].t()).split([s.heads * hd, s.kv_heads * hd, s.kv_heads * hd], -1)
            q = q.view(batch, s.heads, 1, hd)
            keys = torch.cat([p["k"], k.view(batch, s.kv_heads, 1, hd)], 2)
            values = torch.cat([p["v"], v.view(batch, s.kv_heads, 1, hd)], 2)
            att = torch.nn.functional.scaled_dot_product_attention(q, keys, values, enable_gqa=True)
            x = x + site(att.reshape(batch, s.hidden) @ p["o"].t(), i, "attn_out")
            gate, up = (_rms(x) @ p["gate_up"].t()).chunk(2, -1)
            act = site(torch.nn.functional.silu(gate) * up, i, "mlp_act")
            x = x + site(act @ p["down"].t(), i, "mlp_out")
            x = site(x, i, "resid_post")
        return (_rms(x) @ self.head.t()).float()


def _rms(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype)


def captured(fn: Callable[[], Tensor], device: torch.device) -> Callable[[], Tensor]:
    """``fn`` captured in a CUDA graph (replayed on call); on the CPU, ``fn`` itself."""
    if device.type != "cuda":
        return fn
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up outside the graph (allocator, kernels)
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> Tensor:
        graph.replay()
        return out

    return replay


def _timed(fn: Callable[[], Tensor], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(
    shape: Shape, batch: int, requests: int, replays: int, device: torch.device, dtype: torch.dtype
) -> dict[str, float]:
    """Step times of the plain, idle and steered graphs (median of interleaved replays), after
    checking that replays with new tables equal eager runs."""
    torch.manual_seed(0)
    model = Llama(shape, batch, device, dtype)
    tables = Tables(shape, slots=requests + 1, rows=batch, device=device, dtype=dtype)
    tokens = torch.randint(0, shape.vocab, (batch,), device=device)
    plain = captured(lambda: model.step(tokens, None), device)
    with_ops = captured(lambda: model.step(tokens, tables), device)
    # Idle sites change nothing, bit for bit.
    reference = plain().clone()
    assert torch.equal(with_ops(), reference), "an idle site changed the output"
    # New tables after the capture: the replay reads them, and equals an eager step.
    tables.fill(shape, min(requests, batch), torch.Generator().manual_seed(1))
    replayed = with_ops().clone()
    eager = model.step(tokens, tables)
    torch.testing.assert_close(replayed, eager, rtol=0, atol=0)
    assert not torch.equal(replayed, reference), "the steering changed nothing"
    scores = tables.step.scores[:batch].clone()
    assert bool(scores.abs().sum() > 0), "no probe was scored"
    # Timing: plain, idle and steered replays interleaved.
    times: dict[str, list[float]] = {"plain": [], "idle": [], "steered": []}
    for _ in range(replays):
        times["plain"].append(_timed(plain, device))
        tables.clear()
        times["idle"].append(_timed(with_ops, device))
        _refill(tables, shape, requests, batch)
        times["steered"].append(_timed(with_ops, device))
    return {k: statistics.median(v) for k, v in times.items()}


_FILLED: dict[int, tuple[Tensor, ...]] = {}


def _refill(tables: Tables, shape: Shape, requests: int, batch: int) -> None:
    # Re-filling from Python each replay would dominate a GPU loop: restore a saved copy instead.
    key = id(tables)
    saved = _FILLED.get(key)
    parts = (tables.hidden.ints, tables.hidden.floats, tables.hidden.probe_rows, tables.step.row_slot)
    if saved is None:
        tables.fill(shape, min(requests, batch), torch.Generator().manual_seed(1))
        _FILLED[key] = tuple(t.clone() for t in parts)
        return
    for t, s in zip(parts, saved, strict=True):
        t.copy_(s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, no graph capture (CI)")
    parser.add_argument("--replays", type=int, default=30)
    args = parser.parse_args()
    if args.smoke:
        shape, device, dtype, replays = SMOKE, torch.device("cpu"), torch.float32, 3
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --smoke on a CPU")
        shape, device, dtype, replays = FULL, torch.device("cuda"), torch.bfloat16, max(20, args.replays)
    results = {}
    for batch in (32, 256):
        t = run(shape, batch, requests=batch, replays=replays, device=device, dtype=dtype)
        results[batch] = t
        print(
            f"batch {batch}: plain {t['plain'] * 1e3:.3f} ms, idle {t['idle'] * 1e3:.3f} ms, steered {t['steered'] * 1e3:.3f} ms",
            flush=True,
        )
    r32, r256 = results[32], results[256]
    print(
        f"RESULT gpu_graph_steered_vs_plain={r32['plain'] / r32['steered']:.3f} "
        f"gpu_graph_steered256_vs_plain={r256['plain'] / r256['steered']:.3f} "
        f"gpu_graph_idle_vs_plain={r32['plain'] / r32['idle']:.3f}"
        + (" (smoke: CPU, no graph, not a measurement)" if args.smoke else "")
    )


if __name__ == "__main__":
    main()

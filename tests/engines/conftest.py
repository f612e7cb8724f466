"""Shared helpers for engine tests: running requests and the DESIGN §4 comparison rule."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
import torch

from interventions.tiny import load_tiny
from workers.engines.base import Event, FinishedEvent, GenerationRequest, ReadEvent, TokenEvent
from workers.engines.hf import HFEngineCore

NEAR_TIE = 1e-4
TOL = 1e-5


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    reads: dict[int, ReadEvent] = field(default_factory=dict)
    finished: FinishedEvent | None = None
    events: list[Event] = field(default_factory=list)


def collect(events: Sequence[Event], results: dict[str, Result]) -> None:
    for e in events:
        r = results.setdefault(e.request_id, Result())
        r.events.append(e)
        if isinstance(e, TokenEvent):
            assert e.index == len(r.tokens)
            r.tokens.append(e.token_id)
            if e.logits is not None:
                r.logits.append(torch.tensor(e.logits))
        elif isinstance(e, ReadEvent):
            assert e.position not in r.reads, "a position was read twice"
            r.reads[e.position] = e
        elif isinstance(e, FinishedEvent):
            assert r.finished is None, "finished twice"
            r.finished = e


def run_schedule(core: HFEngineCore, schedule: Sequence[tuple[int, GenerationRequest]]) -> dict[str, Result]:
    """Add each request at its step (0-based), step until everything finished."""
    results: dict[str, Result] = {}
    pending = sorted(schedule, key=lambda s: s[0])
    step = 0
    while pending or core.has_work():
        while pending and pending[0][0] <= step:
            core.add(pending.pop(0)[1])
        collect(core.step(), results)
        step += 1
        assert step < 10_000
    return results


def run_alone(core: HFEngineCore, request: GenerationRequest) -> Result:
    return run_schedule(core, [(0, request)])[request.request_id]


def assert_close_runs(reference: Result, other: Result, *, forced: Result | None = None) -> None:
    """DESIGN §4: tokens equal up to the first near-tie of the reference; logits and reads within 1e-5.

    ``forced`` is ``other``'s request re-run teacher-forced on the reference's tokens: from the
    first allowed divergence on, its logits and reads are what is compared.
    """
    assert reference.finished is not None and other.finished is not None
    diverged = None
    for i, (a, b) in enumerate(zip(reference.tokens, other.tokens, strict=False)):
        if a != b:
            diverged = i
            break
    if diverged is None:
        assert reference.tokens == other.tokens or reference.finished.reason != other.finished.reason
        assert len(reference.tokens) == len(other.tokens)
    else:
        top2 = torch.topk(reference.logits[diverged], 2).values
        gap = float(top2[0] - top2[1])
        assert gap < NEAR_TIE, f"tokens diverged at step {diverged} where the top-2 gap is {gap:.2e}"
        assert forced is not None, "a near-tie divergence needs the teacher-forced run"
        other = forced
        assert other.tokens == reference.tokens
    for i, (a, b) in enumerate(zip(reference.logits, other.logits, strict=True)):
        torch.testing.assert_close(b, a, rtol=0, atol=TOL, msg=lambda m, i=i: f"logits of step {i}: {m}")
    assert reference.reads.keys() == other.reads.keys()
    for pos, ra in reference.reads.items():
        rb = other.reads[pos]
        assert ra.probes.keys() == rb.probes.keys()
        for k, va in ra.probes.items():
            assert abs(va - rb.probes[k]) <= TOL, f"probe {k} at position {pos}: {va} vs {rb.probes[k]}"
        assert ra.lens.keys() == rb.lens.keys()
        for k, (ids_a, pa) in ra.lens.items():
            ids_b, pb = rb.lens[k]
            torch.testing.assert_close(torch.tensor(pb), torch.tensor(pa), rtol=0, atol=TOL)
            gaps = [pa[j] - pa[j + 1] for j in range(len(pa) - 1)]
            for j in range(len(ids_a)):
                clear = (j == 0 or gaps[j - 1] > NEAR_TIE) and (j == len(gaps) or gaps[j] > NEAR_TIE)
                if clear:
                    assert ids_a[j] == ids_b[j]


@pytest.fixture
def make_core() -> Iterator[object]:
    cores: list[HFEngineCore] = []

    def factory(**kwargs: object) -> HFEngineCore:
        model, tokenizer = load_tiny()
        core = HFEngineCore(model, tokenizer, **{"max_requests": 16, "num_blocks": 16, **kwargs})  # type: ignore[arg-type]
        cores.append(core)
        return core

    yield factory
    for core in cores:
        core.close()

"""Session-wide test setup: hypothesis profiles and tier markers.

Profiles (pick with ``HYPOTHESIS_PROFILE``; ``make test`` sets ``ci`` when ``CI=true``):

* ``dev`` (default): 25 examples per property, no deadline (the tiny model's first forward pass
  is slow and would trip hypothesis' timing checks).
* ``ci``: the same, derandomized so a CI failure reproduces from the log alone.

Every test gets the marker of its tier directory (``tests/unit/...`` -> ``unit``), so
``-m unit`` and friends work without decorating each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TIERS = ("unit", "integration", "engines", "e2e")
_TESTS_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            relative = item.path.resolve().relative_to(_TESTS_DIR)
        except ValueError:
            continue
        tier = relative.parts[0] if len(relative.parts) > 1 else None
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def vllm_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One compiled vLLM engine core on the tiny model for the whole session (docs/design.md §5b).

    Built in a fresh compile cache (``VLLM_CACHE_ROOT``), so every session proves that the site ops
    are compiled in. Small batches (32 tokens), so long prompts are prefilled in chunks that share
    steps with other requests' decodes.
    """
    from interventions.tiny import build_tiny

    previous = os.environ.get("VLLM_CACHE_ROOT")
    os.environ["VLLM_CACHE_ROOT"] = str(tmp_path_factory.mktemp("vllm-cache"))
    path = build_tiny()
    # vLLM's CPU platform compiles in its trace-once mode, where ``debug_dump_path`` dumps nothing: the
    # build runs under depyf's dump, as vLLM does for ``debug_dump_path`` in its GPU mode.
    import depyf

    graphs = tmp_path_factory.mktemp("vllm-graphs")
    with depyf.prepare_debug(str(graphs)):
        core = _tiny_vllm(
            path, max_requests=16, max_model_len=512, kv_cache_bytes=64 << 20, debug_dump_path=str(graphs)
        )
    yield core
    core.close()
    if previous is None:
        os.environ.pop("VLLM_CACHE_ROOT", None)
    else:
        os.environ["VLLM_CACHE_ROOT"] = previous


@pytest.fixture(scope="session")
def vllm_family() -> Any:
    """Builds an eager vLLM engine core on a tiny model directory of any family (the family tests)."""

    def build(path: Path) -> Any:
        return _tiny_vllm(
            path, max_requests=8, max_model_len=256, kv_cache_bytes=16 << 20, enforce_eager=True
        )

    return build


def _tiny_vllm(path: Path, **settings: Any) -> Any:
    """A vLLM engine core on a tiny model directory: float32, 32-token batches (long prompts chunk)."""
    from transformers import AutoTokenizer

    from workers.engines.vllm.core import VLLMEngineCore

    return VLLMEngineCore(
        str(path),
        AutoTokenizer.from_pretrained(path),
        model_name="tiny",
        max_batch_tokens=32,
        dtype="float32",
        **settings,
    )

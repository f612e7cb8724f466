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
from pathlib import Path

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

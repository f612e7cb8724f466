"""The GPU benchmark's CPU smoke run: the device machine has torch and no project environment, so the
script may import only the standard library, torch and the torch-only ops module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_graphs.py"
ALLOWED = {"torch", "interventions.ops", "interventions"}


def test_the_gpu_benchmark_imports_only_torch_and_the_ops_module() -> None:
    imported = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    third_party = {
        m for m in imported if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"
    }
    assert third_party <= ALLOWED, third_party - ALLOWED


def test_the_gpu_benchmark_smoke_run_checks_replays_and_prints_its_result() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1
    for key in ("gpu_graph_steered_vs_plain=", "gpu_graph_steered256_vs_plain=", "gpu_graph_idle_vs_plain="):
        assert key in result[0]

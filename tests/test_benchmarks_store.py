"""Smoke test of ``benchmarks/store.py``: it runs, and its counts add up (never its timings)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "store.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_store", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cells", [4, 100, 1000, 9_999, 10_000, 12_345, 100_000])
def test_grid_shape_gives_exactly_the_cells_asked_for(cells: int) -> None:
    models, sources, targets, attacks = _module().grid_shape(cells)
    assert 1 <= sources <= models
    assert 1 <= targets <= models
    assert attacks >= 1
    assert models + sources * attacks + sources * attacks * targets == cells


def test_quick_run_on_sqlite(tmp_path: Path) -> None:
    out = tmp_path / "store"
    args = ["--quick", "--backends", "sqlite", "--sizes", "100", "--claim-cells", "40"]
    args += ["--claimers", "2", "--artifact-mib", "1", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    first, resume = results["planning"]
    assert (first["run"], first["cells"], first["new"], first["to_run"]) == ("first", 100, 100, 100)
    assert (resume["run"], resume["new"], resume["to_run"]) == ("resume", 0, 100)
    assert first["claimed"] == resume["claimed"] == 10  # only the train cells are ready
    (claims,) = results["claims"]
    assert claims["ok_attempts"] == claims["cells"] == sum(claims["per_claimer"]) == 40
    (artifact,) = results["artifacts"]
    assert artifact["mib"] == 1
    assert artifact["bytes"] > 2**20
    assert "## Claims" in out.with_suffix(".md").read_text()

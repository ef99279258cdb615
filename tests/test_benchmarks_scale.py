"""Smoke test of ``benchmarks/scale.py``: its studies, its arithmetic, and that it runs.

Never its timings: only that every cell ran once and the rows add up.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "scale"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "## Per-cell overhead" in out.with_suffix(".md").read_text()
    return json.loads(out.with_suffix(".json").read_text())


def test_the_real_study_has_exactly_40_cells() -> None:
    bench = _module()
    plan = bench.plan_of(bench.real_text("t"))
    assert plan.counts() == {"train": 4, "attack": 9, "transfer": 27}
    assert all(c.spec["kind"] == c.kind for c in plan.cells)


@pytest.mark.parametrize(("asked", "cells"), [(10, 80), (500, 512), (2000, 2024)])
def test_grid_study_size(asked: int, cells: int) -> None:
    bench = _module()
    plan = bench.plan_of(bench.grid_text(asked, "t"))
    attacks = plan.counts()["attack"]
    assert len(plan.cells) == cells == 8 + attacks + 8 * attacks


def test_flat_study_has_no_dependencies() -> None:
    bench = _module()
    plan = bench.plan_of(bench.flat_text(30, "t"))
    assert plan.counts() == {"train": 30}
    assert not any(c.depends_on for c in plan.cells)


def test_critical_path_follows_the_dependencies() -> None:
    bench = _module()
    plan = bench.plan_of(bench.real_text("t"))
    durations = {
        c.key: {"train": 1.0, "attack": 10.0, "transfer": 100.0}[c.kind] for c in plan.cells
    }
    assert bench.critical_path(plan, durations) == 111.0


def test_inline_overhead_run_on_sqlite(tmp_path: Path) -> None:
    results = _run(
        tmp_path, "--parts", "overhead", "--executors", "inline", "--cells", "20", "--wide", "0"
    )
    flat, grid = results["overhead"]["driver"]
    assert (flat["shape"], flat["cells"], flat["done"]) == ("flat", 20, 20)
    assert (grid["shape"], grid["cells"], grid["done"]) == ("grid", 80, 80)
    assert {flat["executor"], grid["executor"]} == {"inline"}
    assert results["overhead"]["bare_ray"] == []
    assert results["speedup"] == results["sleep"] == []


@pytest.mark.ray
def test_ray_overhead_and_sleep_run(tmp_path: Path) -> None:
    args = ["--parts", "overhead,sleep", "--executors", "ray", "--shapes", "flat", "--slots", "2"]
    args += ["--cells", "12", "--mlflow-cells", "0", "--wide", "0"]
    args += ["--sleep-s", "0.1", "--sleep-wall", "0.3"]
    results = _run(tmp_path, *args)
    (row,) = results["overhead"]["driver"]
    assert (row["executor"], row["mlflow"], row["done"]) == ("ray", False, 12)
    (peer,) = results["overhead"]["bare_ray"]
    assert (peer["cells"], peer["window"]) == (12, row["inflight"])
    peer, sleep = results["sleep"]
    assert (peer["backend"], peer["window"], peer["cells"]) == ("bare Ray loop", 4, 6)
    assert sleep["done"] == sleep["cells"] == 6  # 0.3 s × 2 Ray CPUs / 0.1 s
    assert min(peer["sum_duration_s"], sleep["sum_duration_s"]) >= 0.6  # each slept 0.1 s

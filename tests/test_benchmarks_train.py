"""Smoke test of ``benchmarks/train.py``: it runs, its rows are there, and the bare loop it
measures against trains what ``tasks.training.fit`` trains (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"


def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "train"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((out / "train-cpu.json").read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert list(rows) == [
        "bare loop",
        "fit",
        "fit, augmented + EMA",
        "train cell",
        "train cell, state saved every epoch",
    ]
    assert rows["fit"]["same_weights_as_bare"] is True  # the same recipe, step for step
    assert rows["bare loop"]["ratio_to_bare"] == 1.0
    assert all(r["samples_per_s"] > 0 for r in rows.values())
    assert "| train cell |" in (out / "train-cpu.md").read_text()

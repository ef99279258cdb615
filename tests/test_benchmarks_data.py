"""Smoke test of ``benchmarks/data.py``: it runs, and what it counts adds up (never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data.py"


def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "data"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads((out / "data-cpu.json").read_text())
    sizes = result["sizes"]
    by_name = {r["dataset"]: r for r in result["throughput"]}
    # every training image once, through advgrid and through torchvision alike
    assert by_name["cifar10 (written)"]["images"] == sizes["cifar_train"]
    assert by_name["cifar10 (written)"]["torchvision_images"] == sizes["cifar_train"]
    folder = by_name["imagefolder (PNG)"]
    # no official split: advgrid trains on the seeded training part, torchvision reads all
    assert folder["torchvision_images"] == sizes["folder_images"]
    assert 0 < folder["images"] < sizes["folder_images"]
    cold, warm = result["planning"]
    assert cold["cells"] == warm["cells"] == sizes["cells"]
    memory = {r["process"]: r for r in result["memory"]}
    cifar_mb = (sizes["cifar_train"] + sizes["cifar_test"]) * 3072 / 2**20
    assert memory["train cell, cifar10"]["data_uint8_mb"] == round(cifar_mb, 1)
    assert all(r["peak_rss_mb"] > 0 for r in result["memory"])
    assert "| cifar10 (written) |" in (out / "data-cpu.md").read_text()

"""The walk in ``docs/design.md`` ("Where to add things"), done as a newcomer would: a
dataset, an attack, a defense with its own metric, a cell kind and a table command written
into a temporary package as the document shows them, the package imported (the
registration lines), its study run end to end, and what the study stored checked."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli import main
from tasks.attacks import ATTACKS
from tasks.cells import CELL_KINDS
from tasks.datasets import DATASETS
from tasks.defenses import DEFENSES
from tests.conftest import Cli, data_env

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
BLOCK = re.compile(r"```(?:python|yaml)\n# (\S+)\n(.*?)```", re.S)


def _walk_files() -> dict[str, str]:
    """The files of the worked example: each fenced block whose first line names a file."""
    text = DESIGN.read_text()
    walk = text[text.index("### Worked example") :]
    return {name: body for name, body in BLOCK.findall(walk)}


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example package written under ``tmp_path`` and imported; its registrations (and
    the package) are gone again after the test, so no other test sees them."""
    files = _walk_files()
    assert sorted(files) == [
        "study.yaml",
        "throwaway/__init__.py",
        "throwaway/calibrate.py",
        "throwaway/calibration_table.py",
        "throwaway/clip.py",
        "throwaway/sign_noise.py",
        "throwaway/stripes.py",
    ]
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    for registry in (DATASETS, ATTACKS, DEFENSES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(CELL_KINDS, "_kinds", dict(CELL_KINDS._kinds))
    monkeypatch.setattr(main, "commands", dict(main.commands))
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("throwaway")
    yield tmp_path
    for module in [m for m in sys.modules if m == "throwaway" or m.startswith("throwaway.")]:
        del sys.modules[module]


def test_the_walk_runs_end_to_end(throwaway: Path) -> None:
    env = data_env(throwaway)
    cli = Cli()
    ran = cli("run", throwaway / "study.yaml", "--executor", "inline", "--no-mlflow", env=env)
    assert ran.exit_code == 0, ran.output
    assert "28 cells (2 train + 8 attack + 16 transfer + 2 calibrate)" in ran.output
    assert "28 done, 0 failed" in ran.output
    rows = json.loads(cli("results", "walk", "--format", "json", env=env).output)
    assert {r["dataset"] for r in rows} == {"digits", "stripes"}
    calibrated = [r for r in rows if r["kind"] == "calibrate"]
    assert sorted((r["dataset"], r["model"], r["state"]) for r in calibrated) == [
        ("digits", "mlp", "done"),
        ("stripes", "mlp", "done"),
    ]
    assert all(0 <= r["metrics"]["ece"] < 0.5 for r in calibrated)
    attacks = [r for r in rows if r["kind"] == "attack"]
    assert {r["attack"] for r in attacks} == {"fgsm", "sign_noise"}
    clipped = [r for r in attacks if r["defense"] == "clip_range" and r["dataset"] == "digits"]
    assert len(clipped) == 2
    # digits pixels are mostly 0 (below low = 0.1) or bright (above high = 0.8)
    assert all(0.3 < r["metrics"]["clip_share"] < 1 for r in clipped)
    assert not any("clip_share" in r["metrics"] for r in attacks if r["defense"] == "none")
    # a baseline at eps 0.1 fools far fewer digits than FGSM at the same budget
    digits = {
        r["attack"]: r for r in attacks if r["dataset"] == "digits" and r["defense"] == "none"
    }
    robust = {name: r["metrics"]["robust_accuracy"] for name, r in digits.items()}
    assert robust["sign_noise"] > robust["fgsm"] + 0.1
    table = cli("results", "walk", env=env).output
    assert "calibrate" in table
    assert "ece=" in table
    shown = cli("calibration", "walk", "--format", "json", env=env)
    assert shown.exit_code == 0, shown.output
    assert sorted(row[:2] for row in json.loads(shown.output)) == [
        ["digits", "mlp"],
        ["stripes", "mlp"],
    ]
    again = cli("run", throwaway / "study.yaml", "--executor", "inline", "--no-mlflow", env=env)
    assert "Nothing to run: all 28 cells of study 'walk' are done." in again.output


def test_the_walk_leaves_nothing_registered() -> None:
    """Runs after the walk in file order: its registrations did not outlive it."""
    assert "stripes" not in DATASETS
    assert "sign_noise" not in ATTACKS
    assert "clip_range" not in DEFENSES
    assert "calibrate" not in CELL_KINDS
    assert "calibration" not in main.commands

"""The walk in ``docs/design.md`` ("Where to add things"), done as a newcomer would: its
files written into a temporary package, the package imported (the registration line), its
study run end to end, and what the study stored checked."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.cells import CELL_KINDS
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
        "throwaway/clip.py",
    ]
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    monkeypatch.setattr(DEFENSES, "_entries", dict(DEFENSES._entries))
    monkeypatch.setattr(CELL_KINDS, "_kinds", dict(CELL_KINDS._kinds))
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
    assert "8 cells (1 train + 2 attack + 4 transfer + 1 calibrate)" in ran.output
    assert "8 done, 0 failed" in ran.output
    rows = json.loads(cli("results", "walk", "--format", "json", env=env).output)
    (calibrated,) = [r for r in rows if r["kind"] == "calibrate"]
    assert (calibrated["model"], calibrated["state"]) == ("mlp", "done")
    assert 0 <= calibrated["metrics"]["ece"] < 0.5
    clipped = [r for r in rows if r["kind"] == "attack" and r["defense"] == "clip_range"]
    assert len(clipped) == 1
    # digits pixels are mostly 0 (below low = 0.1) or bright (above high = 0.8)
    assert 0.3 < clipped[0]["metrics"]["clip_share"] < 1
    plain = next(r for r in rows if r["kind"] == "attack" and r["defense"] == "none")
    assert "clip_share" not in plain["metrics"]
    table = cli("results", "walk", env=env).output
    assert "calibrate" in table
    assert "ece=" in table
    again = cli("run", throwaway / "study.yaml", "--executor", "inline", "--no-mlflow", env=env)
    assert "Nothing to run: all 8 cells of study 'walk' are done." in again.output


def test_the_walk_leaves_nothing_registered() -> None:
    """Runs after the walk in file order: its registrations did not outlive it."""
    assert "clip_range" not in DEFENSES
    assert "calibrate" not in CELL_KINDS

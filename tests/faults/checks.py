"""Checks every fault test ends with: one result per cell, no row pointing at nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from storage import ArtifactStore, Database

ROOT = str(Path(__file__).resolve().parents[2])  # this checkout, whatever is installed


def start_run(study: Path, env: dict[str, str], *args: str, quiet: bool = True) -> subprocess.Popen:
    """``advgrid run STUDY [-q] ARGS`` in a new process, output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(study), *(["-q"] * quiet), *args],
        env={**os.environ, **env, "PYTHONPATH": ROOT},
        cwd=study.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def done_count(db_url: str, study: str) -> int:
    """Cells of ``study`` done so far (0 before the study is recorded)."""
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).exists():
        return 0
    db = Database.open(db_url)
    try:
        row = db.find_study(study)
        if row is None:
            return 0
        return sum(states.get("done", 0) for states in db.counts(row.id).values())
    finally:
        db.close()


def wait_for_done(
    db_url: str, study: str, at_least: int, procs: list[subprocess.Popen], timeout: float = 300
) -> int:
    """Poll until ``at_least`` cells are done; fail if every process has exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = done_count(db_url, study)
        if n >= at_least:
            return n
        if all(p.poll() is not None for p in procs):
            out = "\n".join(p.stdout.read() for p in procs if p.stdout)
            raise AssertionError(f"runs ended with {n} cells done:\n{out}")
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} cells done after {timeout} s")


def assert_consistent(db: Database, study: str, store_root: Path) -> dict[str, int]:
    """Every done cell has one ``ok`` attempt, its metrics and artifacts whose files exist;
    no cell that is not done has metrics or artifacts. Returns the states by count."""
    study_id = db.get_study(study).id
    states: dict[str, int] = {}
    store = ArtifactStore(store_root)
    for cell in db.cells(study_id):
        states[cell.state] = states.get(cell.state, 0) + 1
        outcomes = [a.outcome for a in db.attempts(cell.id)]
        # --retry-failed resets the attempt budget, not the history
        assert len(outcomes) >= cell.attempts, (cell.key, outcomes)
        if cell.state == "done":
            assert outcomes.count("ok") == 1, (cell.key, outcomes)
            assert outcomes[-1] == "ok", (cell.key, outcomes)
            assert cell.metrics, cell.key
            if cell.kind != "transfer":
                assert cell.artifacts, cell.key
            for digest in cell.artifacts.values():
                assert store.exists(digest), (cell.key, digest)
                store.read_bytes(digest)  # re-hashed: intact
        else:
            assert "ok" not in outcomes, (cell.key, outcomes)
            assert not cell.metrics, cell.key
            assert not cell.artifacts, cell.key
    for digest in db.artifact_digests():
        assert store.exists(digest), digest
    return states

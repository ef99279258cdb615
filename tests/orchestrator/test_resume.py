"""Resume after the driver is killed with SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import Database
from tests.conftest import data_env, tiny_study


def _wait_for_done(
    db_url: str, study: str, at_least: int, proc: subprocess.Popen, timeout: float = 300
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if Path(db_url.removeprefix("sqlite:///")).exists():
            db = Database.open(db_url)
            row = db.find_study(study)
            if row is not None:
                counts = db.counts(row.id)
                done = sum(s.get("done", 0) for s in counts.values())
                if done >= at_least:
                    return counts
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} cells done after {timeout} s")


@pytest.mark.ray
def test_sigkill_driver_then_resume(ray_cluster: str, tmp_path: Path, cli) -> None:
    root = str(Path(__file__).resolve().parents[2])  # this checkout, whatever is installed
    env = {**os.environ, **data_env(tmp_path), "RAY_ADDRESS": ray_cluster, "PYTHONPATH": root}
    study = tiny_study(tmp_path / "crash.yaml", name="crash")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(study), "-q"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_done(env["ADVGRID_DB"], "crash", at_least=6, proc=proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    db = Database.open(env["ADVGRID_DB"])
    study_id = db.get_study("crash").id
    before = {c.key: c for c in db.cells(study_id)}
    done_before = {k: c for k, c in before.items() if c.state == "done"}
    assert 6 <= len(done_before) < 27, "the kill must land mid-run"

    result = cli("run", study, "-q", "--ray-address", ray_cluster, env=data_env(tmp_path))
    assert result.exit_code == 0, result.output

    after = {c.key: c for c in db.cells(study_id)}
    assert len(after) == 27
    assert all(c.state == "done" for c in after.values())
    for key, cell in done_before.items():  # nothing done was computed again
        assert after[key].attempts == cell.attempts
        assert after[key].finished_at == cell.finished_at
        assert after[key].metrics == cell.metrics
    for cell in after.values():  # one result per cell, every attempt on record
        attempts = db.attempts(cell.id)
        assert len(attempts) == cell.attempts
        assert [a.outcome for a in attempts].count("ok") == 1
        assert attempts[-1].outcome == "ok"
        assert cell.metrics
    interrupted = [c for c in after.values() if c.attempts > 1]
    assert all(db.attempts(c.id)[0].outcome in ("lost_lease", "killed") for c in interrupted)

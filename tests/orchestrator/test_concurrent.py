"""Several drivers on one study and database, while workers and a driver are killed.

Two ``advgrid run`` processes share a study, a database and a Ray cluster; a chaos thread
SIGKILLs Ray workers in the middle of cells, and one driver is SIGKILLed mid-run and started
again. At the end every cell has exactly one result, and the transfer table equals that of a
fault-free run.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from storage import Database
from tests.conftest import Cli, data_env
from tests.faults.checks import assert_consistent, done_count, start_run, wait_for_done
from tests.faults.killer import kill_one_worker

CELLS = 44  # 4 train + 8 attack + 32 transfer


def _study(path: Path, lease_s: float = 10) -> Path:
    models = "".join(
        f"  - name: m{i}\n    arch: mlp\n    params: {{hidden: [{16 * (i + 1)}]}}\n"
        f"    train: {{epochs: 6, lr: 0.01, seed: {i}}}\n"
        for i in range(4)
    )
    path.write_text(
        "name: chaos\n"
        "datasets:\n  - name: digits\n    eval_size: 64\n"
        f"models:\n{models}"
        "attacks:\n  - name: fgsm\n    eps: 0.1\n  - name: pgd\n    eps: 0.1\n    steps: 5\n"
        f"execution:\n  batch_size: 32\n  lease_seconds: {lease_s}\n"
    )
    return path


def _transfer_counts(env: dict[str, str]) -> dict[str, dict[str, float]]:
    """Every transfer cell's integer counts, by cell key: what the tables are built from."""
    rows = json.loads(Cli()("results", "chaos", "--format", "json", env=env).output)
    return {
        r["cell_key"]: {k: v for k, v in r["metrics"].items() if k.startswith(("n_", "fooled_"))}
        for r in rows
        if r["kind"] == "transfer"
    }


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    root = tmp_path_factory.mktemp("fault-free")
    env = data_env(root)
    study = _study(root / "chaos.yaml")
    result = Cli()("run", study, "--executor", "inline", "--no-mlflow", "-q", env=env)
    assert result.exit_code == 0, result.output
    counts = _transfer_counts(env)
    assert len(counts) == 32
    return counts


class Chaos(threading.Thread):
    """Kills a random cell worker every ``every`` s while between ``start`` and ``stop``
    cells are done, at most ``limit`` times."""

    def __init__(self, db_url: str, every: float = 1.0, limit: int = 4) -> None:
        super().__init__(daemon=True)
        self.db_url, self.every, self.limit = db_url, every, limit
        self.killed: list[int] = []
        self.stopped = threading.Event()
        self.rng = random.Random(0)

    def run(self) -> None:
        while not self.stopped.wait(self.every) and len(self.killed) < self.limit:
            if 2 <= done_count(self.db_url, "chaos") < CELLS - 4:
                pid = kill_one_worker(self.rng)
                if pid is not None:
                    self.killed.append(pid)


def _ran(output: str) -> int:
    match = re.search(r"ran (\d+) cells in", output)
    assert match, output
    return int(match.group(1))


def _chaos_run(ray_cluster: str, db_url: str, root: Path, fault_free: dict) -> None:
    env = {**data_env(root), "ADVGRID_DB": db_url, "RAY_ADDRESS": ray_cluster}
    study = _study(root / "chaos.yaml")
    args = ("--no-mlflow", "--max-inflight", "3")
    a, b = start_run(study, env, *args, quiet=False), start_run(study, env, *args, quiet=False)
    chaos = Chaos(db_url)
    chaos.start()
    procs = [a, b]
    try:
        wait_for_done(db_url, "chaos", at_least=14, procs=[a, b])
        a.send_signal(signal.SIGKILL)  # one driver dies mid-run ...
        a.wait()
        time.sleep(1)
        a2 = start_run(
            study, env, *args, quiet=False
        )  # ... and its user runs the same command again
        procs.append(a2)
        out_b, _ = b.communicate(timeout=600)
        out_a2, _ = a2.communicate(timeout=600)
    finally:
        chaos.stopped.set()
        for p in procs:
            p.kill()
    assert b.returncode == 0, out_b
    assert a2.returncode == 0, out_a2
    assert chaos.killed, "the chaos thread must have killed at least one worker"
    assert _ran(out_b) > 0, "the drivers split the work"

    db = Database.open(db_url)
    assert assert_consistent(db, "chaos", root / "data" / "store") == {"done": CELLS}
    for cell in db.cells(db.get_study("chaos").id):
        retried = [a.outcome for a in db.attempts(cell.id)][:-1]
        # a cell runs again only when its attempt was interrupted: a killed driver or worker
        assert set(retried) <= {"lost_lease", "killed", "error"}, (cell.key, retried)
    assert _transfer_counts(env) == fault_free


@pytest.mark.ray
@pytest.mark.slow
def test_two_drivers_on_sqlite_under_chaos(ray_cluster: str, tmp_path: Path, fault_free) -> None:
    db_url = f"sqlite:///{tmp_path / 'data' / 'advgrid.db'}"
    _chaos_run(ray_cluster, db_url, tmp_path, fault_free)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.postgres
def test_two_drivers_on_postgres_under_chaos(
    ray_cluster: str, pg_url: str, tmp_path: Path, fault_free
) -> None:
    _chaos_run(ray_cluster, pg_url, tmp_path, fault_free)

"""Cells SIGKILLed on their Ray worker continue from what they saved when they run again
(Ray's retry of the task, or the driver's next attempt), and say so in their attempt's note:
a train cell killed after epoch 2 of 4 ends with the weights of a run never interrupted,
an attack cell killed after 3 of 6 batches with its adversarial set (the same digests: the
same bytes).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from storage import ArtifactStore, Database
from tests.conftest import data_env
from tests.faults.killer import cell_workers

STUDY = """\
name: long
datasets:
  - {name: synthetic, n_samples: 16000, image_size: 16, num_classes: 4, eval_size: 50}
models:
  - name: cnn
    arch: small_cnn
    params: {width: 8, hidden: 32}
    train: {epochs: 4, batch_size: 32, lr: 0.003, seed: 0}
attacks:
  - {name: fgsm, eps: 0.1}
execution:
  checkpoint_every: 1
  max_attempts: 3
"""


def _kill_when_saved(
    env: dict[str, str], study: str, kind: str, field: str, at: int, stop: threading.Event
) -> list[int]:
    """Wait until the study's one ``kind`` cell has saved a state whose pointer says
    ``field >= at`` (``epoch``, ``batches``), then SIGKILL the workers running cells."""
    killed: list[int] = []
    store = ArtifactStore(env["ADVGRID_STORE"])
    deadline = time.monotonic() + 240
    key = None
    while not stop.is_set() and time.monotonic() < deadline:
        if key is None and Path(env["ADVGRID_DB"].removeprefix("sqlite:///")).exists():
            try:
                db = Database.open(env["ADVGRID_DB"])
                key = db.cells(db.get_study(study).id, kind=kind)[0].key
            except Exception:  # the study is not planned yet
                key = None
        pointer = store.partial(key) if key else None
        if pointer is not None and pointer[field] >= at:
            for pid in cell_workers():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return killed
        time.sleep(0.02)
    return killed


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_train_cell_resumes_with_identical_weights(
    ray_cluster: str, tmp_path: Path, cli
) -> None:
    whole_root, cut_root = tmp_path / "whole", tmp_path / "cut"
    for root in (whole_root, cut_root):
        root.mkdir()
        (root / "long.yaml").write_text(STUDY)
    whole_env, cut_env = data_env(whole_root), data_env(cut_root)
    ok = cli("run", whole_root / "long.yaml", "-q", "--no-mlflow", "--ray-address", ray_cluster,
             env=whole_env)  # fmt: skip
    assert ok.exit_code == 0, ok.output

    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.extend(_kill_when_saved(cut_env, "long", "train", "epoch", 2, stop)),
        daemon=True,
    )
    killer.start()
    try:
        run = cli("run", cut_root / "long.yaml", "-q", "--no-mlflow", "--ray-address",
                  ray_cluster, env=cut_env)  # fmt: skip
    finally:
        stop.set()
        killer.join(10)
    assert run.exit_code == 0, run.output
    assert killed, "the worker must have been killed mid-training"

    db = Database.open(cut_env["ADVGRID_DB"])
    (cell,) = db.cells(db.get_study("long").id, kind="train")
    attempts = db.attempts(cell.id)
    # Ray retries a task whose worker died (the same attempt, to the index); either way the
    # attempt that finished is the one that resumed
    assert [a.outcome for a in attempts].count("ok") == 1
    assert attempts[-1].outcome == "ok"
    assert attempts[-1].note is not None
    assert attempts[-1].note.startswith("resumed at epoch 2 of 4 from state ")
    whole_db = Database.open(whole_env["ADVGRID_DB"])
    (whole,) = whole_db.cells(whole_db.get_study("long").id, kind="train")
    assert cell.artifacts["checkpoint"] == whole.artifacts["checkpoint"]  # same bytes
    assert cell.metrics == whole.metrics
    assert whole_db.attempts(whole.id)[0].note is None  # nothing to say when not resumed
    store = ArtifactStore(cut_env["ADVGRID_STORE"])
    assert list(store.iter_partials()) == []  # done: no saved state is left

    shown = cli("attempts", "long", "--format", "json", env=cut_env)
    assert shown.exit_code == 0, shown.output
    rows = json.loads(shown.output)
    assert [r["n"] for r in rows] == [a.n for a in attempts]
    assert rows[-1]["note"].startswith("resumed at epoch 2 of 4")
    table = cli("attempts", "long", cell.key[:8], env=cut_env)
    assert "resumed at epoch 2 of 4" in table.output


ATTACK_STUDY = """\
name: slow_attack
datasets:
  - {name: synthetic, n_samples: 2400, image_size: 16, num_classes: 4, eval_size: 600}
models:
  - name: cnn
    arch: small_cnn
    params: {width: 8, hidden: 32}
    train: {epochs: 1, batch_size: 32, lr: 0.003, seed: 0}
attacks:
  - {name: pgd, eps: 0.1, steps: 150, random_start: true}
execution:
  batch_size: 100
  checkpoint_every: 1
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_attack_cell_resumes_at_its_batch_with_the_same_examples(
    ray_cluster: str, tmp_path: Path, cli
) -> None:
    envs = {}
    for name in ("whole", "cut"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.yaml").write_text(ATTACK_STUDY)
        envs[name] = data_env(tmp_path / name)
    args = ("-q", "--no-mlflow", "--ray-address", ray_cluster)
    ok = cli("run", tmp_path / "whole" / "s.yaml", *args, env=envs["whole"])
    assert ok.exit_code == 0, ok.output
    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=lambda: killed.extend(
            _kill_when_saved(envs["cut"], "slow_attack", "attack", "batches", 3, stop)
        ),
        daemon=True,
    )
    killer.start()
    try:
        run = cli("run", tmp_path / "cut" / "s.yaml", *args, env=envs["cut"])
    finally:
        stop.set()
        killer.join(10)
    assert run.exit_code == 0, run.output
    assert killed, "the worker must have been killed mid-attack"
    cells = {}
    for name, env in envs.items():
        db = Database.open(env["ADVGRID_DB"])
        (cell,) = db.cells(db.get_study("slow_attack").id, kind="attack")
        cells[name] = (cell, db.attempts(cell.id))
    (cut, attempts), (whole, _) = cells["cut"], cells["whole"]
    assert attempts[-1].outcome == "ok"
    assert attempts[-1].note is not None
    assert attempts[-1].note.startswith("resumed at batch 3 of 6 from state ")
    assert cut.artifacts["adversarial"] == whole.artifacts["adversarial"]  # the same bytes
    assert list(ArtifactStore(envs["cut"]["ADVGRID_STORE"]).iter_partials()) == []

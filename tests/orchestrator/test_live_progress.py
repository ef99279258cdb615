"""Live progress: a running cell says how far it is; ``advgrid status`` run by another process
shows its epoch and ETA while it trains, and nothing of it once it is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.views import live
from storage import ArtifactStore
from tasks import progress
from tests.conftest import data_env
from tests.orchestrator.test_resume_in_cell import STUDY


def test_reports_are_throttled_and_give_rate_and_eta(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    got: list[dict] = []
    report = progress.Reporter(got.append, "epoch", 4, start=1.0)
    clock[0] = 101.0
    report(1.5, 100)  # 1 s after the start: too soon
    assert got == []
    clock[0] = 104.0
    report(2.0, 200, loss=0.5)
    (first,) = got
    assert first["unit"] == "epoch"
    assert (first["done"], first["of"], first["loss"]) == (2.0, 4, 0.5)
    assert first["samples_per_s"] == 75.0  # 300 samples in 4 s
    assert first["eta_s"] == 8.0  # one epoch in 4 s (this run's), two to go
    clock[0] = 104.5
    report(2.1, 10, final=True)  # the last report of an epoch is always made
    assert len(got) == 2

    def broken(_: dict) -> None:
        raise OSError("disk full")

    quiet = progress.Reporter(broken, "batch", 3)
    quiet(1, final=True)  # logged and dropped, never raised
    assert quiet.sink is None


def test_a_running_cell_is_described_from_its_report() -> None:
    row = {
        "cell_key": "ab" * 32,
        "kind": "train",
        "what": "cnn",
        "worker": "host:1:x",
        "progress": {"unit": "epoch", "done": 2.5, "of": 4, "loss": 0.4123, "eta_s": 130.0,
                     "samples_per_s": 2600.4, "age_s": 1.2},
    }  # fmt: skip
    assert live.describe(row) == (
        "train cnn (abababababab) on host:1:x: epoch 2.50 of 4, loss 0.412, 2600 samples/s, "
        "ETA 2 min (said 1 s ago)"
    )
    assert live.describe({**row, "progress": None}).endswith(": no progress reported yet")


@pytest.mark.slow
def test_status_from_another_process_shows_the_epoch_and_eta(tmp_path: Path, cli) -> None:
    study = tmp_path / "long.yaml"
    study.write_text(STUDY)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **data_env(tmp_path), "PYTHONPATH": root}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(study), "-q", "--no-mlflow",
         "--executor", "inline"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: dict | None = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if Path(env["ADVGRID_DB"].removeprefix("sqlite:///")).exists():
                shown = cli("status", "long", "--format", "json", env=data_env(tmp_path))
                if shown.exit_code == 0:
                    running = json.loads(shown.output)["running"]
                    if running and running[0]["progress"]:
                        seen = running[0]
                        table = cli("status", "long", env=data_env(tmp_path)).output
                        break
            time.sleep(0.2)
        assert seen is not None, "status never showed the running train cell's progress"
        out = proc.communicate(timeout=240)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    report = seen["progress"]
    assert (seen["kind"], seen["what"], report["unit"], report["of"]) == (
        "train",
        "cnn",
        "epoch",
        4,
    )
    assert 0 < report["done"] <= 4
    assert report["samples_per_s"] > 0
    assert report["eta_s"] is not None
    assert "running train cnn (" in table
    assert "epoch " in table
    assert "of 4" in table
    assert "ETA " in table
    done = json.loads(cli("status", "long", "--format", "json", env=data_env(tmp_path)).output)
    assert done["running"] == []
    store = ArtifactStore(data_env(tmp_path)["ADVGRID_STORE"])
    assert store.progress(seen["cell_key"]) is None  # a done cell's report is removed


def test_a_defense_s_generator_and_autoencoder_report_their_epochs(monkeypatch) -> None:
    """Their loops are reached through their recipes' fit, so the train cell sets the sink
    around them (tasks.progress.reporting); outside one they report nowhere."""
    from tasks import datasets
    from tasks.defenses.generator import GeneratorParams, build_generator, fit_generator
    from tasks.defenses.purify import PurifyParams, build_autoencoder, fit_autoencoder

    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    params = datasets.params_of("digits", {})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    recipe = GeneratorParams(epochs=2, width=8, top_dim=4, levels=2)
    got: list[dict] = []
    with progress.reporting(got.append):
        fit_generator(build_generator(recipe, data), data, split.train[:128], recipe)
    assert got[-1]["done"] == 2
    assert got[-1]["of"] == 2
    assert got[-1]["unit"] == "epoch"
    assert all(r["loss"] > 0 for r in got)
    assert progress.current() is None  # the block restores what was there
    dae_params = PurifyParams(epochs=2)
    seen: list[dict] = []
    with progress.reporting(seen.append):
        x = data.images(split.train[:64])
        dae = build_autoencoder(
            dae_params, input_shape=data.input_shape, mean=data.mean, std=data.std
        )
        fit_autoencoder(dae, x, dae_params)
    assert {r["done"] for r in seen if float(r["done"]).is_integer()} == {1, 2}
    assert seen[-1]["done"] == 2
    assert all(r["samples_per_s"] > 0 for r in seen)

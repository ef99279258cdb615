"""A universal perturbation cell: fit on training samples, evaluated on held-out ones, stored."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from storage import ArtifactStore, Database
from tests.conftest import Cli, data_env

STUDY = """\
name: universal
datasets:
  - name: digits
    eval_size: 128
models:
  - name: cnn
    arch: small_cnn
    params: {width: 8}
    train: {epochs: 15, lr: 0.005, seed: 0}
attacks:
  - name: uap
    eps: 0.3
    fit_size: 300
execution:
  batch_size: 64
"""


def test_uap_cell_fits_on_train_and_stores_its_perturbation(tmp_path: Path) -> None:
    env = data_env(tmp_path)
    study = tmp_path / "universal.yaml"
    study.write_text(STUDY)
    cli = Cli()
    result = cli("run", study, "--executor", "inline", "--no-mlflow", env=env)
    assert result.exit_code == 0, result.output

    db = Database.open(env["ADVGRID_DB"])
    sid = db.get_study("universal").id
    (cell,) = [c for c in db.cells(sid) if c.kind == "attack"]
    assert cell.state == "done"
    assert {"adversarial", "perturbation"} <= set(cell.artifacts)
    store = ArtifactStore(env["ADVGRID_STORE"])
    uni, meta = store.get(cell.artifacts["perturbation"])
    adv, _ = store.get(cell.artifacts["adversarial"])
    assert meta["kind"] == "perturbation"
    v, fit = uni["perturbation"], uni["fit_indices"]
    assert len(fit) == 300
    assert not set(fit.tolist()) & set(adv["indices"].tolist())  # held out from the fit
    assert float(v.abs().max()) <= 0.3 + 1e-6

    # every evaluated sample got the same v (up to the [0, 1] box)
    from tasks import datasets

    data = datasets.load("digits", datasets.params_of("digits", {"eval_size": 128}))
    x = data.x[adv["indices"]]
    assert torch.allclose(adv["x_adv"], (x + v).clamp(0, 1), atol=1e-6)

    metrics = cell.metrics
    assert metrics["robust_accuracy"] < metrics["clean_accuracy"] - 0.2
    assert 0 < metrics["fit_fooling_rate"] <= 1
    assert metrics["fit_passes"] >= 1
    rows = json.loads(cli("results", "universal", "--format", "json", env=env).output)
    (row,) = [r for r in rows if r["kind"] == "attack"]
    assert row["metrics"]["fit_fooling_rate"] == metrics["fit_fooling_rate"]

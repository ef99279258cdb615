"""Models given as checkpoint files: loaded without pickle, keyed by content, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

STUDY = """\
name: files
datasets:
  - name: digits
    eval_size: 32
models:
  - name: trained
    arch: mlp
    params: {{hidden: [32]}}
    train: {{epochs: 5, lr: 0.01}}
  - name: given
    arch: mlp
    params: {{hidden: [{width}]}}
    checkpoint: {path}
attacks:
  - name: fgsm
    eps: 0.1
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> dict[str, Path]:
    """One mlp trained outside advgrid, saved as safetensors and with torch.save."""
    root = tmp_path_factory.mktemp("weights")
    bare = tiny_model((32,), seed=7, epochs=5).bare_state()
    save_file(bare, root / "mlp.safetensors")
    torch.save(bare, root / "mlp.pt")
    return {"safetensors": root / "mlp.safetensors", "pt": root / "mlp.pt"}


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_checkpoint_models_are_attacked_and_targeted(fmt: str, weights, cli, workdir) -> None:
    study = workdir / "s.yaml"
    study.write_text(STUDY.format(width=32, path=weights[fmt]))
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 0, result.output
    assert "7 cells (1 train + 2 attack + 4 transfer)" in result.output
    rows = json.loads(cli("results", "files", "--format", "json").output)
    given = [r for r in rows if r["kind"] == "attack" and r["model"] == "given"]
    assert given[0]["metrics"]["clean_accuracy"] > 0.8
    again = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert "0 new, 0 to run" in again.output  # the imported checkpoint keeps its keys


def test_checkpoint_content_enters_the_key(weights, tmp_path: Path) -> None:
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    a = expand(loader.parse(STUDY.format(width=32, path=weights["pt"]), str(tmp_path / "a.yaml")))
    b = expand(
        loader.parse(STUDY.format(width=32, path=weights["safetensors"]), str(tmp_path / "b.yaml"))
    )
    given = {c.key for c in a.cells if c.spec.get("source") == "given"}
    assert given.isdisjoint(c.key for c in b.cells)  # different file bytes → different keys


def test_checkpoint_of_the_wrong_shape_is_refused(weights, cli, workdir) -> None:
    study = workdir / "s.yaml"
    study.write_text(STUDY.format(width=64, path=weights["safetensors"]))
    result = cli("run", study, "--executor", "inline")
    assert result.exit_code == 1
    assert (
        f"Error: {study}: models[1].checkpoint: mlp.safetensors does not load into mlp "
        "for dataset 'digits'"
    ) in result.output
    assert not (workdir / "data" / "advgrid.db").exists()


def test_missing_checkpoint_file(cli, workdir) -> None:
    study = workdir / "s.yaml"
    study.write_text(STUDY.format(width=32, path="nowhere.safetensors"))
    result = cli("run", study)
    assert result.exit_code == 1
    assert f"line 13: models[1].checkpoint: no such file: {workdir}/nowhere.safetensors" in (
        result.output
    )


def test_a_failed_download_is_named_before_anything_is_written(cli, workdir) -> None:
    page = workdir / "mlp.pt"
    page.write_text("<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title>")
    study = workdir / "s.yaml"
    study.write_text(STUDY.format(width=32, path=page))
    result = cli("run", study, "--executor", "inline")
    assert result.exit_code == 1
    assert (
        f"Error: {study}: models[1].checkpoint: mlp.pt is an HTML page, not a checkpoint: "
        "most likely a failed download"
    ) in result.output
    assert not (workdir / "data" / "advgrid.db").exists()


def test_a_checkpoint_of_another_architecture_names_the_closest(weights, cli, workdir) -> None:
    study = workdir / "s.yaml"
    given = "arch: mlp\n    params: {hidden: [32]}\n    checkpoint"
    text = STUDY.format(width=32, path=weights["pt"])
    study.write_text(text.replace(given, "arch: small_cnn\n    params: {}\n    checkpoint"))
    result = cli("run", study, "--executor", "inline")
    assert result.exit_code == 1
    assert "models[1].checkpoint: mlp.pt does not load into small_cnn for dataset 'digits': " in (
        result.output
    )
    # the names are mlp's; of its shapes only the output bias is that of the default widths
    assert "these keys match mlp best (100% of names and 25% of shapes agree)" in result.output

"""A whole study through the CLI on the in-process executor: results, tables, MLflow, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import Database
from tests.conftest import FinishedStudy, data_env, tiny_study


@pytest.fixture
def finished(tiny_finished: FinishedStudy) -> tuple[Path, dict[str, str], str]:
    """The tiny study, run once per session with MLflow on (shared: read, never changed)."""
    return tiny_finished.root, tiny_finished.env, tiny_finished.output


def test_first_run_prints_a_transfer_table(finished) -> None:
    _, _, output = finished
    assert "27 cells (3 train + 6 attack + 18 transfer), 27 new, 27 to run" in output
    assert "ran 27 cells" in output
    assert "27 done, 0 failed" in output
    assert "source \\ target" in output
    assert "fgsm(eps=0.1, norm=linf) on digits" in output


def test_second_run_runs_nothing_and_says_so(finished, cli) -> None:
    root, env, _ = finished
    result = cli("run", root / "tiny.yaml", "--executor", "inline", env=env)
    assert result.exit_code == 0, result.output
    assert "0 new, 0 to run" in result.output
    assert "Nothing to run: all 27 cells of study 'tiny' are done." in result.output
    db = Database.open(env["ADVGRID_DB"])
    study = db.get_study("tiny")
    assert all(c.attempts == 1 for c in db.cells(study.id))


def test_status_json(finished, cli) -> None:
    _, env, _ = finished
    result = cli("status", "tiny", "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["study"] == "tiny"
    assert doc["cells"] == {"train": {"done": 3}, "attack": {"done": 6}, "transfer": {"done": 18}}


def test_results_json_rows(finished, cli) -> None:
    _, env, _ = finished
    rows = json.loads(cli("results", "tiny", "--format", "json", env=env).output)
    assert len(rows) == 27
    attack = [r for r in rows if r["kind"] == "attack"]
    for r in attack:
        assert {
            "cell_key",
            "kind",
            "state",
            "dataset",
            "model",
            "defense",
            "attack",
            "params",
            "metrics",
        } <= set(r)
        assert r["params"]["norm"] == "linf" or r["attack"] == "fgsm"
        assert "eps" in r["params"]
        m = r["metrics"]
        assert m["robust_accuracy"] < m["clean_accuracy"]
        assert m["linf_mean"] <= r["params"]["eps"] + 1e-6
    trained = [r for r in rows if r["kind"] == "train"]
    assert all(r["metrics"]["eval_accuracy"] > 0.85 for r in trained)
    transfer = [r for r in rows if r["kind"] == "transfer"]
    assert {(r["source"], r["target"]) for r in transfer} == {
        (s, t) for s in ("mlp", "cnn", "mlp2") for t in ("mlp", "cnn", "mlp2")
    }


def test_transfer_json_matrix(finished, cli) -> None:
    root, env, _ = finished
    result = cli(
        "transfer", "tiny", "--attack", "pgd", "--eps", "8/255", "--format", "json", env=env
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["attack"] == "pgd"
    assert doc["eps"] == pytest.approx(8 / 255)
    assert doc["sources"] == doc["targets"] == ["cnn", "mlp", "mlp2"]
    for i, row in enumerate(doc["matrix"]):
        assert row[i] == 1.0  # white-box diagonal under the source_success denominator
        assert all(0.0 <= r <= 1.0 for r in row)
    # recompute one off-diagonal entry from the stored artifact and the target model
    _check_entry_against_artifacts(env, doc, 1, 0)


def _check_entry_against_artifacts(env: dict, doc: dict, i: int, j: int) -> None:
    import torch

    from storage import ArtifactStore
    from tasks.cells.worker import load_model

    db = Database.open(env["ADVGRID_DB"])
    cells = db.cells(db.get_study("tiny").id)
    by_key = {c.key: c for c in cells}
    src, tgt = doc["sources"][i], doc["targets"][j]
    cell = next(
        c
        for c in cells
        if c.kind == "transfer"
        and json.loads(c.spec_json)["source"] == src
        and json.loads(c.spec_json)["target"] == tgt
        and json.loads(c.spec_json)["attack"]["name"] == "pgd"
    )
    attack_key, train_key = sorted(cell.depends_on, key=lambda k: by_key[k].kind)
    store = ArtifactStore(env["ADVGRID_STORE"])
    adv, _ = store.get(by_key[attack_key].artifacts["adversarial"])
    payload = {"inputs": {"checkpoint": by_key[train_key].artifacts["checkpoint"]}}
    model = load_model(payload, "checkpoint", store, torch.device("cpu"))
    with torch.inference_mode():
        fooled = model(adv["x_adv"]).argmax(1) != adv["labels"]
    mask = adv["success"].bool()
    assert doc["n"][i][j] == int(mask.sum())
    assert doc["matrix"][i][j] == pytest.approx(float(fooled[mask].float().mean()))


def test_mlflow_has_one_child_run_per_done_cell(finished) -> None:
    import mlflow

    _, env, _ = finished
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("advgrid/tiny")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`advgrid.role` = 'cell'")
    db = Database.open(env["ADVGRID_DB"])
    cells = db.cells(db.get_study("tiny").id, state="done")
    assert len(runs) == len(cells) == 27
    assert set(runs["tags.advgrid.cell_key"]) == {c.key for c in cells}
    by_run = {c.mlflow_run_id: c for c in cells}
    for _, run in runs.iterrows():
        cell = by_run[run["run_id"]]
        for name, value in cell.metrics.items():
            assert run[f"metrics.{name}"] == pytest.approx(value)
    parent = runs["tags.mlflow.parentRunId"].unique()
    assert len(parent) == 1


def test_mlflow_has_the_epochs_of_each_train_cell(finished) -> None:
    """Per-epoch step metrics (epoch/train_loss, epoch/train_accuracy, epoch/lr), one step
    per epoch of the recipe, the last epoch's loss the cell's own train_loss."""
    import mlflow
    from mlflow.tracking import MlflowClient

    _, env, _ = finished
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    db = Database.open(env["ADVGRID_DB"])
    for cell in db.cells(db.get_study("tiny").id, kind="train"):
        epochs = json.loads(cell.spec_json)["train"]["epochs"]
        steps = client.get_metric_history(cell.mlflow_run_id, "epoch/train_loss")
        assert [m.step for m in sorted(steps, key=lambda m: m.step)] == list(range(1, epochs + 1))
        last = max(steps, key=lambda m: m.step)
        assert last.value == pytest.approx(cell.metrics["train_loss"])
        rates = client.get_metric_history(cell.mlflow_run_id, "epoch/lr")
        assert {m.value for m in rates} == {0.005}  # the recipe's constant rate
        assert len(client.get_metric_history(cell.mlflow_run_id, "epoch/train_accuracy")) == epochs


def test_outbox_logs_cells_done_without_mlflow(workdir: Path, cli) -> None:
    import mlflow

    study = tiny_study(workdir / "t.yaml", name="outbox")
    text = study.read_text().replace("  - name: pgd\n    eps: 8/255\n    steps: 3\n", "")
    study.write_text(text.replace("eval_size: 64", "eval_size: 16"))
    assert cli("run", study, "--executor", "inline", "--no-mlflow", "-q").exit_code == 0
    result = cli("run", study, "--executor", "inline", "-q")
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(data_env(workdir)["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("advgrid/outbox")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.`advgrid.role` = 'cell'")
    assert len(runs) == 3 + 3 + 9


def test_other_formats(finished, cli) -> None:
    _, env, _ = finished
    md = cli("results", "tiny", "--kind", "attack", "--format", "markdown", env=env).output
    lines = md.strip().splitlines()
    assert lines[0].startswith("| kind | state | dataset")
    assert len(lines) == 2 + 6
    assert all(line.count("|") == 10 for line in lines)
    tex = cli("results", "tiny", "--format", "latex", env=env).output.strip().splitlines()
    assert tex[2] == r"dataset & model & defense & attack & clean (\%) & robust (\%) \\"
    assert len([line for line in tex if line.startswith("digits & ")]) == 6  # attack rows
    csv_out = cli("transfer", "tiny", "--format", "csv", env=env).output.strip().splitlines()
    assert csv_out[0] == (
        "dataset,attack,params,denominator,source,target,rate,n,fooled,ci95_low,ci95_high,cell_key"
    )
    assert len(csv_out) == 1 + 2 * 9
    several = cli("transfer", "tiny", "--format", "json", env=env)
    assert [m["attack"] for m in json.loads(several.output)] == ["fgsm", "pgd"]
    none = cli("transfer", "tiny", "--attack", "cw_l2", env=env)
    assert none.exit_code == 1
    assert "no done transfer cells in study 'tiny' match the filters" in none.output


def test_attempts_says_when_no_cell_was_retried(finished, cli) -> None:
    _, env, _ = finished
    quiet = cli("attempts", "tiny", env=env)
    assert quiet.exit_code == 0, quiet.output
    assert "no cell of study 'tiny' was retried or said anything of its run" in quiet.output
    db = Database.open(env["ADVGRID_DB"])
    key = db.cells(db.get_study("tiny").id, kind="train")[0].key
    one = json.loads(cli("attempts", "tiny", key[:10], "--format", "json", env=env).output)
    assert [(r["cell_key"], r["n"], r["outcome"], r["note"]) for r in one] == [(key, 1, "ok", None)]
    missing = cli("attempts", "tiny", "zzzz", env=env)
    assert missing.exit_code != 0
    assert "no cell of study 'tiny' has a key starting 'zzzz'" in missing.output

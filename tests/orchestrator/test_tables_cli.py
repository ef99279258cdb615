"""``advgrid samples`` (per-sample joins) and ``advgrid curve`` on a finished study."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Cli, FinishedStudy


@pytest.fixture
def finished(tiny_finished: FinishedStudy) -> tuple[Path, dict[str, str]]:
    """The tiny study, run once per session (shared: read, never changed)."""
    return tiny_finished.root, tiny_finished.env


def _fooled_all(cli: Cli, env: dict[str, str]) -> dict[tuple[str, str], int]:
    result = cli(
        "transfer", "tiny", "--attack", "pgd", "--denominator", "all", "--format", "json", env=env
    )
    doc = json.loads(result.output)
    return {
        (s, t): doc["fooled"][i][j]
        for i, s in enumerate(doc["sources"])
        for j, t in enumerate(doc["targets"])
    }


def test_join_agrees_with_the_transfer_counts(finished, cli: Cli) -> None:
    _, env = finished
    result = cli("samples", "tiny", "--attack", "pgd", "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    joins = json.loads(result.output)
    assert sorted(j["source"] for j in joins) == ["cnn", "mlp", "mlp2"]
    fooled = _fooled_all(cli, env)
    for j in joins:
        assert j["targets"] == ["cnn", "mlp", "mlp2"]
        assert sum(j["histogram"]) == j["n"] == len(j["samples"])
        for t in j["targets"]:  # each target's column sums to its cell's fooled count
            assert sum(t in s["fooled"] for s in j["samples"]) == fooled[(j["source"], t)]
        every = [s["index"] for s in j["samples"] if len(s["fooled"]) == 3]
        assert j["fool_all"] == every
        assert j["histogram"][3] == len(every)
    # PGD fools its own source on most examples, and some examples fool every model
    assert any(j["histogram"][3] > 0 for j in joins)


def test_csv_rows_and_target_subset(finished, cli: Cli) -> None:
    _, env = finished
    result = cli(
        "samples", "tiny", "--attack", "fgsm", "--target", "mlp", "--format", "csv", env=env
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 3 * 64  # three sources × the 64-sample evaluation slice
    assert {r["n_targets"] for r in rows} == {"1"}
    assert all(r["fooled"] in ("", "mlp") for r in rows)
    assert {r["n_fooled"] for r in rows} <= {"0", "1"}


def test_grid_of_examples_that_fool_every_target(finished, cli: Cli, tmp_path: Path) -> None:
    _, env = finished
    out = tmp_path / "fool-all.png"
    result = cli("samples", "tiny", "--attack", "pgd", "--grid", out, env=env)
    assert result.exit_code == 0, result.output
    assert "How many targets each adversarial example fools" in result.output
    assert f"wrote {out}" in result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_cells_without_predictions_are_named_and_left_out(
    tiny_finished: FinishedStudy, cli: Cli, tmp_path: Path
) -> None:
    env = tiny_finished.copy(tmp_path).env  # this test deletes index rows
    # a transfer cell recorded before per-sample predictions were kept
    engine = create_engine(env["ADVGRID_DB"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM cell_artifacts WHERE role = 'predictions' AND cell_id = ("
                "SELECT id FROM cells WHERE kind = 'transfer' "
                "AND json_extract(spec_json, '$.attack.name') = 'fgsm' "
                "AND json_extract(spec_json, '$.source') = 'cnn' "
                "AND json_extract(spec_json, '$.target') = 'mlp2')"
            )
        )
    engine.dispose()
    result = cli("samples", "tiny", "--attack", "fgsm", "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    assert "note: mlp2: transfer cells recorded without per-sample predictions" in result.output
    joins = {j["source"]: j for j in json.loads(result.output[result.output.index("[") :])}
    assert joins["cnn"]["targets"] == ["cnn", "mlp"]
    assert joins["cnn"]["missing_targets"] == ["mlp2"]
    assert joins["mlp"]["targets"] == ["cnn", "mlp", "mlp2"]


def test_no_match_is_an_error(finished, cli: Cli) -> None:
    _, env = finished
    result = cli("samples", "tiny", "--attack", "cw_l2", env=env)
    assert result.exit_code == 1
    assert "Error: no done transfer cells in study 'tiny' match the filters" in result.output


def test_curve_json_and_plot(finished, cli: Cli, tmp_path: Path) -> None:
    _, env = finished
    result = cli("curve", "tiny", "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert sorted((c["model"], c["attack"]) for c in found) == [
        (m, a) for m in ("cnn", "mlp", "mlp2") for a in ("fgsm", "pgd")
    ]
    rows = json.loads(
        cli("results", "tiny", "--kind", "attack", "--format", "json", env=env).output
    )
    for c in found:
        (row,) = [r for r in rows if (r["model"], r["attack"]) == (c["model"], c["attack"])]
        clean, robust = c["points"]  # eps = 0 is the clean accuracy, then the attack's eps
        assert (clean["x"], clean["mean"]) == (0.0, row["metrics"]["clean_accuracy"])
        assert robust["x"] == pytest.approx(row["params"]["eps"])
        assert robust["mean"] == row["metrics"]["robust_accuracy"]
        assert robust["seeds"] == 1
    plot = tmp_path / "curves.svg"
    drawn = cli("curve", "tiny", "--attack", "pgd", "--plot", plot, env=env)
    assert drawn.exit_code == 0, drawn.output
    assert "Robust accuracy (%) against eps" in drawn.output
    assert plot.read_text().lstrip().startswith("<?xml")


def test_curve_needs_a_varied_axis(finished, cli: Cli) -> None:
    _, env = finished
    result = cli("curve", "tiny", "--x", "steps", env=env)
    assert result.exit_code == 1
    assert "Error: no done attack cells in study 'tiny' vary steps under these filters" in (
        result.output
    )

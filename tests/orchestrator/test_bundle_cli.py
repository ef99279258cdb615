"""``advgrid export`` / ``advgrid import``: a study's results carried to another lab."""

from __future__ import annotations

from pathlib import Path

from storage import Database
from tests.conftest import FinishedStudy, data_env


def test_results_move_to_a_fresh_lab_and_nothing_is_recomputed(
    tiny_finished: FinishedStudy, tmp_path: Path, cli
) -> None:
    here, there = tiny_finished.env, data_env(tmp_path / "there")
    study = tiny_finished.study
    table = cli("transfer", "tiny", env=here)
    assert table.exit_code == 0, table.output
    bundle = tmp_path / "tiny.tar.gz"

    exported = cli("export", "tiny", "-o", bundle, env=here)
    assert exported.exit_code == 0, exported.output
    assert f"exported study 'tiny' to {bundle}: 27 done cells, 27 artifacts" in exported.output

    imported = cli("import", bundle, env=there)
    assert imported.exit_code == 0, imported.output
    assert imported.output.strip() == (
        f"imported {bundle} into study 'tiny' (created): cells 27 inserted, 0 updated, "
        "0 skipped (done here already); artifacts 27 copied, 0 already present"
    )
    assert cli("transfer", "tiny", env=there).output == table.output
    assert cli("artifacts", "verify", env=there).exit_code == 0

    # the imported cells are in no MLflow yet: this run computes nothing and logs them
    rerun = cli("run", study, "--executor", "inline", env=there)
    assert rerun.exit_code == 0, rerun.output
    assert "0 new, 0 to run" in rerun.output
    assert "Nothing to run" in rerun.output
    assert Database.open(there["ADVGRID_DB"]).unlogged_done(1) == []

    again = cli("import", bundle, env=there)
    assert again.exit_code == 0, again.output
    assert "cells 0 inserted, 0 updated, 27 skipped" in again.output
    assert "artifacts 0 copied, 27 already present" in again.output


def test_bundle_errors_are_one_line_and_exit_1(tmp_path: Path, cli) -> None:
    env = data_env(tmp_path)
    garbage = tmp_path / "junk.tar.gz"
    garbage.write_bytes(b"not an archive")

    result = cli("import", garbage, env=env)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {garbage}: cannot read the archive: ")

    missing = cli("export", "nope", "-o", tmp_path / "b", env=env)
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: no study named 'nope' in sqlite:///")
    assert not (tmp_path / "b").exists()

    usage = cli("export", "nope", env=env)
    assert usage.exit_code == 2
    assert "Missing option '-o' / '--output'" in usage.output

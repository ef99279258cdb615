"""CLI commands: exact error lines, exit codes and machine-readable output."""

from __future__ import annotations

import json
from pathlib import Path

from storage.migrate import head_revision
from tests.conftest import tiny_study


def test_list_attacks_shows_summaries(cli) -> None:
    result = cli("list", "attacks", "--format", "json")
    assert result.exit_code == 0
    entries = {e["name"]: e for e in json.loads(result.output)}
    assert {"fgsm", "pgd"} <= set(entries)
    assert entries["pgd"]["summary"].startswith("Projected gradient descent")
    table = cli("list", "attacks").output
    assert "fgsm" in table
    assert "Fast gradient sign method" in table


ISSUE_ATTACKS = {
    "fgsm", "bim", "illc", "pgd", "mim", "apgd_ce", "apgd_dlr", "apgd_t", "autoattack",
    "cw_l2", "deepfool", "lbfgs", "ead", "jsma", "one_pixel", "square", "spsa", "uap", "noise",
}  # fmt: skip


def test_list_attacks_shows_the_whole_library_with_readable_defaults(cli) -> None:
    entries = {e["name"]: e for e in json.loads(cli("list", "attacks", "--format", "json").output)}
    assert set(entries) >= ISSUE_ATTACKS
    assert all(len(e["summary"]) > 20 for e in entries.values())
    table = cli("list", "attacks").output
    for name in ISSUE_ATTACKS:
        assert f" {name} " in table
    assert "PydanticUndefined" not in table
    assert "eps=8/255" in table  # the common default, as a study file writes it
    assert "eps=[]" in table  # minimum-norm attacks: budgets, none by default
    # list defaults are escaped, so rich does not swallow "[...]" as markup (where the
    # table wraps the list depends on its widest names, so only its opening is checked)
    assert "attacks=[apgd_ce," in table


def test_list_rejects_unknown_kind(cli) -> None:
    result = cli("list", "attackz")
    assert result.exit_code == 2
    assert "Invalid value for '{attacks|datasets|defenses|models}'" in result.output


def test_plan_writes_nothing(cli, workdir: Path) -> None:
    study = tiny_study(workdir / "s.yaml")
    result = cli("plan", study, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc == {
        "study": "tiny",
        "cells": [
            {"kind": "train", "planned": 3, "done": 0, "to_run": 3},
            {"kind": "attack", "planned": 6, "done": 0, "to_run": 6},
            {"kind": "transfer", "planned": 18, "done": 0, "to_run": 18},
        ],
    }
    assert not (workdir / "data").exists()
    assert cli("run", study, "--dry-run").exit_code == 0
    assert not (workdir / "data").exists()


def test_db_upgrade_and_info(cli, workdir: Path) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 0
    assert result.output.strip() == f"database at revision {head_revision()} (was empty)"
    info = json.loads(cli("db", "info").output)
    assert info["revision"] == head_revision()
    assert info["dialect"] == "sqlite"


def test_unknown_study_names_the_known_ones(cli, workdir: Path) -> None:
    cli("db", "upgrade")
    result = cli("status", "nope")
    assert result.exit_code == 1
    assert result.output.startswith("Error: no study named 'nope' in sqlite:///")
    assert result.output.rstrip().endswith("known studies: none")


def test_missing_study_file(cli, workdir: Path) -> None:
    result = cli("run", "missing.yaml")
    assert result.exit_code == 2
    assert "File 'missing.yaml' does not exist" in result.output


def test_failing_cells_are_recorded_and_the_run_exits_1(cli, workdir: Path) -> None:
    study = tiny_study(workdir / "s.yaml", name="broken")
    text = study.read_text().replace(
        "    steps: 3\n", "    steps: 3\n    targeted: true\n    target: 50\n"
    )  # no class 50 in digits: fails at run time
    study.write_text(text)
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 1
    assert "blocked by failed dependencies" in result.output
    doc = json.loads(cli("status", "broken", "--format", "json").output)
    assert doc["cells"]["attack"] == {"done": 3, "quarantined": 3}
    assert doc["cells"]["transfer"] == {"done": 9, "pending": 9}
    failure = doc["failures"][0]
    # bad input fails every attempt alike: quarantined at the first, not retried
    assert failure["attempts"] == 1
    assert failure["error"].startswith("this error recurs on every attempt (bad input")
    assert "Traceback" in failure["error"]
    assert "target class 50 is outside 0..9" in failure["error"]
    table = cli("status", "broken").output
    assert "quarantined attack" in table
    assert "target class 50 is outside 0..9" in table

"""A database password never leaves the process: not in output, logs, rows or MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage import Database, mask_secrets
from tests.conftest import data_env, tiny_study
from tests.faults.checks import ROOT

SECRET = "hunter2-Secret"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://lab:pw@db/x", "postgresql://lab:***@db/x"),
        (
            "db: 'postgresql+psycopg://lab:p%40w@db:5432/x'",
            "db: 'postgresql+psycopg://lab:***@db:5432/x'",
        ),
        ("http://u:p@mlflow:5000 then more", "http://u:***@mlflow:5000 then more"),
        (
            "postgresql://db/x?sslmode=require&password=pw\nnext",
            "postgresql://db/x?sslmode=require&password=***\nnext",
        ),
        ("https://host/a:b@c", "https://host/a:b@c"),  # a path, not user info
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_mask_secrets(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.postgres
def test_a_password_in_the_study_file_is_never_shown_stored_or_logged(
    pg_url: str, tmp_path: Path
) -> None:
    url = make_url(pg_url).set(password=SECRET).render_as_string(hide_password=False)
    study = tiny_study(tmp_path / "s.yaml", name="secret")
    study.write_text(study.read_text() + f"storage:\n  db: '{url}'\n")
    env = {k: v for k, v in data_env(tmp_path).items() if k != "ADVGRID_DB"}
    outputs = []
    for args in (
        ["-vv", "run", str(study), "--executor", "inline"],
        ["status", str(study)],
        ["status", str(study), "--format", "json"],
        ["db", "info", "--db", url],
        ["results", str(study), "--format", "json"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(proc.stdout + proc.stderr)
    assert "DEBUG" in outputs[0]  # the debug log was on
    for out in outputs:
        assert SECRET not in out
    assert ":***@" in outputs[3]

    db = Database.open(pg_url)
    row = db.get_study("secret")
    assert SECRET not in row.spec_yaml
    assert ":***@" in row.spec_yaml
    mlflow_files = [p for p in tmp_path.rglob("*") if p.is_file() and p != study]
    assert mlflow_files
    for path in mlflow_files:  # the MLflow store, its artifacts and everything else written
        assert SECRET.encode() not in path.read_bytes(), path

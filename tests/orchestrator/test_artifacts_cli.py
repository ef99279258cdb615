"""``advgrid artifacts verify``: corrupted and missing artifacts are found, by hash."""

from __future__ import annotations

import json
from pathlib import Path

from storage import ArtifactStore, Database
from tests.conftest import data_env, tiny_study


def test_verify_finds_corrupted_and_missing_artifacts(tmp_path: Path, cli) -> None:
    env = data_env(tmp_path)
    study = tiny_study(tmp_path / "tiny.yaml")
    assert cli("run", study, "--executor", "inline", "--no-mlflow", env=env).exit_code == 0

    clean = cli("artifacts", "verify", env=env)
    assert clean.exit_code == 0, clean.output
    assert "9 indexed artifacts present" in clean.output  # 3 checkpoints + 6 adversarial sets

    store = ArtifactStore(env["ADVGRID_STORE"])
    digests = Database.open(env["ADVGRID_DB"]).artifact_digests()
    corrupt, missing = digests[0], digests[1]
    path = store.path(corrupt)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the tensor data
    path.write_bytes(bytes(blob))
    store.path(missing).unlink()

    result = cli("artifacts", "verify", "--format", "json", env=env)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["indexed"] == 9
    problems = {p["digest"]: p["problem"] for p in report["problems"]}
    assert set(problems) == {corrupt, missing}
    assert "hash" in problems[corrupt]
    assert "missing" in problems[missing]
    table = cli("artifacts", "verify", env=env)
    assert table.exit_code == 1
    assert "2 of the artifacts failed verification" in table.output

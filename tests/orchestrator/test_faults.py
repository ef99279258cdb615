"""Faults a run survives: a dropped database, an unwritable or full store, corrupt files.

Every test ends with the same check (:func:`tests.faults.checks.assert_consistent`): each
done cell has exactly one ``ok`` attempt, its metrics and artifacts whose files exist and
hash to their names; nothing else has a result.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage import ArtifactStore, Database
from tests.conftest import data_env, tiny_study
from tests.faults.checks import assert_consistent, start_run, wait_for_done
from tests.faults.proxy import TcpProxy

SECRET = "pr0xy-s3cret"


def _proxied(pg_url: str, proxy: TcpProxy) -> str:
    """``pg_url`` through the proxy, with a password (the server trusts and ignores it)."""
    url = make_url(pg_url).set(host="127.0.0.1", port=proxy.port, password=SECRET)
    return url.render_as_string(hide_password=False)


def _study(path: Path, name: str, retry_s: float) -> Path:
    study = tiny_study(path, name=name)
    study.write_text(study.read_text() + f"  db_retry_seconds: {retry_s}\n")
    return study


@pytest.mark.postgres
def test_a_dropped_database_connection_is_retried_and_the_run_finishes(
    pg_url: str, tmp_path: Path
) -> None:
    study = _study(tmp_path / "drop.yaml", "drop", retry_s=120)
    target = make_url(pg_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        env = {**data_env(tmp_path), "ADVGRID_DB": _proxied(pg_url, proxy)}
        proc = start_run(study, env, "--executor", "inline", "--no-mlflow")
        try:
            wait_for_done(pg_url, "drop", at_least=4, procs=[proc])
            proxy.cut()
            time.sleep(4)
            proxy.restore()
            out, _ = proc.communicate(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "database unreachable while" in out
    assert "retrying" in out
    assert SECRET not in out
    states = assert_consistent(Database.open(pg_url), "drop", tmp_path / "data" / "store")
    assert states == {"done": 27}


@pytest.mark.postgres
def test_a_database_that_stays_away_stops_the_run_cleanly(pg_url: str, tmp_path: Path) -> None:
    study = _study(tmp_path / "gone.yaml", "gone", retry_s=3)
    target = make_url(pg_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        env = {**data_env(tmp_path), "ADVGRID_DB": _proxied(pg_url, proxy)}
        proc = start_run(study, env, "--executor", "inline", "--no-mlflow")
        try:
            wait_for_done(pg_url, "gone", at_least=4, procs=[proc])
            proxy.cut()
            out, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 1, out
    assert "did not come back within 3 s (execution.db_retry_seconds)" in out
    assert "Run the same command again to resume" in out
    assert "Traceback" not in out
    assert SECRET not in out
    assert ":***@127.0.0.1" in out
    db = Database.open(pg_url)
    states = assert_consistent(db, "gone", tmp_path / "data" / "store")
    assert 4 <= states["done"] < 27
    # the next run (database back) resumes and finishes
    again = start_run(study, {**data_env(tmp_path), "ADVGRID_DB": pg_url}, "--executor", "inline")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert assert_consistent(db, "gone", tmp_path / "data" / "store") == {"done": 27}


def test_an_unwritable_store_fails_cells_clearly_and_indexes_nothing(cli, workdir: Path) -> None:
    store = workdir / "data" / "store"
    store.mkdir(parents=True)
    (store / "objects").write_text("not a folder")  # every write under objects/ fails
    study = tiny_study(workdir / "s.yaml", name="nostore")
    result = cli("run", study, "--executor", "inline", "--no-mlflow")
    assert result.exit_code == 1
    doc = json.loads(cli("status", "nostore", "--format", "json").output)
    assert doc["cells"]["train"] == {"quarantined": 3}
    assert "cannot write artifact" in doc["failures"][0]["error"]
    assert doc["failures"][0]["attempts"] == 3  # a store may come back: retried, unlike bad input
    assert str(store) in doc["failures"][0]["error"]
    db = Database.open(data_env(workdir)["ADVGRID_DB"])
    assert db.artifact_digests() == []
    assert_consistent(db, "nostore", store)

    (store / "objects").unlink()  # fixed: the failed cells run again on request
    result = cli("run", study, "--executor", "inline", "--no-mlflow", "--retry-failed")
    assert result.exit_code == 0, result.output
    assert assert_consistent(db, "nostore", store) == {"done": 27}


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 96 KiB tmpfs: room for about one model checkpoint of the tiny study."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({proc.stderr.strip()}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_store_fails_cells_clearly(cli, workdir: Path, small_fs: Path) -> None:
    study = tiny_study(workdir / "s.yaml", name="full")
    env = {**data_env(workdir), "ADVGRID_STORE": str(small_fs)}
    result = cli("run", study, "--executor", "inline", "--no-mlflow", env=env)
    assert result.exit_code == 1
    doc = json.loads(cli("status", "full", "--format", "json", env=env).output)
    errors = [f["error"] for f in doc["failures"]]
    assert any("No space left on device" in e for e in errors), errors
    assert not list(small_fs.rglob("*.tmp*")), "a failed write leaves no temporary file"
    assert_consistent(Database.open(env["ADVGRID_DB"]), "full", small_fs)


def test_a_corrupted_artifact_fails_the_cells_that_read_it(cli, workdir: Path) -> None:
    study = tiny_study(workdir / "s.yaml", name="rot")
    assert cli("run", study, "--executor", "inline", "--no-mlflow", "-q").exit_code == 0
    db = Database.open(data_env(workdir)["ADVGRID_DB"])
    study_id = db.get_study("rot").id
    attack = next(c for c in db.cells(study_id, kind="attack"))
    digest = attack.artifacts["adversarial"]
    store = ArtifactStore(workdir / "data" / "store")
    path = store.path(digest)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(blob))

    verify = cli("artifacts", "verify", "--format", "json")
    assert verify.exit_code == 1
    assert digest in verify.output

    # a new target model reads every stored adversarial set: the corrupt one fails
    text = study.read_text().replace(
        "attacks:",
        "  - name: mlp3\n    arch: mlp\n    params: {hidden: [16]}\n"
        "    train: {epochs: 5, lr: 0.005, seed: 2}\nattacks:",
    )
    study.write_text(text)
    proc = start_run(study, data_env(workdir), "--executor", "inline", "--no-mlflow")
    out, _ = proc.communicate(timeout=300)  # a new process: nothing cached from the first run
    assert proc.returncode == 1, out
    doc = json.loads(cli("status", "rot", "--format", "json").output)
    [failure] = doc["failures"]  # only the transfer of the corrupt set onto the new model
    assert failure["kind"] == "transfer"
    assert failure["state"] == "quarantined"
    assert digest[2:] in failure["error"]
    assert "is corrupt" in failure["error"]

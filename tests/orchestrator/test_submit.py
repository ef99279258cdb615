"""``advgrid submit``: checks before anything is sent, and a real job on a real head."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import AdvgridError
from orchestrator.run.submit import check_no_secrets, entrypoint, working_dir
from orchestrator.study.loader import load
from storage import Database
from tests.conftest import data_env, tiny_study
from tests.faults.checks import ROOT, assert_consistent
from tests.faults.ray_nodes import ray_cluster


def test_entrypoint_forwards_only_what_is_given(tmp_path: Path) -> None:
    study = load(tiny_study(tmp_path / "my study.yaml"))
    command = entrypoint(study, {"--db": "sqlite:////d/a.db", "--store": None}, ("-q",))
    assert command == ("advgrid run 'my study.yaml' --ray-address auto --db sqlite:////d/a.db -q")


def test_passwords_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    study = load(tiny_study(tmp_path / "s.yaml"))
    with pytest.raises(AdvgridError, match=r"--db postgresql://lab:\*\*\*@h/x: a password"):
        check_no_secrets(study, {"--db": "postgresql://lab:pw@h/x"})
    path = tmp_path / "t.yaml"
    path.write_text((tmp_path / "s.yaml").read_text() + "storage:\n  db: postgresql://lab:pw@h/x\n")
    with pytest.raises(AdvgridError, match="the study file holds a URL with a password"):
        check_no_secrets(load(path), {})


def test_the_working_dir_holds_the_study_and_its_checkpoints(tmp_path: Path, tiny_model) -> None:
    from safetensors.torch import save_file

    (tmp_path / "ckpt").mkdir()
    bare = tiny_model((8,)).bare_state()
    save_file(bare, tmp_path / "ckpt" / "m.safetensors")
    text = (
        tiny_study(tmp_path / "s.yaml")
        .read_text()
        .replace(
            "models:\n",
            "models:\n  - name: given\n    arch: mlp\n    params: {hidden: [8]}\n"
            "    checkpoint: ckpt/m.safetensors\n",
            1,
        )
    )
    (tmp_path / "s.yaml").write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    working_dir(load(tmp_path / "s.yaml"), out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "ckpt/m.safetensors",
        "s.yaml",
    ]
    given = (tmp_path / "ckpt" / "m.safetensors").read_bytes()
    assert (out / "ckpt" / "m.safetensors").read_bytes() == given


def _submit(head_env: dict[str, str], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", *map(str, args)],
        env={**head_env, "PYTHONPATH": ROOT},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_a_study_runs_as_a_job_on_the_head(tmp_path: Path) -> None:
    study = tiny_study(tmp_path / "job.yaml", name="job")
    env = data_env(tmp_path)
    with ray_cluster("--num-cpus=2", "--include-dashboard=true") as cluster:
        client = {**os.environ, **cluster.driver_env()}
        client.pop("RAY_ADDRESS")
        no_token = {k: v for k, v in client.items() if k != "RAY_AUTH_MODE"}
        refused = _submit(no_token, study, "--address", cluster.dashboard, cwd=tmp_path)
        assert refused.returncode == 1
        assert "RAY_AUTH_MODE=token" in refused.stderr

        done = _submit(
            client,
            study,
            "--address",
            cluster.dashboard,
            "--db",
            env["ADVGRID_DB"],
            "--store",
            env["ADVGRID_STORE"],
            "--",
            "--no-mlflow",
            cwd=tmp_path,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted job advgrid-job-" in done.stderr
    assert "27 done, 0 failed" in done.stdout  # the job's own log, streamed
    assert "SUCCEEDED" in done.stderr
    db = Database.open(env["ADVGRID_DB"])
    assert assert_consistent(db, "job", Path(env["ADVGRID_STORE"])) == {"done": 27}
    assert os.path.exists(env["ADVGRID_DB"].removeprefix("sqlite:///"))

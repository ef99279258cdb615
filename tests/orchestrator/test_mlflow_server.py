"""Logging to an MLflow tracking server over HTTP: the server keeps the artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import data_env, tiny_study
from tests.faults.checks import start_run
from tests.faults.ray_nodes import free_port


@pytest.mark.slow
def test_a_tracking_server_gets_runs_and_artifacts(tmp_path: Path) -> None:
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{server_dir / 'mlflow.db'}",
            "--artifacts-destination",
            str(server_dir / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow server did not start"
                assert server.poll() is None, "the MLflow server exited"
                time.sleep(0.5)
        study = tiny_study(tmp_path / "s.yaml", name="served")
        env = {**data_env(tmp_path), "MLFLOW_TRACKING_URI": uri}
        proc = start_run(study, env, "--executor", "inline", quiet=False)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        assert "View run" not in out

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("advgrid/served")
        assert exp is not None
        assert exp.artifact_location.startswith("mlflow-artifacts:")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        assert len(runs) == 28  # the study's parent run and one per cell
        logged = list((server_dir / "artifacts").rglob("study.yaml"))
        assert len(logged) == 1
        assert not (tmp_path / ".advgrid" / "mlartifacts").exists()
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the server and its web workers
        server.wait()

"""The same study on a real local Ray cluster gives the same numbers as in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, data_env, tiny_study


def _metrics(env: dict[str, str], study: str) -> dict[str, dict[str, float]]:
    rows = json.loads(Cli()("results", study, "--format", "json", env=env).output)
    volatile = {"wall_s", "samples_per_s"}
    return {
        r["cell_key"]: {k: v for k, v in r["metrics"].items() if k not in volatile} for r in rows
    }


@pytest.mark.ray
def test_ray_and_inline_agree(ray_cluster: str, tmp_path: Path) -> None:
    cli = Cli()
    runs = {}
    for executor in ("ray", "inline"):
        root = tmp_path / executor
        root.mkdir()
        env = data_env(root)
        study = tiny_study(root / "s.yaml", name="same")
        result = cli("run", study, "--executor", executor, "--no-mlflow", "-q", env=env)
        assert result.exit_code == 0, result.output
        runs[executor] = _metrics(env, "same")
    assert len(runs["ray"]) == 27
    assert runs["ray"].keys() == runs["inline"].keys()
    for key, metrics in runs["ray"].items():
        assert metrics == pytest.approx(runs["inline"][key], abs=1e-6), key


@pytest.mark.parametrize(
    ("cluster", "needs", "bound"),
    [
        ({"CPU": 2.0}, [], 4),
        ({"CPU": 16.0, "GPU": 8.0}, [{"num_cpus": 1, "num_gpus": 0.25}], 32),  # CPUs bind
        ({"CPU": 64.0, "GPU": 8.0}, [{"num_cpus": 1, "num_gpus": 0.25}], 64),  # GPUs bind
        ({"CPU": 64.0, "GPU": 8.0}, [{"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 2}], 64),
        ({"CPU": 4.0}, [{"num_cpus": 1, "num_gpus": 1}], 2),  # no GPU: waits, at least 2
        ({"CPU": 4.0}, [{"num_cpus": 0.5, "num_gpus": 0}], 16),
    ],
)
def test_inflight_bound_follows_the_cluster_and_the_cells_resources(
    cluster: dict[str, float], needs: list[dict[str, float]], bound: int
) -> None:
    from orchestrator.run.ray_executor import inflight_bound

    assert inflight_bound(cluster, needs) == bound

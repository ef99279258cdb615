"""``advgrid run`` against real multi-node Ray clusters started with ``ray start``.

Each cluster is private (``tests/faults/ray_nodes.py``): its own ports, folder and token,
token authentication on, torn down by killing its processes. A study spreads over two
nodes; loses one of them mid-run and finishes on the other; is refused with a hint when
the driver does not present the token; and packs four ``num_gpus: 0.25`` cells onto one
declared GPU while a ``num_gpus: 1`` cell waits (no real GPU needed: the cells run on the CPU
when CUDA is not available).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.run.ray_executor import _ray_hint
from storage import Database
from tests.conftest import data_env
from tests.faults.checks import ROOT, assert_consistent, done_count, start_run
from tests.faults.ray_nodes import (
    Cluster,
    Node,
    cell_workers_of,
    ray_cluster,
    start_recorded_run,
    task_records,
)

CELLS = 14  # 2 train + 4 attack + 8 transfer


def _study(path: Path, name: str, steps: str = "5") -> Path:
    """Two models attacked by FGSM and 5-step PGD: 14 cells. With ``steps="[a, b]"`` PGD of
    ``a`` and of ``b`` steps replaces both attacks: still 14 cells, but the four attack cells
    last seconds."""
    models = "".join(
        f"  - name: m{i}\n    arch: mlp\n    params: {{hidden: [{128 * (i + 1)}, 128]}}\n"
        f"    train: {{epochs: 4, lr: 0.01, seed: {i}}}\n"
        for i in range(2)
    )
    attacks = (
        "  - name: fgsm\n    eps: 0.1\n  - name: pgd\n    eps: 0.1\n    steps: 5\n"
        if steps == "5"
        else f"  - name: pgd\n    eps: 0.1\n    steps: {steps}\n"
    )
    path.write_text(
        f"name: {name}\n"
        "datasets:\n  - name: digits\n    eval_size: 256\n"
        f"models:\n{models}"
        f"attacks:\n{attacks}"
        "execution:\n  batch_size: 256\n  lease_seconds: 20\n"
    )
    return path


def _env(cluster: Cluster, root: Path, store: str) -> dict[str, str]:
    """Where the run writes (the store as a folder or as a ``file://`` URL) and how it
    reaches the cluster."""
    env = {**data_env(root), **cluster.driver_env()}
    if store == "file-url":
        env["ADVGRID_STORE"] = Path(env["ADVGRID_STORE"]).as_uri()
    return env


def _node_of(worker: str | None) -> str:
    """The node part of a worker name ``host:pid:node``."""
    assert worker is not None
    host_pid_node = worker.split(":")
    assert len(host_pid_node) == 3, worker
    return host_pid_node[2]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[Cluster, Node]]:
    """A head and a second node, one CPU each."""
    with ray_cluster("--num-cpus=1") as cluster:
        yield cluster, cluster.start_node("--num-cpus=1", '--resources={"node2": 1}')


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("store", ["path", "file-url"])
def test_a_study_runs_on_both_nodes(
    two_nodes: tuple[Cluster, Node], tmp_path: Path, store: str
) -> None:
    cluster, node2 = two_nodes
    env = _env(cluster, tmp_path, store)
    proc = start_run(_study(tmp_path / "s.yaml", "nodes"), env, "--no-mlflow")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    db = Database.open(env["ADVGRID_DB"])
    assert assert_consistent(db, "nodes", tmp_path / "data" / "store") == {"done": CELLS}
    nodes = {_node_of(c.worker) for c in db.cells(db.get_study("nodes").id)}
    head = cluster.node_id(cluster.nodes[0])
    assert nodes == {head[:8], cluster.node_id(node2)[:8]}


@pytest.mark.ray
@pytest.mark.slow
def test_a_node_killed_mid_run_costs_only_its_cells(tmp_path: Path) -> None:
    with ray_cluster("--num-cpus=1") as cluster:
        head = cluster.node_id(cluster.nodes[0])
        node2 = cluster.start_node("--num-cpus=1", '--resources={"node2": 1}')
        env = _env(cluster, tmp_path, "path")
        # cells of seconds: long enough that one is still running when its node is killed,
        # also under the load of the whole suite
        study = _study(tmp_path / "s.yaml", "nodes", "[1000, 2000]")
        proc = start_run(study, env, "--no-mlflow")
        try:
            while True:  # until the node dies in the middle of an attack cell
                pid, title = _wait_for_an_attack_on(cluster, node2, proc)
                done_at_kill = done_count(env["ADVGRID_DB"], "nodes")
                if cluster.kill_node(node2, mid_cell=(pid, title)):
                    break
            out, _ = proc.communicate(timeout=300)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, out
        assert 0 < done_at_kill < CELLS, "the kill must land mid-run"

    db = Database.open(env["ADVGRID_DB"])
    assert assert_consistent(db, "nodes", tmp_path / "data" / "store") == {"done": CELLS}
    [interrupted] = [c for c in db.cells(db.get_study("nodes").id) if title.endswith(c.key[:12])]
    # Ray ran it again on the head (a task survives its node: max_retries); the driver saw
    # one attempt, which succeeded
    assert _node_of(interrupted.worker) == head[:8]
    assert [a.outcome for a in db.attempts(interrupted.id)] == ["ok"]


def _wait_for_an_attack_on(cluster: Cluster, node: Node, proc: subprocess.Popen) -> tuple[int, str]:
    """``(pid, title)`` of a worker of ``node`` running an attack cell."""
    raylet = cluster.raylet_pid(node)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        for pid, title in cell_workers_of(raylet).items():
            if title.startswith("advgrid:attack:"):
                return pid, title
        time.sleep(0.05)
    raise AssertionError("no attack cell ran on the second node")


@pytest.mark.ray
@pytest.mark.slow
def test_a_driver_without_the_token_is_told_what_to_set(
    two_nodes: tuple[Cluster, Node], tmp_path: Path
) -> None:
    cluster, _ = two_nodes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {
        **data_env(tmp_path),
        "PYTHONPATH": ROOT,
        # Ray retries a refused connection 20 times, a second apart; the error is the same
        "RAY_gcs_server_port_wait_time_s": "2",
    }
    study = _study(tmp_path / "s.yaml", "refused")
    args = [sys.executable, "-m", "orchestrator", "run", str(study), "--no-mlflow", "-q"]
    args += ["--ray-address", cluster.address]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    first, hint = proc.stderr[proc.stderr.index("Error: ") :].splitlines()[:2]
    assert first.startswith(f"Error: could not connect to Ray at {cluster.address!r}: "), first
    assert hint.startswith(
        "The cluster requires token authentication and RAY_AUTH_MODE is not 'token' here"
    ), hint
    assert "Run with RAY_AUTH_MODE=token and the cluster's token in " in hint
    assert "`ray get-auth-token`" in hint

    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"The cluster refused the token in {wrong} (RAY_AUTH_TOKEN_PATH)" in proc.stderr


GPU_STUDY = """\
name: quarters
datasets:
  - name: digits
    eval_size: 512
models:
  - name: m
    arch: mlp
    params: {hidden: [512, 512]}
    train: {epochs: 3, lr: 0.01, seed: 0}
attacks:
  - name: pgd
    eps: 0.1
    steps: [200, 250, 300, 350]
execution:
  batch_size: 512
  resources:
    attack: {num_gpus: 0.25, num_cpus: 1}
    transfer: {num_gpus: 1, num_cpus: 1}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_four_quarter_gpu_cells_share_one_gpu(tmp_path: Path) -> None:
    """Four attack cells (``num_gpus: 0.25``, of different lengths) run at once on the one
    declared GPU; each transfer cell (``num_gpus: 1``) is submitted as soon as its attack is
    done but starts only once all four have given the GPU back. When cells ran comes from
    the workers' clocks (one host), what they asked Ray for from Ray's task records."""
    with ray_cluster("--num-cpus=8", "--num-gpus=1", "--include-dashboard=true") as cluster:
        study = tmp_path / "quarters.yaml"
        study.write_text(GPU_STUDY)
        env, record = _env(cluster, tmp_path, "path"), tmp_path / "times.jsonl"
        proc = start_recorded_run(study, env, record, "--no-mlflow", "--max-inflight", "8")
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        tasks = _wait_for_tasks(cluster, 9)
    db = Database.open(env["ADVGRID_DB"])
    assert assert_consistent(db, "quarters", tmp_path / "data" / "store") == {"done": 9}
    kinds = {c.id: c.kind for c in db.cells(db.get_study("quarters").id)}
    times = [json.loads(line) for line in record.read_text().splitlines()]
    attacks = [t for t in times if kinds[t["cell_id"]] == "attack"]
    transfers = [t for t in times if kinds[t["cell_id"]] == "transfer"]
    assert len(attacks) == 4, times
    assert len(transfers) == 4, times

    asked = {t["name"].split(":")[1]: t["resources"] for t in tasks}  # the same for a kind
    assert asked == {
        "train": {"CPU": 1.0},
        "attack": {"CPU": 1.0, "GPU": 0.25},
        "transfer": {"CPU": 1.0, "GPU": 1.0},
    }
    # every attack started before any ended: the four held a quarter of the GPU each at once
    assert max(t["started_at"] for t in attacks) < min(t["ended_at"] for t in attacks), times
    # no whole-GPU cell started before every quarter was given back
    assert min(t["started_at"] for t in transfers) >= max(t["ended_at"] for t in attacks), times


def _wait_for_tasks(cluster: Cluster, n: int) -> list[dict]:
    """Ray's records of the cluster's advgrid tasks once ``n`` are finished (task events
    reach the state API about once a second)."""
    deadline = time.monotonic() + 60
    while True:
        tasks = [t for t in task_records(cluster) if t["state"] == "FINISHED"]
        if len(tasks) >= n or time.monotonic() > deadline:
            return tasks
        time.sleep(1)


def test_the_auth_hint_names_where_the_token_is_read_never_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the shape of Ray's error: a bare ConnectionError; the refusal is in what it chains
    try:
        try:
            raise RuntimeError(
                "Failed to connect to GCS. Last connection error: Traceback …\n"
                "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: "
                "Authentication token is missing or incorrect."
            )
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as exc:
        refused = exc
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/lab")
    assert (
        _ray_hint("10.0.0.1:6379", refused)
        .splitlines()[1]
        .startswith(
            "The cluster requires token authentication and RAY_AUTH_MODE is not 'token' here"
        )
    )
    assert "/home/lab/.ray/auth_token (or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)" in _ray_hint(
        "10.0.0.1:6379", refused
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cr3t-token")
    hint = _ray_hint("10.0.0.1:6379", refused)
    assert "The cluster refused the token in the RAY_AUTH_TOKEN environment variable" in hint
    assert "s3cr3t-token" not in hint
    # any other failure to connect is reported as it is
    other = ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")
    assert _ray_hint("10.0.0.1:6379", other) == (
        "could not connect to Ray at '10.0.0.1:6379': "
        "Failed to connect to Ray cluster at 10.0.0.1:6379"
    )

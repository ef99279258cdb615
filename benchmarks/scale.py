"""Driver scale: per-cell scheduling cost, speedup over worker processes, overhead share.

Overhead: the real driver loop (``Driver.prepare`` and ``Driver.run`` on the real SQL index)
over N no-op cells, on SQLite and PostgreSQL. The executors are the real ones with the
remote function swapped: each task returns at once a minimal valid result whose artifact
records name tiny artifacts stored beforehand (one checkpoint shared by every train cell,
one adversarial set per attack cell, so transfer cells group as in a real study). Two study
shapes: ``flat`` (train cells only, no dependencies: one Ray task per cell) and ``grid``
(8 models, every model a source and a target, a grid of PGD budgets: train → attack →
transfer, transfer cells of one adversarial set sent as one task). Peers in the same run: a
bare Ray loop submitting the same number of no-op tasks (same function, same payloads)
with a bounded in-flight window collected by ``ray.wait``, the in-process executor, and
the driver with MLflow logging on.

Speedup: a real 40-cell digits study (4 train, 9 attack, 27 transfer cells; each cell asks
for one CPU) under a fresh ``ray.init(num_cpus=1)`` and then ``num_cpus=2``, alternating;
every run must give the same transfer metrics. Overhead share: from those runs, and from
synthetic cells that sleep (independent cells, so any idle worker time is the scheduler's).

    python benchmarks/scale.py                      # everything, both backends, ~15 minutes
    python benchmarks/scale.py --parts overhead --backends sqlite --cells 500
    python benchmarks/scale.py --quick              # smoke run, SQLite, small N

Writes ``benchmarks/results/scale-cpu.json`` and ``.md`` (``--out`` to change; ``--quick``
writes to a temporary folder unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy

from orchestrator.config import Settings
from orchestrator.run.driver import Driver
from orchestrator.run.executor import Outcome
from orchestrator.run.inline_executor import InlineExecutor
from orchestrator.run.ray_executor import RayExecutor, inflight_bound
from orchestrator.study.loader import parse
from orchestrator.study.plan import Plan, expand
from storage import ArtifactStore, Database

RESULTS = Path(__file__).parent / "results"
PARTS = ("overhead", "speedup", "sleep")
CHOICES = {
    "parts": PARTS,
    "backends": ("sqlite", "postgres"),
    "shapes": ("flat", "grid"),
    "executors": ("inline", "ray"),
}
FULL = {
    "cells": [500, 2000],
    "mlflow_cells": [500],
    "wide": 512,  # 2 × 256 cells of 0.25 GPU on 64 GPUs (orchestrator.run.ray_executor)
    "sleep_s": [0.1, 1.0],
    "sleep_wall": 20.0,
    "repeats": 2,
}
QUICK = {
    "cells": [40],
    "mlflow_cells": [40],
    "wide": 64,
    "sleep_s": [0.2],
    "sleep_wall": 2.0,
    "repeats": 1,
}
GRID_MODELS = 8  # grid shape: 8 models, every one a source and a target


def _sibling(name: str) -> ModuleType:
    """Another benchmark script of this folder, loaded by path (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(name))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STORE_BENCH = _sibling("store.py")  # fresh_database (throwaway PostgreSQL) and check_once
REPORT = _sibling("scale_report.py")  # the markdown summary


# -- studies ---------------------------------------------------------------------------


def _models(n: int) -> str:
    return "".join(
        f"  - {{name: m{i}, arch: mlp, params: {{hidden: [4]}}, train: {{epochs: 1, seed: {i}}}}}\n"
        for i in range(n)
    )


def flat_text(cells: int, name: str) -> str:
    """A study of ``cells`` train cells and nothing else: no cell waits for another."""
    return (
        f"name: {name}\ndatasets:\n  - {{name: digits, eval_size: 64}}\nmodels:\n{_models(cells)}"
        "attacks:\n  - {name: fgsm, eps: 0.1}\nsources: []\ntargets: []\n"
    )


def grid_text(cells: int, name: str) -> str:
    """About ``cells`` cells: 8 models, all sources and targets, ``a`` PGD budgets.

    ``8 + 72·a`` cells (8 train, 8·a attack, 64·a transfer); ``a`` is the nearest to ``cells``.
    """
    m = GRID_MODELS
    a = max(1, round((cells - m) / (m * (1 + m))))
    eps = ", ".join(repr(round(0.3 * (i + 1) / a, 9)) for i in range(a))
    return (
        f"name: {name}\ndatasets:\n  - {{name: digits, eval_size: 64}}\nmodels:\n{_models(m)}"
        f"attacks:\n  - {{name: pgd, steps: 10, eps: [{eps}]}}\n"
    )


REAL_STUDY = """\
name: {name}
datasets:
  - {{name: digits, eval_size: 400}}
models:
  - {{name: m0, arch: small_cnn, params: {{width: 8, hidden: 32}}, train: {{epochs: 12, seed: 0}}}}
  - {{name: m1, arch: small_cnn, params: {{width: 12, hidden: 48}}, train: {{epochs: 12, seed: 1}}}}
  - {{name: m2, arch: small_cnn, params: {{width: 16, hidden: 64}}, train: {{epochs: 12, seed: 2}}}}
  - {{name: m3, arch: mlp, params: {{hidden: [256, 128]}}, train: {{epochs: 30, seed: 3}}}}
attacks:
  - {{name: fgsm, eps: 0.1}}
  - {{name: pgd, eps: [0.05, 0.1], steps: 150}}
sources: [m0, m1, m2]
targets: [m1, m2, m3]
execution: {{batch_size: 100}}
"""


def real_text(name: str) -> str:
    """The 40-cell digits study: 4 train, 3 sources × 3 attacks, × 3 targets."""
    return REAL_STUDY.format(name=name)


def plan_of(text: str) -> Plan:
    return expand(parse(text, "scale.yaml"))


# -- no-op cells -----------------------------------------------------------------------


def tiny_artifacts(plan: Plan, store: ArtifactStore) -> dict[str, Any]:
    """Records of tiny stored artifacts: one checkpoint, one adversarial set per attack cell."""
    import torch

    ckpt = store.put({"w": torch.zeros(1)}, {"kind": "checkpoint", "bench": "scale"})
    attacks = [c.key for c in plan.cells if c.kind == "attack"]
    adversarial = {
        key: dataclasses.asdict(store.put({"x": torch.tensor([i])}, {"kind": "adversarial"}))
        for i, key in enumerate(attacks)
    }
    return {"checkpoint": dataclasses.asdict(ckpt), "adversarial": adversarial}


def noop_functions(records: dict[str, Any], sleep_s: float) -> tuple[Callable, Callable]:
    """``run_cell`` and ``run_cells`` stand-ins: sleep ``sleep_s``, return a valid result.

    Closures, so Ray ships them by value to workers that cannot import this script.
    """

    def run_cell(payload: dict) -> dict:
        start = time.perf_counter()
        if sleep_s:
            time.sleep(sleep_s)
        kind, artifacts = payload["kind"], {}
        if kind == "train":
            artifacts = {"checkpoint": records["checkpoint"]}
        elif kind == "attack":
            artifacts = {"adversarial": records["adversarial"][payload["key"]]}
        return {
            "metrics": {"noop": 1.0},
            "artifacts": artifacts,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "duration_s": time.perf_counter() - start,
        }

    def run_cells(payloads: list[dict]) -> list[tuple[dict | None, str | None]]:
        return [(run_cell(p), None) for p in payloads]

    return run_cell, run_cells


class NoopInline(InlineExecutor):
    """The in-process executor running the no-op instead of ``run_cell``."""

    def __init__(self, cell: Callable) -> None:
        super().__init__()
        self._cell = cell

    def poll(self, timeout: float) -> list[Outcome]:
        if not self._queue:
            return []
        cell_id, payload = self._queue.popleft()
        return [Outcome(cell_id, self._cell(payload), None)]


class NoopRay(RayExecutor):
    """The Ray executor (submit, groups, ``ray.wait`` polling) with the no-op as its task."""

    def __init__(self, cell: Callable, cells: Callable) -> None:
        super().__init__("local")  # reuses the cluster this process initialized
        self._remote = self._ray.remote(cell)
        self._group_remote = self._ray.remote(cells)


# -- one timed driver run --------------------------------------------------------------


class TimedDriver(Driver):
    """The driver, noting when its loop ended: what follows is draining the MLflow queue."""

    loop_end = 0.0

    def _loop(self, *args: Any, **kwargs: Any) -> None:
        super()._loop(*args, **kwargs)
        self.loop_end = time.perf_counter()


@contextlib.contextmanager
def workspace(backend: str, pg_url: str) -> Iterator[Settings]:
    """Fresh index (on ``backend``), artifact store and MLflow store, removed afterwards."""
    with (
        STORE_BENCH.fresh_database(backend, pg_url) as url,
        tempfile.TemporaryDirectory(prefix="advgrid-scale-") as tmp,
    ):
        yield Settings(
            db_url=url,
            store_root=f"{tmp}/store",
            mlflow_uri=f"sqlite:///{tmp}/mlflow.db",
            mlflow_artifacts=f"{tmp}/mlartifacts",
        )


def _warm_mlflow(uri: str) -> None:
    """Create the MLflow store (its migrations) before timing: a one-time cost per store."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments()


def _timed(fn: Callable, tally: list[float]) -> Callable:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        tally[0] += time.perf_counter() - start
        tally[1] += 1
        return out

    return timed


def time_calls(db: Database, names: tuple[str, ...]) -> dict[str, list[float]]:
    """Wrap methods of ``db`` (on the instance) to add up ``[seconds, calls]`` of each."""
    spent = {name: [0.0, 0.0] for name in names}
    for name in names:
        setattr(db, name, _timed(getattr(db, name), spent[name]))
    return spent


def drive(
    plan: Plan, settings: Settings, executor: Any, *, mlflow: bool, max_inflight: int | None = None
) -> dict[str, Any]:
    """Prepare and run ``plan``; times, CPU time, and the check that each cell ran once.

    The driver's claims and commits are timed on its ``Database`` (the heartbeat and the
    MLflow thread use other methods).
    """
    if mlflow:
        _warm_mlflow(settings.mlflow_uri)
    db = Database.open(settings.db_url)
    spent = time_calls(db, ("claim", "complete"))
    try:
        driver = TimedDriver(plan, settings, db, mlflow=mlflow, max_inflight=max_inflight)
        start = time.perf_counter()
        study_id, summary = driver.prepare()
        ran, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        driver.run(study_id, summary, executor)
        end = time.perf_counter()
        cpu, main = time.process_time() - cpu, time.thread_time() - main
        STORE_BENCH.check_once(db, study_id)  # every cell done, exactly one ok attempt
        unlogged = len(db.unlogged_done(study_id)) if mlflow else 0
        if unlogged:
            raise RuntimeError(f"{unlogged} done cells were not logged to MLflow")
        cells = db.cells(study_id)
    finally:
        db.close()
    n = len(plan.cells)
    return {
        "cells": n,
        "done": summary.done,
        "inflight": driver.max_inflight,
        "prepare_s": ran - start,
        "run_s": end - ran,
        "loop_s": driver.loop_end - ran,
        "drain_s": end - driver.loop_end,
        "ms_per_cell": (driver.loop_end - ran) / n * 1e3,
        "cells_per_s": n / (driver.loop_end - ran),
        "cpu_ms_per_cell": cpu / n * 1e3,
        "main_cpu_ms_per_cell": main / n * 1e3,
        "cpu_s": cpu,
        "claims": int(spent["claim"][1]),
        "claim_ms": spent["claim"][0] / max(1, spent["claim"][1]) * 1e3,
        "claim_ms_per_cell": spent["claim"][0] / n * 1e3,
        "commit_ms_per_cell": spent["complete"][0] / n * 1e3,
        "sum_duration_s": sum(c.duration_s or 0.0 for c in cells),
        "_rows": cells,
    }


# -- part 1: per-cell overhead ---------------------------------------------------------


def bare_ray(cell: Callable, payloads: list[dict], window: int) -> dict[str, Any]:
    """The peer: submit one no-op task per payload, at most ``window`` in flight."""
    import ray

    remote = ray.remote(cell)
    start, cpu = time.perf_counter(), time.process_time()
    refs: list[Any] = []
    sent, results = 0, []
    while len(results) < len(payloads):
        while sent < len(payloads) and len(refs) < window:
            refs.append(remote.options(num_cpus=1).remote(payloads[sent]))
            sent += 1
        ready, refs = ray.wait(refs, num_returns=1)
        results += ray.get(ready)
    s, cpu = time.perf_counter() - start, time.process_time() - cpu
    n = len(payloads)
    return {
        "cells": n,
        "window": window,
        "run_s": s,
        "ms_per_cell": s / n * 1e3,
        "cells_per_s": n / s,
        "cpu_ms_per_cell": cpu / n * 1e3,
        "cpu_s": cpu,
        "sum_duration_s": sum(r["duration_s"] for r in results),
    }


def _payloads(plan: Plan, store: str) -> list[dict]:
    """Payloads shaped like the driver's (spec, inputs, store) for the bare loop."""
    return [
        {
            "key": c.key,
            "kind": "train",
            "spec": c.spec,
            "inputs": {},
            "store": store,
            "batch_size": 256,
            "allow_imports": False,
            "num_cpus": 1.0,
        }
        for c in plan.cells
    ]


def overhead_runs(
    backend: str, shape: str, cells: int, executors: list[str], args: argparse.Namespace
) -> list[dict]:
    """One study of ``cells`` no-op cells through each executor and variant.

    Ray runs with its default in-flight window, again with MLflow on (sizes in
    ``--mlflow-cells``), and at the largest size with the window of a large cluster
    (``--wide``).
    """
    text = (flat_text if shape == "flat" else grid_text)(cells, f"scale-{shape}-{cells}")
    plan = plan_of(text)
    variants: list[tuple[str, bool, int | None]] = [(e, False, None) for e in executors]
    if "ray" in executors and cells in args.mlflow_cells:
        variants.append(("ray", True, None))
    if "ray" in executors and args.wide and cells == max(args.cells):
        variants.append(("ray", False, args.wide))
    rows = []
    for name, mlflow, window in variants:
        with workspace(backend, args.pg_url) as settings:
            records = tiny_artifacts(plan, ArtifactStore(settings.store_root))
            cell, group = noop_functions(records, 0.0)
            executor = NoopInline(cell) if name == "inline" else NoopRay(cell, group)
            row = drive(plan, settings, executor, mlflow=mlflow, max_inflight=window)
        row.pop("_rows")
        row.update(backend=backend, shape=shape, executor=name, mlflow=mlflow)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def bench_overhead(args: argparse.Namespace, skipped: dict[str, str]) -> dict[str, list]:
    """Every backend × shape × size; the bare Ray peer once per size and window."""
    rows: list[dict] = []
    for backend in args.backends:
        try:
            for shape in args.shapes:
                for n in args.cells:
                    rows += overhead_runs(backend, shape, n, args.executors, args)
        except STORE_BENCH.Skipped as exc:
            skipped[backend] = str(exc)
            print(f"{backend}: skipped: {exc}", flush=True)
    peers = []
    for n, window in sorted({(r["cells"], r["inflight"]) for r in rows if r["executor"] == "ray"}):
        plan = plan_of(flat_text(n, "scale-peer"))
        cell, _ = noop_functions({"checkpoint": {}}, 0.0)
        row = bare_ray(cell, _payloads(plan, "-"), window)
        peers.append(row)
        print(json.dumps(row), flush=True)
    for r in rows:
        peer = [p for p in peers if (p["cells"], p["window"]) == (r["cells"], r["inflight"])]
        r["vs_bare_ray"] = r["cells_per_s"] / peer[0]["cells_per_s"] if peer else None
    return {"driver": rows, "bare_ray": peers}


# -- parts 2 and 3: speedup and the overhead share -------------------------------------


@contextlib.contextmanager
def ray_cluster(cpus: int) -> Iterator[float]:
    """A fresh local Ray with ``cpus`` CPUs; yields the seconds ``ray.init`` took."""
    import ray

    start = time.perf_counter()
    ray.init(
        address="local",  # a private instance, never a cluster another process started
        num_cpus=cpus,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()


def warm_workers(cpus: int) -> float:
    """Start ``cpus`` worker processes and import the cell code in each (untimed later)."""
    import ray

    @ray.remote(num_cpus=1)
    def warm() -> int:
        import tasks.cells  # noqa: F401  (torch and the registries: seconds on first import)

        time.sleep(0.5)  # held, so each warm-up task takes its own worker
        return os.getpid()

    start = time.perf_counter()
    pids = set(ray.get([warm.remote() for _ in range(cpus)]))
    assert len(pids) == cpus, pids
    return time.perf_counter() - start


def critical_path(plan: Plan, durations: dict[str, float]) -> float:
    """Seconds of the longest dependency chain: no number of workers finishes sooner."""
    finish: dict[str, float] = {}
    for c in plan.cells:  # train, then attack, then transfer: dependencies come first
        finish[c.key] = durations[c.key] + max((finish[d] for d in c.depends_on), default=0.0)
    return max(finish.values())


def shares(row: dict[str, Any], workers: int, bound_s: float) -> None:
    """Add the overhead shares of one run to ``row`` (defined in the summary)."""
    work, wall = row["sum_duration_s"], row["run_s"]
    row["workers"] = workers
    row["idle_share"] = (wall * workers - work) / work
    row["cpu_share"] = row["cpu_s"] / work
    row["bound_s"] = bound_s
    row["beyond_bound"] = (wall - bound_s) / bound_s


def real_run(plan: Plan, cpus: int, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    """The real study once on a fresh Ray with ``cpus`` CPUs; the row keeps its transfer metrics."""
    with ray_cluster(cpus) as init_s, workspace("sqlite", args.pg_url) as settings:
        warm_s = warm_workers(cpus)
        row = drive(plan, settings, RayExecutor("local"), mlflow=False)
    cells = row.pop("_rows")
    path = critical_path(plan, {c.key: c.duration_s or 0.0 for c in cells})
    shares(row, cpus, max(row["sum_duration_s"] / cpus, path))
    row.update(repeat=repeat, ray_init_s=init_s, warm_workers_s=warm_s, critical_path_s=path)
    row["by_kind_s"] = {
        k: sum(c.duration_s or 0.0 for c in cells if c.kind == k)
        for k in ("train", "attack", "transfer")
    }
    print(json.dumps(row), flush=True)
    row["_metrics"] = {c.key: c.metrics for c in cells if c.kind == "transfer"}
    return row


def bench_speedup(args: argparse.Namespace) -> list[dict]:
    """The real study on 1 and 2 Ray CPUs, alternating, ``--repeats`` times each.

    Raises:
        RuntimeError: The transfer metrics of two runs differ.
    """
    plan = plan_of(real_text("scale-real"))
    rows = [real_run(plan, cpus, rep, args) for rep in range(args.repeats) for cpus in (1, 2)]
    first = rows[0]["_metrics"]
    for r in rows:
        metrics = r.pop("_metrics")
        differ = sorted(
            k[:12] for k in first.keys() | metrics.keys() if first.get(k) != metrics.get(k)
        )
        if differ:
            raise RuntimeError(f"transfer metrics differ between runs: {', '.join(differ[:10])}")
        r["identical_transfer_metrics"] = len(first)
    best = min(r["run_s"] for r in rows if r["workers"] == 1)
    for r in rows:
        r["speedup"] = best / r["run_s"]
    return rows


def bench_sleep(args: argparse.Namespace, slots: int, skipped: dict[str, str]) -> list[dict]:
    """Independent cells sleeping ``s`` seconds on ``slots`` Ray CPUs, per backend.

    Each study is sized so that the ideal wall time is ``--sleep-wall`` seconds. The peer is
    the bare Ray loop running the same sleeping tasks with the driver's in-flight window.
    """
    rows = []
    for sleep_s in args.sleep_s:
        n = max(2 * slots, round(args.sleep_wall * slots / sleep_s))
        plan = plan_of(flat_text(n, f"scale-sleep-{n}"))
        cell, _ = noop_functions({"checkpoint": {}}, sleep_s)
        row = bare_ray(cell, _payloads(plan, "-"), inflight_bound({"CPU": slots}, []))
        shares(row, slots, row["sum_duration_s"] / slots)
        row.update(backend="bare Ray loop", sleep_s=sleep_s, peer=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for backend in [b for b in args.backends if b not in skipped]:
        for sleep_s in args.sleep_s:
            n = max(2 * slots, round(args.sleep_wall * slots / sleep_s))
            plan = plan_of(flat_text(n, f"scale-sleep-{n}"))
            try:
                with workspace(backend, args.pg_url) as settings:
                    records = tiny_artifacts(plan, ArtifactStore(settings.store_root))
                    executor = NoopRay(*noop_functions(records, sleep_s))
                    row = drive(plan, settings, executor, mlflow=False)
            except STORE_BENCH.Skipped as exc:
                skipped[backend] = str(exc)
                break
            row.pop("_rows")
            shares(row, slots, row["sum_duration_s"] / slots)
            row.update(backend=backend, sleep_s=sleep_s)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


# -- the run ---------------------------------------------------------------------------


def _list(kind: type) -> Callable[[str], list]:
    return lambda value: [kind(v) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=_list(str), default=list(PARTS), help="overhead,speedup,sleep")
    ap.add_argument("--backends", type=_list(str), default=None, help="sqlite, postgres or both")
    ap.add_argument("--shapes", type=_list(str), default=["flat", "grid"], help="flat, grid")
    ap.add_argument("--executors", type=_list(str), default=["inline", "ray"], help="inline, ray")
    ap.add_argument("--cells", type=_list(int), help="no-op cells per study (500,2000)")
    ap.add_argument("--mlflow-cells", type=_list(int), help="sizes also run with MLflow on (500)")
    ap.add_argument("--sleep-s", type=_list(float), help="synthetic cell seconds (0.1,1)")
    ap.add_argument("--sleep-wall", type=float, help="ideal seconds of each sleep study (20)")
    ap.add_argument("--wide", type=int, help="cluster-sized window at the largest N (512)")
    ap.add_argument("--repeats", type=int, help="runs of the real study per CPU count (2)")
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 2, help="Ray CPUs, parts 1, 3")
    ap.add_argument("--pg-url", default=STORE_BENCH.PG_URL, help="PostgreSQL server")
    ap.add_argument("--quick", action="store_true", help="small sizes, SQLite: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="results path without suffix")
    args = ap.parse_args(argv)
    if args.backends is None:
        args.backends = ["sqlite"] if args.quick else ["sqlite", "postgres"]
    for option, allowed in CHOICES.items():
        unknown = sorted(set(getattr(args, option)) - set(allowed))
        if unknown:
            ap.error(f"unknown --{option} {', '.join(unknown)}; expected {', '.join(allowed)}")
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        quick_dir = Path(tempfile.gettempdir()) / "advgrid-bench"
        args.out = (quick_dir if args.quick else RESULTS) / "scale-cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began, load_before = time.perf_counter(), os.getloadavg()
    plan_of(flat_text(2, "warm-up"))  # imports and the first dataset load, before timing
    skipped: dict[str, str] = {}
    results: dict[str, Any] = {"overhead": {"driver": [], "bare_ray": []}, "speedup": []}
    results["sleep"] = []
    needs_ray = "ray" in args.executors and ("overhead" in args.parts or "sleep" in args.parts)
    with contextlib.ExitStack() as stack:
        init_s = stack.enter_context(ray_cluster(args.slots)) if needs_ray else None
        if needs_ray:
            warm_workers(args.slots)
        if "overhead" in args.parts:
            results["overhead"] = bench_overhead(args, skipped)
        if "sleep" in args.parts and needs_ray:
            results["sleep"] = bench_sleep(args, args.slots, skipped)
    if "speedup" in args.parts:
        results["speedup"] = bench_speedup(args)
    results["meta"] = _meta(args, skipped, init_s, load_before, time.perf_counter() - began)
    REPORT.write(args.out, results)


def _meta(
    args: argparse.Namespace,
    skipped: dict[str, str],
    init_s: float | None,
    load_before: tuple[float, float, float],
    total_s: float,
) -> dict[str, Any]:
    import mlflow
    import ray

    pg = "postgres" in args.backends and "postgres" not in skipped
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            "ray": ray.__version__,
            "mlflow": mlflow.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "sqlite": sqlite3.sqlite_version,
            "postgres": STORE_BENCH._pg_version(args) if pg else None,
        },
        "parts": args.parts,
        "backends": args.backends,
        "skipped": skipped,
        "slots": args.slots,
        "wide": args.wide,
        "sleep_wall": args.sleep_wall,
        "ray_init_s": init_s,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "quick": args.quick,
        "total_s": total_s,
    }


if __name__ == "__main__":
    main()

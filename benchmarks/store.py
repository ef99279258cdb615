"""Index and artifact store speed: planning, claim throughput, artifact MiB/s.

Planning: a generated study of 10 trained models on digits and a grid of PGD budgets,
shaped to give exactly the requested number of cells (train, attack and transfer cells,
with their dependencies), goes through what ``advgrid run`` does before the first cell is
submitted, each phase timed on its own: parse and validate, expand (``plan.expand``),
``upsert_study``, ``add_cells``, find runnable (the rest of ``Driver.prepare``: leases of
dead local owners, done cells, cells left to run) and the first claim of a batch. Then the
same again on the same study (a resume: every key already exists). One-time imports and the
first dataset load are paid before timing, by a warm-up on a tiny study.

Claims: separate processes, each with its own ``Database.open``, claim ``--batch`` cells at a
time and complete each with two metrics, as the driver does, until the study is done. The
run fails unless every cell is done with exactly one attempt, ending ``ok``.

Artifacts: ``ArtifactStore.put`` (serialize, SHA-256, fsynced atomic write) and ``get``
(read, re-hash, deserialize) of one float32 tensor, against a plain ``shutil.copyfile`` of a
file of the same size (the ratios), a plain read and safetensors' ``save_file`` /
``load_file``, all in the same run and the same folder.

    python benchmarks/store.py                          # 10 000 and 100 000 cells, both backends
    python benchmarks/store.py --backends sqlite --sizes 10000
    python benchmarks/store.py --quick                  # smoke run, small sizes

SQLite is a file in a temporary folder; PostgreSQL a fresh database ``advgrid_bench_<hex>``
on the server at ``--pg-url`` (created and dropped; skipped, with the reason, when no server
answers). Writes ``benchmarks/results/store-cpu.json`` and ``.md`` (``--out`` to change;
``--quick`` writes to a temporary folder unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage import ArtifactStore, Database, NewCell, mask_url

# orchestrator, torch and safetensors are imported inside the functions that need them: the
# claim processes are spawned and re-import this file, and need only ``storage``.

RESULTS = Path(__file__).parent / "results"
PG_URL = os.environ.get(
    "ADVGRID_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TARGET_S, TARGET_CELLS = 5.0, 10_000
LEASE_S, MAX_ATTEMPTS = 120.0, 3
MODELS = 10  # trained models of the generated study
FULL = {
    "sizes": [10_000, 100_000],
    "claimers": [1, 4],
    "claim_cells": 2000,
    "artifact_mib": [1, 16, 128],
    "repeats": 5,
}
QUICK = {
    "sizes": [1000],
    "claimers": [1, 2],
    "claim_cells": 100,
    "artifact_mib": [1, 4],
    "repeats": 2,
}
PHASES = ("parse", "expand", "upsert_study", "add_cells", "find_runnable", "first_claim")


class Skipped(Exception):
    """A backend that cannot be measured here; the message says why."""


# -- the generated study ---------------------------------------------------------------


def grid_shape(cells: int) -> tuple[int, int, int, int]:
    """``(models, sources, targets, attacks)`` giving exactly ``cells`` cells.

    One dataset and one defense: ``models`` train cells, ``sources · attacks`` attack cells
    and ``sources · attacks · targets`` transfer cells. The largest transfer share wins.
    """
    for m in range(MODELS, 1, -1):
        for s in range(m, 0, -1):
            for t in range(m, 0, -1):
                if cells > m and (cells - m) % (s * (1 + t)) == 0:
                    return m, s, t, (cells - m) // (s * (1 + t))
    raise ValueError(f"no study shape gives {cells} cells; ask for at least 4")


def study_text(cells: int, name: str) -> str:
    """YAML of a study with exactly ``cells`` cells (see :func:`grid_shape`)."""
    m, s, t, a = grid_shape(cells)
    models = "".join(
        f"  - {{name: m{i}, arch: mlp, params: {{hidden: [32]}}, "
        f"train: {{epochs: 1, seed: {i}}}}}\n"
        for i in range(m)
    )
    eps = ", ".join(repr(round(0.5 * (i + 1) / a, 9)) for i in range(a))
    return (
        f"name: {name}\ndatasets:\n  - {{name: digits, eval_size: 64}}\nmodels:\n{models}"
        f"attacks:\n  - {{name: pgd, steps: 10, eps: [{eps}]}}\n"
        f"sources: [{', '.join(f'm{i}' for i in range(s))}]\n"
        f"targets: [{', '.join(f'm{i}' for i in range(t))}]\n"
    )


# -- backends --------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(backend: str, pg_url: str) -> Iterator[str]:
    """URL of an empty database on ``backend``, removed afterwards.

    Raises:
        Skipped: PostgreSQL was asked for and no server answers at ``pg_url``.
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="advgrid-bench-") as folder:
            yield f"sqlite:///{folder}/index.db"
        return
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"advgrid_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server or no driver: the backend is skipped, saying why
        admin.dispose()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Skipped(f"no PostgreSQL server answers at {mask_url(pg_url)} ({reason})") from exc
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- planning --------------------------------------------------------------------------


class _Phases(dict[str, float]):
    """Seconds per named phase: ``with phases("expand"): …``."""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = time.perf_counter() - start


def plan_once(db: Database, yaml_text: str, batch: int) -> dict[str, Any]:
    """Plan and record the study in ``yaml_text`` as ``Driver.prepare`` does; claim a batch.

    The claimed batch is released afterwards (untimed), so a second call sees the same study.
    """
    from orchestrator.run.leasing import owner_id, release_dead_local_owners
    from orchestrator.study.loader import parse
    from orchestrator.study.plan import canonical_json, expand
    from storage import __version__

    phase = _Phases()
    with phase("parse"):
        study = parse(yaml_text, "bench.yaml")
    with phase("expand"):
        plan = expand(study)
    with phase("upsert_study"):
        row = db.upsert_study(study.name, study.text, study.spec_hash, "bench", __version__)
    with phase("add_cells"):
        new = db.add_cells(
            row.id,
            (
                NewCell(c.key, c.kind, canonical_json(c.spec), list(c.depends_on))
                for c in plan.cells
            ),
        )
    with phase("find_runnable"):
        release_dead_local_owners(db, row.id)
        done = {c.key for c in db.cells(row.id, state="done")}
        to_run = sum(1 for c in plan.cells if c.key not in done)
    keys, owner = set(plan.by_key()), owner_id()
    with phase("first_claim"):
        claimed = db.claim(row.id, owner, batch, LEASE_S, MAX_ATTEMPTS, keys=keys)
    for c in claimed:
        db.release(c.id, c.token)
    counts = {"cells": len(plan.cells), "new": new, "to_run": to_run, "claimed": len(claimed)}
    return {**counts, **phase, "total": sum(phase.values())}


def warm_up() -> float:
    """Seconds of the one-time imports and first dataset load, paid before any timing."""
    from orchestrator.study.loader import parse
    from orchestrator.study.plan import expand

    start = time.perf_counter()
    expand(parse(study_text(100, "warm-up"), "warm-up.yaml"))
    return time.perf_counter() - start


def bench_planning(backend: str, sizes: list[int], args: argparse.Namespace) -> list[dict]:
    rows = []
    for cells in sizes:
        with fresh_database(backend, args.pg_url) as url:
            db = Database.open(url)
            try:
                yaml_text = study_text(cells, f"plan-{cells}")
                for run in ("first", "resume"):
                    row = {"backend": backend, "run": run, **plan_once(db, yaml_text, args.batch)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                db.close()
    return rows


# -- claims ----------------------------------------------------------------------------


def _claimer(url: str, study_id: int, batch: int, barrier: Any, results: Any) -> None:
    """One claiming process: claim, complete, repeat until the study has nothing left."""
    db = Database.open(url)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # as the driver's
    keys = {c.key for c in db.cells(study_id)}  # the driver passes its plan's keys
    barrier.wait()
    start = time.perf_counter()
    completed = claims = empty = 0
    while True:
        claimed = db.claim(study_id, owner, batch, LEASE_S, MAX_ATTEMPTS, keys=keys)
        claims += 1
        if not claimed:
            if not _unfinished(db, study_id):
                break
            empty += 1  # the ready cells are leased to others; theirs unlock more
            time.sleep(0.005)
            continue
        for c in claimed:
            metrics = {"clean_accuracy": 0.9, "robust_accuracy": 0.1 + 1e-6 * c.id}
            completed += db.complete(
                c.id, c.token, metrics=metrics, artifacts={}, duration_s=0.0, worker=owner
            )
    results.put(
        {"completed": completed, "claims": claims, "empty": empty, "s": time.perf_counter() - start}
    )
    db.close()


def _unfinished(db: Database, study_id: int) -> bool:
    states = db.counts(study_id).values()
    return any(s.get("pending", 0) or s.get("running", 0) for s in states)


def _run_claimers(url: str, study_id: int, claimers: int, batch: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(claimers), ctx.Queue()
    procs = [
        ctx.Process(target=_claimer, args=(url, study_id, batch, barrier, results))
        for _ in range(claimers)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(
                f"a claiming process exited with {p.exitcode}; its traceback is above"
            )
    return out


def check_once(db: Database, study_id: int) -> int:
    """The number of cells, after checking each is done with exactly one ``ok`` attempt.

    Raises:
        RuntimeError: A cell is not done, or was claimed or completed more than once.
    """
    cells = db.cells(study_id)
    bad = [c.key[:12] for c in cells if c.state != "done" or c.attempts != 1]
    ok = sum(1 for c in cells for a in db.attempts(c.id) if a.outcome == "ok")
    if bad or ok != len(cells):
        raise RuntimeError(
            f"{len(cells)} cells, {ok} ok attempts; cells not done once: {', '.join(bad[:10])}"
        )
    return ok


def claim_once(backend: str, claimers: int, args: argparse.Namespace) -> dict:
    from orchestrator.study.loader import parse
    from orchestrator.study.plan import canonical_json, expand

    plan = expand(parse(study_text(args.claim_cells, "claims"), "claims.yaml"))
    with fresh_database(backend, args.pg_url) as url:
        db = Database.open(url)
        try:
            study = db.upsert_study("claims", "", "0" * 64, "bench", "bench")
            news = [
                NewCell(c.key, c.kind, canonical_json(c.spec), list(c.depends_on))
                for c in plan.cells
            ]
            db.add_cells(study.id, news)
            start = time.perf_counter()
            per = _run_claimers(url, study.id, claimers, args.batch)
            wall = time.perf_counter() - start
            ok = check_once(db, study.id)
        finally:
            db.close()
    s = max(p["s"] for p in per)
    completed = sum(p["completed"] for p in per)
    row = {
        "backend": backend,
        "claimers": claimers,
        "batch": args.batch,
        "cells": len(plan.cells),
        "completed": completed,
        "ok_attempts": ok,
        "s": s,
        "wall_with_start_s": wall,
        "cells_per_s": completed / s,
        "claims": sum(p["claims"] for p in per),
        "empty_claims": sum(p["empty"] for p in per),
        "per_claimer": [p["completed"] for p in per],
    }
    print(json.dumps(row), flush=True)
    return row


# -- artifacts -------------------------------------------------------------------------


def _median_s(fn: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def _load_all(tensors: dict[str, Any]) -> None:
    """Read every byte: ``load_file`` maps the file and would otherwise read nothing."""
    for t in tensors.values():
        t.clone()


def bench_artifact(mib: int, folder: Path, repeats: int) -> dict:
    """MiB/s of every way to write and read one float32 tensor of ``mib`` MiB."""
    import torch
    from safetensors.torch import load_file, save, save_file

    x = torch.randn(mib * 2**20 // 4, generator=torch.Generator().manual_seed(0))
    store, src = ArtifactStore(folder / "store"), folder / "src.safetensors"
    blob = save({"x": x})
    src.write_bytes(blob)
    size = len(blob)
    secs = {
        "copy": _median_s(lambda i: shutil.copyfile(src, folder / f"copy{i}"), repeats),
        "copy_fsync": _median_s(lambda i: _copy_fsync(src, folder / f"sync{i}"), repeats),
        "read": _median_s(lambda i: (folder / f"copy{i}").read_bytes(), repeats),
        "sha256": _median_s(lambda i: hashlib.sha256(blob).hexdigest(), repeats),
        "save_file": _median_s(lambda i: save_file({"x": x}, folder / f"st{i}"), repeats),
        "load_file": _median_s(lambda i: _load_all(load_file(folder / f"st{i}")), repeats),
    }
    # a distinct metadata value per repeat: the same content would be found and not rewritten
    records = []
    secs["put"] = _median_s(lambda i: records.append(store.put({"x": x}, {"repeat": i})), repeats)
    secs["get"] = _median_s(lambda i: store.get(records[i].digest), repeats)
    row: dict[str, Any] = {"mib": mib, "bytes": size}
    for name, s in secs.items():
        row[f"{name}_s"], row[f"{name}_mib_per_s"] = s, size / 2**20 / s
    for name in ("put", "get", "save_file", "load_file", "copy_fsync", "read", "sha256"):
        row[f"{name}_vs_copy"] = secs["copy"] / secs[name]
    print(json.dumps(row), flush=True)
    return row


def bench_artifacts(sizes_mib: list[int], repeats: int, folder: str | None) -> list[dict]:
    rows = []
    for mib in sizes_mib:  # a fresh folder per size: the files of 128 MiB add up
        with tempfile.TemporaryDirectory(prefix="advgrid-bench-", dir=folder) as tmp:
            rows.append(bench_artifact(mib, Path(tmp), repeats))
    return rows


# -- the run ---------------------------------------------------------------------------


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=_ints, help="cells to plan (10000,100000)")
    ap.add_argument("--backends", default="sqlite,postgres", help="sqlite, postgres or both")
    ap.add_argument("--claimers", type=_ints, help="claiming processes (1,4)")
    ap.add_argument("--claim-cells", type=int, help="cells of the claimed study (2000)")
    ap.add_argument("--batch", type=int, default=16, help="cells per claim")
    ap.add_argument("--artifact-mib", type=_ints, help="tensor sizes in MiB (1,16,128)")
    ap.add_argument("--repeats", type=int, help="artifact timings, median taken (5)")
    ap.add_argument("--store-dir", default=None, help="folder for the artifact files")
    ap.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server (maintenance database)")
    ap.add_argument("--quick", action="store_true", help="small defaults: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="results path without suffix")
    args = ap.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        ap.error(f"unknown backends {', '.join(sorted(unknown))}; expected sqlite, postgres")
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        quick_dir = Path(tempfile.gettempdir()) / "advgrid-bench"
        args.out = (quick_dir if args.quick else RESULTS) / "store-cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    warm_s = warm_up()
    planning: list[dict] = []
    claims: list[dict] = []
    skipped: dict[str, str] = {}
    for backend in args.backends:
        try:
            planning += bench_planning(backend, args.sizes, args)
            claims += [claim_once(backend, n, args) for n in args.claimers]
        except Skipped as exc:
            skipped[backend] = str(exc)
            print(f"{backend}: skipped: {exc}", flush=True)
    for row in claims:
        peers = [r for r in claims if r["backend"] == row["backend"] and r["claimers"] == 1]
        row["vs_1_claimer"] = row["cells_per_s"] / peers[0]["cells_per_s"] if peers else None
    artifacts = bench_artifacts(args.artifact_mib, args.repeats, args.store_dir)
    meta = _meta(args, warm_s, skipped, time.perf_counter() - began)
    write(args.out, {"meta": meta, "planning": planning, "claims": claims, "artifacts": artifacts})


def _meta(args: argparse.Namespace, warm_s: float, skipped: dict[str, str], total_s: float) -> dict:
    import safetensors
    import torch

    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            "sqlalchemy": sqlalchemy.__version__,
            "sqlite": sqlite3.sqlite_version,
            "postgres": None if "postgres" in skipped else _pg_version(args),
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
        },
        "backends": args.backends,
        "skipped": skipped,
        "batch": args.batch,
        "warm_up_s": warm_s,
        "quick": args.quick,
        "total_s": total_s,
    }


def _pg_version(args: argparse.Namespace) -> str | None:
    if "postgres" not in args.backends:
        return None
    engine = create_engine(args.pg_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("show server_version")).scalar_one())
    finally:
        engine.dispose()


# -- the report ------------------------------------------------------------------------


def _target(planning: list[dict]) -> str:
    firsts = [r for r in planning if r["cells"] == TARGET_CELLS and r["run"] == "first"]
    if not firsts:
        return f"Target < {TARGET_S:.0f} s for {TARGET_CELLS:,} cells: not measured in this run."
    met = all(r["total"] < TARGET_S for r in firsts)
    each = ", ".join(f"{r['backend']} {r['total']:.2f} s" for r in firsts)
    verdict = "met" if met else "missed"
    return f"Target < {TARGET_S:.0f} s for {TARGET_CELLS:,} cells: **{verdict}** ({each})."


def _planning_md(rows: list[dict]) -> list[str]:
    lines = [
        "| backend | cells | run | " + " | ".join(PHASES) + " | total s | new cells | claimed |",
        "|---|---:|---|" + "---:|" * (len(PHASES) + 3),
    ]
    for r in rows:
        phases = " | ".join(f"{r[p]:.3f}" for p in PHASES)
        lines.append(
            f"| {r['backend']} | {r['cells']:,} | {r['run']} | {phases} | **{r['total']:.2f}** | "
            f"{r['new']:,} | {r['claimed']} |"
        )
    return lines


def _claims_md(rows: list[dict]) -> list[str]:
    lines = [
        "| backend | claimers | cells | s | cells/s | vs 1 claimer | claims | empty claims | "
        "ok attempts | cells per claimer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = "—" if r["vs_1_claimer"] is None else f"{r['vs_1_claimer']:.2f}×"
        lines.append(
            f"| {r['backend']} | {r['claimers']} | {r['cells']:,} | {r['s']:.2f} | "
            f"**{r['cells_per_s']:.0f}** | {ratio} | {r['claims']} | {r['empty_claims']} | "
            f"{r['ok_attempts']:,} | {', '.join(map(str, r['per_claimer']))} |"
        )
    return lines


def _artifacts_md(rows: list[dict]) -> list[str]:
    cols = ("copy", "copy_fsync", "sha256", "save_file", "put", "read", "load_file", "get")
    lines = [
        "| MiB | " + " | ".join(f"{c} MiB/s" for c in cols) + " | put / copy | get / copy | "
        "put / save_file | get / load_file |",
        "|---:|" + "---:|" * (len(cols) + 4),
    ]
    for r in rows:
        speeds = " | ".join(f"{r[f'{c}_mib_per_s']:.0f}" for c in cols)
        lines.append(
            f"| {r['mib']} | {speeds} | {r['put_vs_copy']:.2f}× | {r['get_vs_copy']:.2f}× | "
            f"{r['save_file_s'] / r['put_s']:.2f}× | "
            f"{r['load_file_s'] / r['get_s']:.2f}× |"
        )
    return lines


def write(stem: Path, results: dict) -> None:
    """``stem``.json (every number) and ``stem``.md (the tables)."""
    meta = results["meta"]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    skipped = "".join(f" Skipped: {b}: {why}." for b, why in meta["skipped"].items())
    lines = [
        f"# Index and artifact store speed ({meta['cpus']} CPUs"
        f"{', quick run' if meta['quick'] else ''})",
        "",
        f"Versions: {versions}. Whole run: {meta['total_s'] / 60:.1f} min; one-time imports "
        f"and the first dataset load ({meta['warm_up_s']:.1f} s) are paid before timing." + skipped,
        "",
        "## Planning",
        "",
        "Seconds per phase of what `advgrid run` does before it submits the first cell (the "
        f"first claim takes a batch of {meta['batch']}); `resume` plans the same study again, "
        "every key already recorded. " + _target(results["planning"]),
        "",
        *_planning_md(results["planning"]),
        "",
        "## Claims",
        "",
        f"Cells/s of claim ({meta['batch']} at a time) + complete (two metrics each) until the "
        "study is done, train → attack → transfer dependencies included; each claimer a "
        "separate process with its own `Database.open`. Checked: every cell done with exactly "
        "one attempt, ending `ok`. An empty claim found nothing ready (the ready cells were "
        "leased to others) and waited 5 ms.",
        "",
        *_claims_md(results["claims"]),
        "",
        "## Artifacts",
        "",
        "MiB/s of one float32 tensor, median of the repeats, all in the same folder. `put`: "
        "serialize, SHA-256, fsynced atomic write; `get`: read, SHA-256, deserialize. `copy` is "
        "`shutil.copyfile` of a same-size file (no fsync), `copy_fsync` the same plus the fsync "
        "`put` does, `sha256` hashing the same bytes in memory, `read` a plain `read_bytes`, "
        "`load_file` safetensors' own loader with every tensor copied out of its memory map; "
        "reads come from the page cache. Ratios are "
        "throughput over the peer's, measured in the same run (> 1: faster).",
        "",
        *_artifacts_md(results["artifacts"]),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

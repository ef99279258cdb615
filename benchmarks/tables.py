"""Transfer matrices from a large index: advgrid's SQL path against loading every cell.

The index holds the cells of a real planned study (``plan.expand`` of ``--sources`` ×
``--targets`` MLPs on digits and ``--attacks`` × ``--eps`` attack configurations, no
defense): train and attack cells done through the storage API (``add_cells``, ``claim``,
``complete``), the first ``--api-transfer`` transfer cells too, and the other transfer cells
in a few bulk transactions (SQLAlchemy Core) in the shape ``claim`` + ``complete`` leave,
checked column by column against the cells done through the API. A transfer cell has the 11
metrics ``tasks.metrics.transfer_metrics`` records; its counts follow from its
(configuration, source, target), so every matrix entry can be checked.

Then, after one warm-up, ``--repeats`` rounds, each timing both in turn:

- advgrid: ``Database.transfer_counts`` (filters and the metric pivot in SQL), then
  ``orchestrator.views.transfer.matrices``;
- the peer, what ``advgrid transfer`` did before: ``Database.cells(kind="transfer")`` (every
  transfer cell with all its metrics), then the filter and the matrices in Python;

for one configuration (``--attack`` at the middle budget: one matrix) and for all of them.
The planned study is frozen out of the garbage collector and garbage is collected before
each timed step, so one step's garbage is not charged to the next. Every result is checked:
the number of matrices, every entry filled with the counts and the cell key written, and the
peer's matrices equal to advgrid's.

    python benchmarks/tables.py                     # 20 × 20, 4 attacks × 6 eps, both backends
    python benchmarks/tables.py --backends sqlite --sources 5 --targets 5 --eps 2

SQLite is a file in a temporary folder; PostgreSQL a fresh database on the server at
``--pg-url`` (created and dropped; skipped, with the reason, when no server answers; see
``store.py``). Writes ``benchmarks/results/tables-cpu.json`` and ``.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sqlite3
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy
from sqlalchemy import bindparam, func, insert, select, text, update

from orchestrator.study.loader import parse
from orchestrator.study.plan import Plan, PlannedCell, canonical_json, expand
from orchestrator.views.transfer import Matrix, matrices
from storage import ArtifactRecord, CellRow, Database, NewCell
from storage.models import AttemptModel, CellModel, MetricModel
from storage.spec_json import AttackFilter


def _sibling(name: str) -> ModuleType:
    """Another benchmark script of this folder, loaded by path (the folder is no package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(name))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STORE_BENCH = _sibling("store.py")  # fresh_database: a throwaway PostgreSQL database
RESULTS = Path(__file__).parent / "results"
DENOMINATOR = "source_success"
TARGET_S = 1.0  # one filtered matrix on SQLite, query + build
OWNER, WORKER = "bench:1:tables", "bench-worker"
LEASE_S, MAX_ATTEMPTS, CLAIM_BATCH = 3600.0, 3, 500
CASES = ("one", "all")
TIMES = ("query", "build", "total")


# -- the study and the values its cells hold ------------------------------------------


def eps_grid(k: int) -> list[float]:
    return [round(0.3 * (i + 1) / k, 6) for i in range(k)]


def study_text(args: argparse.Namespace) -> str:
    """YAML of the study: every source against every target under every configuration."""
    n = max(args.sources, args.targets)
    names = [f"m{i:0{len(str(n - 1))}d}" for i in range(n)]
    models = "".join(
        f"  - {{name: {m}, arch: mlp, params: {{hidden: [32]}}, train: {{epochs: 1, seed: {i}}}}}\n"
        for i, m in enumerate(names)
    )
    eps = ", ".join(map(repr, eps_grid(args.eps)))
    attacks = "".join(f"  - {{name: {a}, eps: [{eps}]}}\n" for a in args.attacks)
    return (
        f"name: tables-bench\ndatasets:\n  - {{name: digits, eval_size: {args.eval_size}}}\n"
        f"models:\n{models}attacks:\n{attacks}"
        f"sources: [{', '.join(names[: args.sources])}]\n"
        f"targets: [{', '.join(names[: args.targets])}]\n"
    )


@dataclass
class Layout:
    """The planned study and where each transfer cell sits: (configuration, source, target)."""

    plan: Plan
    sources: list[str]
    targets: list[str]
    configs: list[str]  # canonical JSON of the attack block {"name", "params"}, plan order
    n: int  # examples per cell

    @classmethod
    def of(cls, plan: Plan, n: int) -> Layout:
        specs = [c.spec for c in plan.cells if c.kind == "transfer"]
        return cls(
            plan,
            list(dict.fromkeys(s["source"] for s in specs)),
            list(dict.fromkeys(s["target"] for s in specs)),
            list(dict.fromkeys(canonical_json(s["attack"]) for s in specs)),
            n,
        )

    def position(self, cell: PlannedCell) -> tuple[int, int, int]:
        s = cell.spec
        c = self.configs.index(canonical_json(s["attack"]))
        return c, self.sources.index(s["source"]), self.targets.index(s["target"])

    @functools.cached_property
    def by_key(self) -> dict[str, PlannedCell]:
        return self.plan.by_key()

    def transfers(self) -> list[PlannedCell]:
        return [c for c in self.plan.cells if c.kind == "transfer"]

    def config(self, attack: str, eps: float) -> int:
        for i, c in enumerate(self.configs):
            a = json.loads(c)
            if a["name"] == attack and math.isclose(a["params"]["eps"], eps, rel_tol=1e-6):
                return i
        raise ValueError(f"no configuration of attack {attack!r} at eps {eps}")


def transfer_values(c: int, i: int, j: int, n: int) -> dict[str, float]:
    """The 11 metrics of transfer cell (configuration c, source i, target j); counts > 0."""
    counts = {
        "all": n,
        "source_success": n // 4 + (7 * i + 13 * c) % (n - n // 4),
        "target_correct": n - (3 * j + c) % (n // 4 + 1),
    }
    fooled = {
        "source_success": (31 * i + 17 * j + 5 * c) % (counts["source_success"] + 1),
        "target_correct": (11 * i + 23 * j + 3 * c) % (counts["target_correct"] + 1),
    }
    fooled["all"] = min(n, fooled["source_success"] + (5 * j + c) % 32)
    out = {
        "target_clean_accuracy": counts["target_correct"] / n,
        "target_robust_accuracy": 1 - fooled["all"] / n,
    }
    for d, k in counts.items():
        out |= {f"n_{d}": float(k), f"fooled_{d}": float(fooled[d])}
        out[f"transfer_rate_{d}"] = fooled[d] / k
    return out


def _attack_values(n: int, seed: int) -> dict[str, float]:
    """What ``tasks.metrics.attack_metrics`` and ``run_attack`` record for a PGD-like cell."""
    correct, robust = n - seed % (n // 4), (seed * 7) % (n // 2)
    norms = {
        f"{k}_{s}": 0.01 * (seed % 9 + 1) for k in ("l0", "l2", "linf") for s in ("mean", "median")
    }
    return {
        "n": float(n),
        "n_correct": float(correct),
        "clean_accuracy": correct / n,
        "robust_accuracy": robust / n,
        "success_rate": 1 - robust / n,
        "success_rate_on_correct": 1 - robust / correct,
        "wall_s": 0.5,
        "samples_per_s": n / 0.5,
        **norms,
        "forward": 11.0 * n,
        "backward": 10.0 * n,
    }


def _result(cell_id: int, key: str, kind: str, layout: Layout) -> tuple[dict, dict]:
    """``(metrics, artifacts)`` of a cell, as its task would return them."""
    if kind == "transfer":
        return transfer_values(*layout.position(layout.by_key[key]), layout.n), {}
    role = "checkpoint" if kind == "train" else "adversarial"
    digest = hashlib.sha256(f"{key}:{role}".encode()).hexdigest()
    art = ArtifactRecord(digest, role, f"objects/{digest[:2]}/{digest[2:]}.safetensors", 10**5)
    if kind == "train":
        return {"train_loss": 0.1, "train_accuracy": 0.95, "eval_accuracy": 0.9}, {role: art}
    return _attack_values(layout.n, cell_id), {role: art}


# -- filling the index ----------------------------------------------------------------


def complete_through_api(db: Database, sid: int, layout: Layout, keys: set[str]) -> int:
    """Claim and complete the cells ``keys`` as the driver does; how many."""
    done = 0
    while claimed := db.claim(sid, OWNER, CLAIM_BATCH, LEASE_S, MAX_ATTEMPTS, keys=keys):
        for c in claimed:
            metrics, artifacts = _result(c.id, c.key, c.kind, layout)
            done += db.complete(
                c.id, c.token, metrics=metrics, artifacts=artifacts, duration_s=0.2, worker=WORKER
            )
        keys = keys - {c.key for c in claimed}
    return done


def complete_in_bulk(db: Database, sid: int, layout: Layout, chunk: int) -> int:
    """The pending transfer cells done, ``chunk`` per transaction, as ``complete`` leaves a
    cell: its columns, one attempt closed ``ok``, its metric rows. How many."""
    cells = CellModel.__table__
    with db.engine.connect() as conn:
        pending = conn.execute(
            select(cells.c.id, cells.c.key)
            .where(cells.c.study_id == sid, cells.c.kind == "transfer", cells.c.state == "pending")
            .order_by(cells.c.id)
        ).all()
    by_key = layout.by_key
    for start in range(0, len(pending), chunk):
        batch = pending[start : start + chunk]
        end = datetime.now(timezone.utc)
        began = end - timedelta(seconds=0.2)
        who = {"worker": WORKER, "error": None}
        done = {"state": "done", "attempts": 1, "lease_owner": OWNER, "lease_expires_at": None}
        done |= {"heartbeat_at": began, "started_at": began, "finished_at": end, "duration_s": 0.2}
        attempt = {"n": 1, "started_at": began, "ended_at": end, "outcome": "ok", "owner": OWNER}
        metrics = [
            {"cell_id": cid, "name": name, "value": value}
            for cid, key in batch
            for name, value in transfer_values(*layout.position(by_key[key]), layout.n).items()
        ]
        set_done = update(cells).where(cells.c.id == bindparam("cid"))
        with db.engine.begin() as conn:
            conn.execute(
                set_done.values(lease_token=bindparam("tok"), **done, **who),
                [{"cid": cid, "tok": uuid.uuid4().hex} for cid, _ in batch],
            )
            conn.execute(
                insert(AttemptModel), [{"cell_id": cid, **attempt, **who} for cid, _ in batch]
            )
            conn.execute(insert(MetricModel), metrics)
    return len(pending)


# columns whose value is the same on every done cell (or attempt) this benchmark writes
_FIXED = {"study_id", "kind", "state", "attempts", "lease_owner", "lease_expires_at", "worker"}
_FIXED |= {"duration_s", "error", "mlflow_run_id", "n", "outcome", "owner"}


def shape(db: Database, ids: list[int]) -> set[tuple]:
    """What the cells ``ids`` look like apart from identity, times and counts: each column's
    value where it is fixed, else its Python type; the same of its attempts; metric names."""
    cells, attempts = CellModel.__table__, AttemptModel.__table__
    out = set()
    with db.engine.connect() as conn:
        for row in conn.execute(select(cells).where(cells.c.id.in_(ids))).mappings():
            tries = conn.execute(select(attempts).where(attempts.c.cell_id == row["id"]))
            names = conn.scalars(select(MetricModel.name).where(MetricModel.cell_id == row["id"]))
            parts = [dict(row), *(dict(a) for a in tries.mappings())]
            out.add(
                tuple(
                    tuple((k, v if k in _FIXED else type(v).__name__) for k, v in sorted(p.items()))
                    for p in parts
                )
                + (tuple(sorted(names)),)
            )
    return out


def fill(db: Database, layout: Layout, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Record and complete the study; its id, and seconds per phase and what the index holds."""
    secs: dict[str, Any] = {}
    start = time.perf_counter()
    sid = db.upsert_study("tables-bench", study_text(args), "0" * 64, "bench", "bench").id
    plan = layout.plan.cells
    news = [NewCell(c.key, c.kind, canonical_json(c.spec), list(c.depends_on)) for c in plan]
    if db.add_cells(sid, news) != len(news):
        raise RuntimeError("add_cells inserted fewer cells than planned")
    secs["add_cells_s"], start = time.perf_counter() - start, time.perf_counter()
    by_api = [c.key for c in layout.transfers()[: args.api_transfer]]
    rounds = [{c.key for c in plan if c.kind == kind} for kind in ("train", "attack")]
    secs["api_cells"] = sum(
        complete_through_api(db, sid, layout, k) for k in [*rounds, set(by_api)]
    )
    secs["api_s"], start = time.perf_counter() - start, time.perf_counter()
    secs["bulk_cells"] = complete_in_bulk(db, sid, layout, args.chunk)
    secs["bulk_s"], start = time.perf_counter() - start, time.perf_counter()
    if db.dialect == "postgresql":  # what autovacuum does a minute later: fix the plans now
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    secs["analyze_s"] = time.perf_counter() - start if db.dialect == "postgresql" else None
    return sid, secs | _check_fill(db, sid, by_api)


def _check_fill(db: Database, sid: int, by_api: list[str]) -> dict[str, Any]:
    """Bulk-filled transfer cells look like API-filled ones; what the index holds."""
    ids = {c.key: c.id for c in db.cells(sid, kind="transfer", state="done")}
    bulk = [i for k, i in ids.items() if k not in set(by_api)]
    api_shape = shape(db, [ids[k] for k in by_api])
    bulk_shape = shape(db, bulk[:: max(1, len(bulk) // 100)])  # 100 of them, spread out
    if len(api_shape) != 1 or (bulk and api_shape != bulk_shape):
        raise RuntimeError(
            f"bulk-filled cells differ from API-filled ones: {bulk_shape ^ api_shape}"
        )
    with db.engine.connect() as conn:
        cells, rows = (
            conn.execute(select(func.count()).select_from(m)).scalar_one()
            for m in (CellModel, MetricModel)
        )
    return {"shape_ok": True, "done_transfer": len(ids), "cells": cells, "metric_rows": rows}


# -- the peer: matrices as ``advgrid transfer`` built them before the SQL path --------


def _label(model: str, defense: dict | None) -> str:
    if not defense or defense.get("name") == "none":
        return model
    return f"{model}+{defense.get('label', defense['name'])}"


def _peer_selects(attack: dict, where: AttackFilter | None) -> bool:
    if where is None:
        return True
    if where.attack and attack["name"] != where.attack:
        return False
    eps = float(attack["params"].get("eps", math.nan))
    return where.eps is None or math.isclose(eps, where.eps, rel_tol=1e-6, abs_tol=1e-9)


def peer_matrices(cells: list[CellRow], where: AttackFilter | None, d: str) -> list[dict]:
    """Each done transfer cell's spec parsed and filtered in Python, grouped by dataset and
    attack configuration, entries read from the cell's metrics."""
    groups: dict[str, dict[str, Any]] = {}
    for cell in cells:
        if cell.kind != "transfer" or cell.state != "done":
            continue
        spec = json.loads(cell.spec_json)
        a = spec["attack"]
        if not _peer_selects(a, where):
            continue
        gkey = json.dumps([spec["dataset"]["label"], a], sort_keys=True)
        g = groups.setdefault(gkey, {"dataset": spec["dataset"]["label"], "attack": a, "cells": {}})
        src = _label(spec["source"], spec["defense"])
        g["cells"][(src, _label(spec["target"], spec["target_defense"]))] = cell.metrics
    return [_peer_matrix(g, d) for g in groups.values()]


def _peer_matrix(g: dict[str, Any], d: str) -> dict[str, Any]:
    sources = sorted({s for s, _ in g["cells"]})
    targets = sorted({t for _, t in g["cells"]})
    grid = [[g["cells"].get((s, t)) for t in targets] for s in sources]
    n = [[int(m[f"n_{d}"]) if m else None for m in row] for row in grid]
    fooled = [[int(m[f"fooled_{d}"]) if m else None for m in row] for row in grid]
    rates = [
        [f / k if f is not None and k else None for f, k in zip(fr, nr, strict=True)]
        for fr, nr in zip(fooled, n, strict=True)
    ]
    a = g["attack"]
    return {"dataset": g["dataset"], "attack": a["name"], "params": a["params"]} | {
        "sources": sources,
        "targets": targets,
        "n": n,
        "fooled": fooled,
        "rates": rates,
    }


# -- measuring and checking -----------------------------------------------------------


def measure(db: Database, sid: int, where: AttackFilter | None, repeats: int) -> tuple[dict, dict]:
    """Seconds of query and build per implementation (warm-up first), and the last results."""
    steps: dict[str, tuple[Callable[[], list], Callable[[list], list]]] = {
        "advgrid": (
            lambda: db.transfer_counts(sid, denominator=DENOMINATOR, where=where),
            lambda rows: matrices(rows, DENOMINATOR),
        ),
        "peer": (
            lambda: db.cells(sid, kind="transfer"),
            lambda rows: peer_matrices(rows, where, DENOMINATOR),
        ),
    }
    secs: dict[str, dict[str, Any]] = {name: {"query": [], "build": []} for name in steps}
    built: dict[str, list] = {}
    for _ in range(repeats + 1):  # alternating, so a change in the machine's load hits both
        for name, (query, build) in steps.items():
            built.pop(name, None)
            gc.collect()  # the garbage of the step before is not this step's to collect
            start = time.perf_counter()
            rows = query()
            mid = time.perf_counter()
            built[name] = build(rows)
            secs[name]["query"].append(mid - start)
            secs[name]["build"].append(time.perf_counter() - mid)
            secs[name]["rows"] = len(rows)
    return secs, built


def _timing(backend: str, case: str, impl: str, secs: dict[str, Any], built: list) -> dict:
    q, b = secs["query"], secs["build"]
    total = [x + y for x, y in zip(q, b, strict=True)]
    row: dict[str, Any] = {"backend": backend, "case": case, "impl": impl}
    row |= {"rows": secs["rows"], "matrices": len(built)}
    row |= {"warm_up_s": {"query": q[0], "build": b[0], "total": total[0]}}
    for name, values in (("query", q[1:]), ("build", b[1:]), ("total", total[1:])):
        row[f"{name}_s"], row[f"{name}_median_s"] = values, statistics.median(values)
    return row


def check(layout: Layout, ms: list[Matrix], peer: list[dict], configs: list[int]) -> dict:
    """Whether ``ms`` are exactly the matrices of ``configs``, every entry as written, and
    the peer's equal to them."""
    keys = {layout.position(c): c.key for c in layout.transfers()}
    d, entries, wrong, seen = DENOMINATOR, 0, 0, []
    for m in ms:
        c = layout.configs.index(canonical_json({"name": m.attack, "params": m.params}))
        seen.append(c)
        wrong += (m.sources, m.targets) != (sorted(layout.sources), sorted(layout.targets))
        for s, row in zip(m.sources, m.entries, strict=True):
            for t, e in zip(m.targets, row, strict=True):
                if e is None:
                    continue
                pos = (c, layout.sources.index(s), layout.targets.index(t))
                v = transfer_values(*pos, layout.n)
                entries += 1
                wrong += (e.fooled, e.n, e.cell_key) != (v[f"fooled_{d}"], v[f"n_{d}"], keys[pos])
    expected = len(configs) * len(layout.sources) * len(layout.targets)
    mine = sorted(map(_plain, ms), key=lambda t: t[:3])
    theirs = sorted(map(_plain_peer, peer), key=lambda t: t[:3])
    out = {"matrices": len(ms), "configs_ok": sorted(seen) == sorted(configs)}
    out |= {"entries": entries, "expected_entries": expected, "wrong": wrong}
    out["peer_equal"] = mine == theirs
    out["ok"] = out["configs_ok"] and entries == expected and not wrong and out["peer_equal"]
    return out


def _plain(m: Matrix) -> tuple:
    grid = tuple(tuple((e.fooled, e.n) if e else None for e in row) for row in m.entries)
    return m.dataset, m.attack, canonical_json(m.params), tuple(m.sources), tuple(m.targets), grid


def _plain_peer(p: dict) -> tuple:
    grid = tuple(
        tuple(None if k is None else (f, k) for f, k in zip(fr, nr, strict=True))
        for fr, nr in zip(p["fooled"], p["n"], strict=True)
    )
    head = p["dataset"], p["attack"], canonical_json(p["params"])
    return *head, tuple(p["sources"]), tuple(p["targets"]), grid


# -- one backend ----------------------------------------------------------------------


def bench_backend(backend: str, layout: Layout, args: argparse.Namespace) -> dict[str, Any]:
    """Fill a fresh database on ``backend``, then time and check both cases."""
    with STORE_BENCH.fresh_database(backend, args.pg_url) as url:
        db = Database.open(url)
        try:
            sid, filled = fill(db, layout, args)
            filled |= {"backend": backend, "server": _server(db)}
            filled["load_average"] = list(os.getloadavg())
            print(json.dumps(filled), flush=True)
            out: dict[str, Any] = {"fill": filled, "timings": [], "checks": []}
            for case in CASES:
                timings, checks = bench_case(db, sid, layout, args, backend=backend, case=case)
                out["timings"] += timings
                out["checks"].append({"backend": backend, **checks})
            return out
        finally:
            db.close()


def bench_case(
    db: Database, sid: int, layout: Layout, args: argparse.Namespace, *, backend: str, case: str
) -> tuple[list[dict], dict]:
    """Timings of both implementations on ``case`` (``one`` or ``all``), and their check."""
    if case == "one":
        eps = filter_eps(args)
        where, configs = (
            AttackFilter(attack=args.attack, eps=eps),
            [layout.config(args.attack, eps)],
        )
    else:
        where, configs = None, list(range(len(layout.configs)))
    secs, built = measure(db, sid, where, args.repeats)
    checked = {"case": case, **check(layout, built["advgrid"], built["peer"], configs)}
    if not checked["ok"]:
        raise RuntimeError(f"{backend}, case {case}: wrong matrices: {checked}")
    rows = [_timing(backend, case, impl, secs[impl], built[impl]) for impl in ("advgrid", "peer")]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_s")}), flush=True)
    return rows, checked


def filter_eps(args: argparse.Namespace) -> float:
    """The budget of the filtered case: the middle of the grid."""
    return eps_grid(args.eps)[(args.eps - 1) // 2]


def _server(db: Database) -> str:
    if db.dialect == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with db.engine.connect() as conn:
        return f"PostgreSQL {conn.execute(text('show server_version')).scalar_one()}"


def ratios(timings: list[dict]) -> list[dict]:
    """Peer over advgrid, medians, per backend and case (> 1: advgrid faster)."""
    by = {(t["backend"], t["case"], t["impl"]): t for t in timings}
    out = []
    for backend, case, impl in by:
        if impl == "advgrid" and (backend, case, "peer") in by:
            mine, peer = by[(backend, case, "advgrid")], by[(backend, case, "peer")]
            row = {n: peer[f"{n}_median_s"] / mine[f"{n}_median_s"] for n in TIMES}
            out.append({"backend": backend, "case": case, **row})
    return out


# -- the run --------------------------------------------------------------------------


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=20, help="source models (20)")
    ap.add_argument("--targets", type=int, default=20, help="target models (20)")
    ap.add_argument("--attacks", type=_list, default=["pgd", "fgsm", "bim", "mim"])
    ap.add_argument("--eps", type=int, default=6, help="budgets per attack (6)")
    ap.add_argument("--attack", default="pgd", help="attack of the filtered case (pgd)")
    ap.add_argument("--eval-size", type=int, default=256, help="examples per cell (256)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (5)")
    ap.add_argument("--api-transfer", type=int, default=20, help="transfer cells via the API")
    ap.add_argument("--chunk", type=int, default=2000, help="cells per bulk transaction")
    ap.add_argument("--backends", type=_list, default=["sqlite", "postgres"])
    ap.add_argument("--pg-url", default=STORE_BENCH.PG_URL, help="PostgreSQL server")
    ap.add_argument("--out", type=Path, default=RESULTS / "tables-cpu", help="path, no suffix")
    args = ap.parse_args(argv)
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        ap.error(f"unknown backends {', '.join(sorted(unknown))}; expected sqlite, postgres")
    if args.attack not in args.attacks:
        ap.error(f"--attack {args.attack} is not one of --attacks {','.join(args.attacks)}")
    if min(args.sources, args.targets, args.eps, args.repeats, args.api_transfer) < 1:
        ap.error("--sources, --targets, --eps, --repeats and --api-transfer must be ≥ 1")
    if args.eval_size < 8:
        ap.error("--eval-size must be ≥ 8")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began, load_before = time.perf_counter(), os.getloadavg()
    start = time.perf_counter()
    plan = expand(parse(study_text(args), "tables-bench.yaml"))
    layout = Layout.of(plan, args.eval_size)
    plan_s = time.perf_counter() - start
    gc.collect()
    gc.freeze()  # the plan is the benchmark's; the collector should not walk it during timing
    results: dict[str, Any] = {"fill": [], "timings": [], "checks": []}
    skipped: dict[str, str] = {}
    for backend in args.backends:
        try:
            for part, rows in bench_backend(backend, layout, args).items():
                results[part] += rows if isinstance(rows, list) else [rows]
        except STORE_BENCH.Skipped as exc:
            skipped[backend] = str(exc)
            print(f"{backend}: skipped: {exc}", flush=True)
    results["ratios"] = ratios(results["timings"])
    results["meta"] = _meta(args, layout, plan_s, skipped, load_before)
    results["meta"]["total_s"] = time.perf_counter() - began
    write(args.out, results)


def _meta(
    args: argparse.Namespace,
    layout: Layout,
    plan_s: float,
    skipped: dict[str, str],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    kinds = layout.plan.counts()
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {
            "sqlalchemy": sqlalchemy.__version__,
            "psycopg": _version("psycopg"),
            "sqlite": sqlite3.sqlite_version,
        },
        "study": {
            "sources": len(layout.sources),
            "targets": len(layout.targets),
            "attacks": args.attacks,
            "eps": eps_grid(args.eps),
            "configs": len(layout.configs),
            "eval_size": args.eval_size,
            "cells": kinds,
            "transfer_metric_rows": len(transfer_values(0, 0, 0, 8)) * kinds.get("transfer", 0),
            "filter": {"attack": args.attack, "eps": filter_eps(args)},
            "denominator": DENOMINATOR,
        },
        "plan_s": plan_s,
        "repeats": args.repeats,
        "backends": args.backends,
        "skipped": skipped,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the report -----------------------------------------------------------------------


def _target(timings: list[dict], study: dict) -> str:
    rows = [
        t for t in timings if (t["backend"], t["case"], t["impl"]) == ("sqlite", "one", "advgrid")
    ]
    what = f"Target < {TARGET_S:.0f} s for one {study['sources']} × {study['targets']} matrix"
    if not rows:
        return f"{what} on SQLite: not measured in this run."
    s = rows[0]["total_median_s"]
    return f"{what} on SQLite: **{'met' if s < TARGET_S else 'missed'}** ({s:.3f} s)."


def _fill_md(rows: list[dict]) -> list[str]:
    lines = [
        "| backend | server | cells | metric rows | add_cells s | API cells | API s | "
        "bulk cells | bulk s | ANALYZE s | load average |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['server']} | {r['cells']:,} | {r['metric_rows']:,} | "
            f"{r['add_cells_s']:.2f} | {r['api_cells']:,} | {r['api_s']:.2f} | "
            f"{r['bulk_cells']:,} | {r['bulk_s']:.2f} | "
            f"{'—' if r['analyze_s'] is None else format(r['analyze_s'], '.2f')} | "
            f"{r['load_average'][0]:.2f} |"
        )
    return lines


def _timings_md(rows: list[dict], ratios_: list[dict]) -> list[str]:
    ratio = {(r["backend"], r["case"]): r for r in ratios_}
    lines = [
        "| backend | case | impl | rows read | matrices | query s | build s | total s | "
        "total s, each repeat | warm-up s | peer / advgrid |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        each = ", ".join(f"{s:.3f}" for s in r["total_s"])
        x = ratio.get((r["backend"], r["case"]))
        vs = f"{x['total']:.1f}×" if x and r["impl"] == "peer" else ""
        lines.append(
            f"| {r['backend']} | {r['case']} | {r['impl']} | {r['rows']:,} | {r['matrices']} | "
            f"{r['query_median_s']:.3f} | {r['build_median_s']:.3f} | "
            f"**{r['total_median_s']:.3f}** | {each} | {r['warm_up_s']['total']:.3f} | {vs} |"
        )
    return lines


def _ratios_md(rows: list[dict]) -> list[str]:
    lines = ["| backend | case | query | build | total |", "|---|---|---:|---:|---:|"]
    for r in rows:
        each = " | ".join(f"{r[n]:.1f}×" for n in TIMES)
        lines.append(f"| {r['backend']} | {r['case']} | {each} |")
    return lines


def write(stem: Path, results: dict) -> None:
    """``stem``.json (every number) and ``stem``.md (the tables)."""
    meta, study = results["meta"], results["meta"]["study"]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v and k != "sqlite")
    servers = ", ".join(f["server"] for f in results["fill"])
    skipped = "".join(f" Skipped: {b}: {why}." for b, why in meta["skipped"].items())
    cells = study["cells"]
    checks = results["checks"]
    lines = [
        f"# Transfer matrices from the index ({meta['cpus']} CPUs)",
        "",
        f"Python {meta['python']}, {versions}; {servers or 'no backend'}, on the same machine."
        f" Whole run: {meta['total_s'] / 60:.1f} min. Load average (1 min) "
        f"{meta['load_average_before'][0]:.2f} at the start and "
        f"{meta['load_average_after'][0]:.2f} at the end: the machine is shared, so read "
        "ratios within a run." + skipped,
        "",
        f"The study: {study['sources']} sources × {study['targets']} targets × "
        f"{study['configs']} attack configurations ({', '.join(study['attacks'])} × eps "
        f"{', '.join(map(str, study['eps']))}), {study['eval_size']} examples per cell: "
        f"{cells.get('train', 0):,} train, {cells.get('attack', 0):,} attack and "
        f"{cells.get('transfer', 0):,} transfer cells "
        f"({study['transfer_metric_rows']:,} transfer metric rows). Planned in "
        f"{meta['plan_s']:.2f} s. " + _target(results["timings"], study),
        "",
        "## Filling the index",
        "",
        "`add_cells` of every planned cell; train, attack and the first transfer cells "
        "claimed and completed through the API (`API cells`); the other transfer cells done in "
        "bulk transactions of SQLAlchemy Core, checked against the API-filled cells column "
        "by column; on PostgreSQL then `ANALYZE` (what autovacuum would do within a minute of "
        "the fill, done at once so the plans do not change during the timings). Load "
        "average: 1 min, after the fill.",
        "",
        *_fill_md(results["fill"]),
        "",
        "## Building the matrices",
        "",
        f"Median of {meta['repeats']} rounds after one warm-up, the two implementations "
        f"alternating within a round; denominator `{study['denominator']}`. `one`: "
        f"`--attack {study['filter']['attack']} --eps {study['filter']['eps']}` (one matrix); "
        "`all`: no filter (one matrix per configuration). advgrid: query = "
        "`Database.transfer_counts` (filters and metric pivot in SQL), build = "
        '`orchestrator.views.transfer.matrices`. Peer: query = `Database.cells(kind="transfer")` '
        "(every transfer cell and all its metrics), build = parse, filter and group in Python "
        "(the code `advgrid transfer` ran before). `rows read`: rows the query returned "
        "(counts, or cells with their metrics).",
        "",
        *_timings_md(results["timings"], results["ratios"]),
        "",
        "Peer time over advgrid time, medians (> 1: advgrid faster):",
        "",
        *_ratios_md(results["ratios"]),
        "",
        f"Checked: {'all ' if all(c['ok'] for c in checks) else 'NOT all '}"
        f"{len(checks)} results: the expected matrices, every entry filled with the counts "
        "and cell key written, the peer's matrices equal to advgrid's.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

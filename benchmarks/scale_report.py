"""The summary of ``benchmarks/scale.py``: ``<stem>.json`` and ``<stem>.md``.

The tables, the overhead shares with their definitions, the target check and the arithmetic
of what the measured driver ceiling means for a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

TARGET_SHARE, TARGET_CELL_S = 0.05, 1.0  # overhead ≤ 5 % of compute for cells of ≥ 1 s


def _f(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


def _overhead_md(rows: list[dict], peers: list[dict]) -> list[str]:
    lines = [
        "| backend | shape | cells | executor | MLflow | in flight | ms/cell | cells/s | "
        "vs bare Ray | driver CPU ms/cell | main thread ms/cell | claim ms/cell | "
        "cells/claim | commit ms/cell | MLflow drain s |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['shape']} | {r['cells']:,} | {r['executor']} | "
            f"{'on' if r['mlflow'] else 'off'} | {r['inflight']} | {r['ms_per_cell']:.2f} | "
            f"**{r['cells_per_s']:.0f}** | {_f(r['vs_bare_ray'], '.2f', '×')} | "
            f"{r['cpu_ms_per_cell']:.2f} | {r['main_cpu_ms_per_cell']:.2f} | "
            f"{r['claim_ms_per_cell']:.2f} | {r['cells'] / max(1, r['claims']):.1f} | "
            f"{r['commit_ms_per_cell']:.2f} | {r['drain_s']:.1f} |"
        )
    for p in peers:
        lines.append(
            f"| — | bare Ray loop | {p['cells']:,} | ray | — | {p['window']} | "
            f"{p['ms_per_cell']:.2f} | **{p['cells_per_s']:.0f}** | 1.00× | "
            f"{p['cpu_ms_per_cell']:.2f} | — | — | — | — | — |"
        )
    return lines


def _shares_md(rows: list[dict], label: Callable[[dict], str]) -> list[str]:
    lines = [
        "| run | workers | cells | wall s | Σ duration_s | bound s | idle share | "
        "driver CPU share | beyond bound |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {label(r)} | {r['workers']} | {r['cells']} | {r['run_s']:.2f} | "
            f"{r['sum_duration_s']:.2f} | {r['bound_s']:.2f} | **{r['idle_share']:.1%}** | "
            f"**{r['cpu_share']:.2%}** | {r['beyond_bound']:.1%} |"
        )
    return lines


def _speedup_md(rows: list[dict]) -> list[str]:
    lines = [
        "| run | Ray CPUs | wall s | vs best 1-CPU wall | Σ duration_s | train s | attack s | "
        "transfer s | critical path s | ray.init s | worker warm-up s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        k = r["by_kind_s"]
        lines.append(
            f"| {r['repeat'] + 1} | {r['workers']} | {r['run_s']:.2f} | **{r['speedup']:.2f}×** | "
            f"{r['sum_duration_s']:.2f} | {k['train']:.2f} | {k['attack']:.2f} | "
            f"{k['transfer']:.2f} | {r['critical_path_s']:.2f} | {r['ray_init_s']:.1f} | "
            f"{r['warm_workers_s']:.1f} |"
        )
    return lines


def _speedup(rows: list[dict]) -> float:
    best = {w: min(r["run_s"] for r in rows if r["workers"] == w) for w in (1, 2)}
    return best[1] / best[2]


def _target(sleep: list[dict], real: list[dict]) -> str:
    """Whether the overhead share stays within the target for cells of at least 1 s."""
    sleep = [r for r in sleep if not r.get("peer")]  # the target is the driver's
    long = [r for r in sleep if r["sleep_s"] >= TARGET_CELL_S]
    if not long:
        return "Target: not measured in this run (no synthetic cells of 1 s or more)."
    worst = max(max(r["idle_share"], r["cpu_share"]) for r in long)
    verdict = "met" if worst <= TARGET_SHARE else "missed"
    durations = sorted(
        {r["sleep_s"] for r in sleep if max(r["idle_share"], r["cpu_share"]) <= TARGET_SHARE}
    )
    held = ", ".join(f"{d:g} s" for d in durations) or "none measured"
    real_mean = [r["sum_duration_s"] / r["cells"] for r in real]
    mean = f" (the real study's cells average {min(real_mean):.2f} s)" if real_mean else ""
    return (
        f"Target ≤ {TARGET_SHARE:.0%} for cells of ≥ {TARGET_CELL_S:g} s: **{verdict}** "
        f"(worst idle or CPU share {worst:.1%} over the synthetic cells of ≥ "
        f"{TARGET_CELL_S:g} s); held for synthetic cells of: {held}{mean}."
    )


def _ceiling(rows: list[dict]) -> dict[str, dict]:
    """Per backend, the no-op Ray run (MLflow off) with the most cells per second."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["executor"] == "ray" and not r["mlflow"]:
            b = best.get(r["backend"])
            if b is None or r["cells_per_s"] > b["cells_per_s"]:
                best[r["backend"]] = r
    return best


def _mlflow_rate(rows: list[dict]) -> float | None:
    """The best rate at which the logging thread wrote child runs: cells over the whole run."""
    rates = [r["cells"] / r["run_s"] for r in rows if r["mlflow"]]
    return max(rates) if rates else None


def _cluster_md(rows: list[dict]) -> list[str]:
    best = _ceiling(rows)
    if not best:
        return ["Not measured in this run (needs the overhead part on Ray)."]
    mlflow = _mlflow_rate(rows)
    lines = [
        "The driver is one process doing, per cell, a share of a claim transaction, the payload, "
        "a submit, a commit transaction and the bookkeeping around them. Its ceiling is the "
        "no-op rate above: nothing but that work. A cluster finishes `concurrent / duration` "
        "cells per second; the driver keeps up while that stays below its ceiling, and its "
        "load is that rate over the ceiling. Ceilings measured here (best no-op Ray run, "
        "MLflow off): "
        + "; ".join(
            f"{b}: **{r['cells_per_s']:.0f} cells/s** ({r['ms_per_cell']:.1f} ms per cell, "
            f"{r['main_cpu_ms_per_cell']:.1f} ms of it CPU on the loop's thread; "
            f"{r['shape']}, {r['cells']:,} cells)"
            for b, r in best.items()
        )
        + ".",
        "",
        "| cluster | concurrent cells | cell s | cells/s needed | "
        + " | ".join(f"{b}: driver load" for b in best)
        + " | MLflow logging load |",
        "|---|---:|---:|---:|" + "---:|" * (len(best) + 1),
    ]
    for label, conc in (("64 GPUs, 1 GPU per cell", 64), ("64 GPUs, 0.25 GPU per cell", 256)):
        for cell_s in (1.0, 10.0, 60.0):
            need = conc / cell_s
            loads = " | ".join(f"{need / r['cells_per_s']:.0%}" for r in best.values())
            logging = "—" if mlflow is None else f"{need / mlflow:.0%}"
            lines.append(f"| {label} | {conc} | {cell_s:g} | {need:.1f} | {loads} | {logging} |")
    shortest = "; ".join(
        f"{b}: {64 / r['cells_per_s']:.2f} s at 64 concurrent, "
        f"{256 / r['cells_per_s']:.2f} s at 256"
        for b, r in best.items()
    )
    lines += [
        "",
        f"Shortest cell one driver keeps fed (concurrent cells / ceiling): {shortest}. Shorter "
        "cells leave GPUs idle waiting for the driver, whatever the in-flight window. With "
        "MLflow on, the logging thread shares the driver's interpreter and CPU: see the "
        "MLflow rows above for how much it slows the loop while it logs. It also has a "
        "ceiling of its own, "
        + ("not measured in this run" if mlflow is None else f"{mlflow:.0f} cells/s")
        + " here (one child run per cell on the SQLite MLflow store; the best MLflow row's "
        "cells over its whole run): above 100 % logging load the log falls behind and "
        "`Driver.run` waits for it at the end (up to 600 s; what is left then is logged by "
        "the next run). The ceilings come "
        "from a driver sharing this machine's cores with the Ray workers, the raylet and, for "
        "PostgreSQL, the server: a head node with cores of its own does better.",
    ]
    return lines


def write(stem: Path, results: dict) -> None:
    """``stem``.json (every number) and ``stem``.md (the tables and the arithmetic)."""
    meta, over = results["meta"], results["overhead"]
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    skipped = "".join(f" Skipped: {b}: {why}." for b, why in meta["skipped"].items())
    load = meta["load_average_before"][0], meta["load_average_after"][0]
    lines = [
        f"# Driver scale ({meta['cpus']} CPUs{', quick run' if meta['quick'] else ''})",
        "",
        f"Versions: {versions}. Whole run: {meta['total_s'] / 60:.1f} min. Load average "
        f"(1 min) {load[0]:.1f} at the start and {load[1]:.1f} at the end: the machine is "
        "shared, so read ratios within a run." + skipped,
        "",
        "## Per-cell overhead (no-op cells)",
        "",
        f"`Driver.prepare` + `Driver.run` on the real SQL index over no-op cells, Ray with "
        f"{meta['slots']} CPUs (`ray.init` took {_f(meta['ray_init_s'])} s, paid once before "
        "timing, as is starting the workers). `ms/cell` and `cells/s` are the run loop's wall "
        "time (claim to last commit; with MLflow on, not the wait for the logging thread to "
        "finish, which is `MLflow drain`) over the cells. Driver CPU is the whole driver "
        "process (loop, heartbeat, MLflow and Ray client threads); main thread is the loop "
        "alone. `claim` and `commit` are the wall time of the driver's `Database.claim` and "
        "`Database.complete` calls (one transaction each), per cell; `cells/claim` how many "
        "cells a claim took on average (the last, empty claim included). "
        "`flat`: train cells only, one Ray task each; `grid`: train → attack → "
        "transfer with dependencies, 8 transfer cells per task. The bare Ray loop submits "
        "the same no-op function with the same kind of payload, the same in-flight window, "
        "and takes results with `ray.wait(num_returns=1)`. `in flight` is the driver's "
        "default window (twice the cells the cluster runs at once) or, on the last Ray row of "
        f"a shape, {meta.get('wide') or '—'}: the window for 256 cells of 0.25 GPU on 64 "
        "GPUs. Checked after every run: each cell done with exactly one attempt, ending `ok`; "
        "with MLflow on, every cell logged.",
        "",
        *_overhead_md(over["driver"], over["bare_ray"]),
        "",
    ]
    if results["speedup"]:
        sp = results["speedup"]
        lines += [
            "## Speedup from 1 to 2 worker processes (real study)",
            "",
            f"The 40-cell digits study (4 train, 9 attack, 27 transfer cells, each asking for "
            "one CPU; torch pinned to one thread per cell) on a fresh `ray.init(num_cpus=1)`, "
            "then `num_cpus=2`, alternating, SQLite index, MLflow off. Wall time is "
            "`Driver.run`; Ray start-up and worker warm-up (importing the cell code) are paid "
            f"before it. The {sp[0]['identical_transfer_metrics']} transfer cells' metrics are "
            f"identical in every run (checked). **Speedup {_speedup(sp):.2f}×** (best wall "
            "with 1 CPU over best wall with 2). Σ duration_s grows with 2 CPUs when the two "
            "cells running at once compete for the cores with each other and with the "
            "machine's other load.",
            "",
            *_speedup_md(sp),
            "",
        ]
    real = results["speedup"]
    lines += [
        "## Overhead as a share of cell compute",
        "",
        "Σ duration_s is the sum of the cells' own `duration_s` (measured by the worker "
        "around the cell's work, stored on the cell). With W workers and wall time T of "
        "`Driver.run`:",
        "",
        "- **idle share** = (T × W − Σ duration_s) / Σ duration_s: worker time not spent "
        "inside a cell — the driver, Ray's dispatch, waits on dependencies, the tail;",
        "- **driver CPU share** = CPU time of the driver process during `Driver.run` "
        "(`time.process_time`, all its threads) / Σ duration_s;",
        "- **beyond bound** = (T − B) / B with B = max(Σ duration_s / W, critical path): time "
        "lost beyond what any scheduler could do (the critical path is the longest chain of "
        "cell durations through the dependencies).",
        "",
        "Synthetic cells sleep a fixed time and have no dependencies, so their idle share is "
        "scheduling alone; each study is sized to an ideal wall time of "
        f"{meta['sleep_wall']:g} s on the {meta['slots']} Ray CPUs. The bare Ray loop rows run "
        "the same sleeping tasks with the driver's default window (their CPU share is that "
        "loop's): what Ray alone costs. " + _target(results["sleep"], real),
        "",
        *_shares_md(
            [
                *({**r, "label": f"real study, run {r['repeat'] + 1}"} for r in real),
                *results["sleep"],
            ],
            lambda r: r.get("label") or f"sleep {r['sleep_s']:g} s, {r['backend']}",
        ),
        "",
        "## What it means for a cluster",
        "",
        *_cluster_md(over["driver"]),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

"""``advgrid run`` and ``advgrid plan`` as functions: the CLI only parses and renders."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from orchestrator.config import Settings
from orchestrator.run import checkpoints
from orchestrator.run.driver import Driver, Summary
from orchestrator.run.executor import Executor
from orchestrator.run.inline_executor import InlineExecutor
from orchestrator.run.ray_executor import RayExecutor
from orchestrator.study.plan import expand
from orchestrator.study.schema import Study
from storage import CellRow, Database
from storage.enums import CellKind, CellState
from tasks.cells import CELL_KINDS


@dataclass(frozen=True)
class RunOptions:
    executor: str = "ray"
    ray_address: str = "local"
    max_inflight: int | None = None
    retry_failed: bool = False
    mlflow: bool = True
    quiet: bool = False


def _describe(counts: dict[str, int]) -> str:
    return " + ".join(f"{counts[k]} {k}" for k in CELL_KINDS if k in counts)


def run_study(
    study: Study, settings: Settings, opts: RunOptions, console: Console | None = None
) -> tuple[Summary, list[CellRow]]:
    """Plan, record and run ``study``; returns the summary and its transfer cells."""
    console = console or Console(stderr=True, quiet=True)
    if opts.quiet:
        console = Console(stderr=True, quiet=True)
    plan = expand(study)
    file_digests = checkpoints.import_all(study, settings.store_root)  # checked before any write
    db = Database.open(settings.db_url)
    driver = Driver(
        plan,
        settings,
        db,
        max_inflight=opts.max_inflight,
        console=console,
        mlflow=opts.mlflow,
        file_digests=file_digests,
    )
    study_id, summary = driver.prepare(retry_failed=opts.retry_failed)
    total = len(plan.cells)
    console.print(
        f"study [bold]{study.name}[/]: {total} cells ({_describe(summary.planned)}), "
        f"{summary.new_cells} new, {summary.to_run} to run"
    )
    if summary.to_run == 0:
        console.print(f"Nothing to run: all {total} cells of study {study.name!r} are done.")
        if opts.mlflow and db.unlogged_done(study_id):
            driver.run(study_id, summary, InlineExecutor())
        summary.counts = db.counts(study_id)
        return summary, db.cells(study_id, kind=CellKind.TRANSFER)
    start = time.perf_counter()
    executor = make_executor(opts.executor, opts.ray_address)
    console.print(
        f"running on {executor.name}"
        + (f" ({opts.ray_address})" if executor.name == "ray" else "")
        + f", started in {time.perf_counter() - start:.1f} s"
    )
    try:
        driver.run(study_id, summary, executor)
    finally:
        executor.shutdown()
    _report(console, summary)
    return summary, db.cells(study_id, kind=CellKind.TRANSFER)


def _report(console: Console, s: Summary) -> None:
    console.print(
        f"ran {s.ran} cells in {s.elapsed_s:.1f} s: {s.done} done, {s.failed} failed"
        + (f", {s.dropped} results dropped (lease lost)" if s.dropped else "")
    )
    bad = {
        state: n
        for states in s.counts.values()
        for state, n in states.items()
        if state in (CellState.FAILED, CellState.QUARANTINED) and n
    }
    if bad or s.blocked:
        console.print(
            f"[red]not finished:[/] {bad or ''}"
            + (f" {len(s.blocked)} cells blocked by failed dependencies" if s.blocked else "")
            + f" — see `advgrid status {s.study}`"
        )


def plan_only(study: Study, settings: Settings, *, existing: bool) -> list[dict]:
    """Cells by kind: planned, already done, to run. Reads the index only if it exists."""
    plan = expand(study)
    done: set[str] = set()
    if existing and _db_exists(settings.db_url):
        db = Database.open(settings.db_url)
        row = db.find_study(study.name)
        if row is not None:
            done = {c.key for c in db.cells(row.id, state=CellState.DONE)}
    rows = []
    for kind, n in plan.counts().items():
        d = sum(1 for c in plan.cells if c.kind == kind and c.key in done)
        rows.append({"kind": kind, "planned": n, "done": d, "to_run": n - d})
    return rows


def _db_exists(url: str) -> bool:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).exists()
    return True


def make_executor(kind: str, ray_address: str) -> Executor:
    """The executor ``advgrid run --executor KIND`` runs cells on (``inline`` or ``ray``)."""
    if kind == "inline":
        return InlineExecutor()
    return RayExecutor(ray_address)

"""Live progress of a run: done / running / failed, cells per minute, ETA; and a bar per
running cell that reports how far it is (epochs, batches; :mod:`tasks.progress`), read from
the store every few seconds."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """A rich progress bar over the cells this run has to do."""

    def __init__(self, console: Console, total: int, store_root: str | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=console.quiet or not console.is_terminal,
        )
        self._task = self._progress.add_task("[bold]cells", total=total, status="", rate="")
        self._store_root = store_root if not self._progress.disable else None
        self._cells: dict[str, Any] = {}  # cell key -> its task id
        self._looked = 0.0

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, summary: Any, *, running: int) -> None:
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{summary.ran / elapsed * 60:.0f} cells/min" if elapsed > 1 and summary.ran else ""
        status = (
            f"[green]{summary.done} done[/] [cyan]{running} running[/] "
            f"[red]{summary.failed} failed[/]"
        )
        self._progress.update(self._task, completed=summary.done, status=status, rate=rate)

    def cells(self, running: dict[str, str], every_s: float = 2.0) -> None:
        """One bar per running cell (``{key: kind}``) that has reported progress, from the
        store, at most every ``every_s`` seconds; bars of cells no longer running go."""
        if self._store_root is None or time.monotonic() - self._looked < every_s:
            return
        self._looked = time.monotonic()
        from storage import ArtifactStore
        from storage.errors import StorageError

        store = ArtifactStore(self._store_root)
        for key in [k for k in self._cells if k not in running]:
            self._progress.remove_task(self._cells.pop(key))
        for key, kind in running.items():
            try:
                report = store.progress(key)
            except StorageError:
                continue
            if not report:
                continue
            eta, done = report.get("eta_s"), float(report.get("done") or 0)
            status = f"{report.get('unit', '')} {done:.1f}/{report.get('of')}"
            rate = f"ETA {eta:.0f} s" if isinstance(eta, int | float) else ""
            label = f"  {kind} {report.get('what', key[:12])}"
            if key not in self._cells:
                self._cells[key] = self._progress.add_task(
                    label, total=report.get("of") or 1, status=status, rate=rate
                )
            self._progress.update(self._cells[key], completed=done, status=status, rate=rate)

"""Live progress of a run: done / running / failed, cells per minute, ETA."""

from __future__ import annotations

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

    def __init__(self, console: Console, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]cells"),
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
        self._task = self._progress.add_task("run", total=total, status="", rate="")

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

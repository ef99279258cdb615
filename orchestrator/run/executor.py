"""Executors: where ``tasks.cells.run_cell`` runs, behind one :class:`Executor` protocol.

Executors take plain-data payloads and report :class:`Outcome` objects, so the driver does
not know which one it talks to. :class:`~orchestrator.run.inline_executor.InlineExecutor`
runs cells one at a time in this process (debugging, most tests);
:class:`~orchestrator.run.ray_executor.RayExecutor` submits them as Ray tasks with the
resources the study asks for per cell kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Outcome:
    """What came back for one submitted cell: a result dict or an error text."""

    cell_id: int
    result: dict[str, Any] | None
    error: str | None


class Executor(Protocol):
    """What the driver needs of an executor."""

    name: str

    def default_inflight(self, needs: list[dict[str, float]]) -> int:
        """How many cells to keep in flight when the study does not say.

        Args:
            needs: The ``{num_cpus, num_gpus}`` of each cell kind to run.
        """
        ...

    def submit(self, cell_id: int, payload: dict, resources: dict[str, float]) -> None:
        """Start one cell (its result comes back from :meth:`poll`)."""
        ...

    def submit_group(
        self, cell_ids: list[int], payloads: list[dict], resources: dict[str, float]
    ) -> None:
        """Start cells that run one after another in one worker, each with its outcome."""
        ...

    def poll(self, timeout: float) -> list[Outcome]:
        """The outcomes of cells that have finished, waiting up to ``timeout`` seconds."""
        ...

    def cancel_all(self) -> list[int]:
        """Stop every cell in flight; returns their cell ids."""
        ...

    def shutdown(self) -> None:
        """Release what the executor started (a Ray cluster it owns)."""
        ...

"""The executor that runs each cell in this process, one at a time, when the driver polls."""

from __future__ import annotations

import traceback
from collections import deque

from orchestrator.run.executor import Outcome


class InlineExecutor:
    """Runs each cell in this process when the driver polls; same contract as Ray."""

    name = "inline"

    def __init__(self) -> None:
        self._queue: deque[tuple[int, dict]] = deque()

    def default_inflight(self, needs: list[dict[str, float]]) -> int:
        return 1

    def submit(self, cell_id: int, payload: dict, resources: dict[str, float]) -> None:
        self._queue.append((cell_id, payload))

    def submit_group(
        self, cell_ids: list[int], payloads: list[dict], resources: dict[str, float]
    ) -> None:
        for cell_id, payload in zip(cell_ids, payloads, strict=True):
            self.submit(cell_id, payload, resources)

    def poll(self, timeout: float) -> list[Outcome]:
        if not self._queue:
            return []
        from tasks.cells import run_cell

        cell_id, payload = self._queue.popleft()
        try:
            return [Outcome(cell_id, run_cell(payload), None)]
        except Exception:
            return [Outcome(cell_id, None, traceback.format_exc())]

    def cancel_all(self) -> list[int]:
        ids = [cid for cid, _ in self._queue]
        self._queue.clear()
        return ids

    def shutdown(self) -> None:
        pass

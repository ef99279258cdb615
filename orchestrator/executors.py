"""Executors: where ``tasks.cells.run_cell`` runs.

Both executors take plain-data payloads and report ``Outcome`` objects, so the driver does
not know which one it talks to. :class:`InlineExecutor` runs cells one at a time in this
process (debugging, most tests); :class:`RayExecutor` submits them as Ray tasks with the
resources the study asks for per cell kind.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import AdvgridError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What came back for one submitted cell: a result dict or an error text."""

    cell_id: int
    result: dict[str, Any] | None
    error: str | None


class InlineExecutor:
    """Runs each cell in this process when the driver polls; same contract as Ray."""

    name = "inline"

    def __init__(self) -> None:
        self._queue: deque[tuple[int, dict]] = deque()

    def default_inflight(self) -> int:
        return 1

    def submit(self, cell_id: int, payload: dict, resources: dict[str, float]) -> None:
        self._queue.append((cell_id, payload))

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


class RayExecutor:
    """Submits cells as Ray tasks and collects them with ``ray.wait``.

    ``address`` is ``local`` (start a private cluster on this machine), ``auto`` (the
    cluster this machine belongs to) or ``ray://host:10001``. A cluster already
    initialized in this process (tests, notebooks) is reused and left running.
    """

    name = "ray"

    def __init__(self, address: str = "local") -> None:
        import ray

        self._ray = ray
        self._owned = False
        if not ray.is_initialized():
            target = None if address in ("", "local") else address
            start = time.perf_counter()
            try:
                ray.init(
                    address=target,
                    include_dashboard=False,
                    log_to_driver=True,
                    configure_logging=False,
                )
            except Exception as exc:
                raise AdvgridError(_ray_hint(address, exc)) from exc
            self._owned = True
            log.info("Ray up in %.1f s at %s", time.perf_counter() - start, address)
        from tasks.cells import run_cell

        self._remote = ray.remote(run_cell)
        self._refs: dict[Any, int] = {}

    def default_inflight(self) -> int:
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(2, 2 * cpus)

    def submit(self, cell_id: int, payload: dict, resources: dict[str, float]) -> None:
        ref = self._remote.options(
            num_cpus=resources.get("num_cpus", 1),
            num_gpus=resources.get("num_gpus", 0),
            max_retries=2,  # worker or node death; exceptions in the cell are not retried here
            name=f"advgrid:{payload['kind']}:{payload['key'][:12]}",
        ).remote(payload)
        self._refs[ref] = cell_id

    def poll(self, timeout: float) -> list[Outcome]:
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        out = []
        for ref in ready:
            cell_id = self._refs.pop(ref)
            try:
                out.append(Outcome(cell_id, self._ray.get(ref), None))
            except Exception as exc:  # RayTaskError carries the remote traceback
                out.append(Outcome(cell_id, None, str(exc) or repr(exc)))
        return out

    def cancel_all(self) -> list[int]:
        ids = list(self._refs.values())
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        return ids

    def shutdown(self) -> None:
        if self._owned:
            self._ray.shutdown()


def _ray_hint(address: str, exc: Exception) -> str:
    text = f"could not connect to Ray at {address!r}: {exc}"
    if "auth" in str(exc).lower() and not os.environ.get("RAY_AUTH_MODE"):
        text += (
            "\nThis cluster uses token authentication: run with RAY_AUTH_MODE=token "
            "and the cluster's token in ~/.ray/auth_token."
        )
    return text


def make(kind: str, ray_address: str) -> InlineExecutor | RayExecutor:
    if kind == "inline":
        return InlineExecutor()
    return RayExecutor(ray_address)

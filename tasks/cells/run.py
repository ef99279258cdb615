"""``run_cell(payload) -> result``: what a worker does for one cell."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

import torch

from storage import ArtifactStore
from tasks.cells.kinds import CELL_KINDS
from tasks.cells.payload import CellPayload, CellResult
from tasks.cells.worker import precision_context, worker_name
from tasks.errors import recurs


def parse_payload(payload: Mapping[str, Any]) -> CellPayload:
    """The typed payload of a plain one: its spec parsed by the spec models of its kind.

    Raises:
        UnknownComponentError: The kind is not registered here.
        pydantic.ValidationError: The payload or its spec does not fit the schema.
    """
    typed = CELL_KINDS[payload["kind"]].parse(payload["spec"])
    return CellPayload.model_validate({**payload, "spec": typed})


RECURS = (
    "this error recurs on every attempt (bad input, not a flaky worker): the cell is "
    "quarantined at once; fix the input, then `advgrid run STUDY.yaml --retry-failed`\n"
)


def run_cell(payload: dict[str, Any] | CellPayload) -> dict[str, Any]:
    """Run one cell with the runner of its kind (:data:`tasks.cells.CELL_KINDS`).

    Args:
        payload: A :class:`CellPayload`, or the plain dict it travels as.

    Returns:
        The :class:`CellResult` as a plain dict: ``metrics``, ``artifacts``, ``worker``,
        ``duration_s``, ``started_at`` and ``ended_at``; for an error that would recur on
        every attempt (:func:`tasks.errors.recurs`), ``{"error": traceback, "recurs": True}``
        instead. Any other error is raised.
    """
    started_at, start = time.time(), time.perf_counter()
    cell = payload if isinstance(payload, CellPayload) else parse_payload(payload)
    store = ArtifactStore(cell.store)
    threads = torch.get_num_threads()
    # the thread count changes float reduction order: pin it to the cell's CPU share so the
    # same cell gives the same numbers in-process and on any Ray worker
    torch.set_num_threads(max(1, int(cell.num_cpus)))
    try:
        with precision_context(getattr(cell.spec, "precision", "fp32")):
            output = CELL_KINDS[cell.kind].run(cell, store)
    except Exception as exc:
        if not recurs(exc):
            raise  # the executor reports it; the cell is tried again
        # bad input: every attempt would fail the same way, so it says so in its result
        return {"error": RECURS + traceback.format_exc(), "recurs": True}
    finally:
        torch.set_num_threads(threads)
    worker = worker_name()
    duration_s = time.perf_counter() - start
    return CellResult(
        **output.model_dump(),
        worker=worker,
        duration_s=duration_s,
        started_at=started_at,
        ended_at=time.time(),
    ).wire()

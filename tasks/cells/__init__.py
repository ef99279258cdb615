"""What a worker does for one cell: ``run_cell(payload) -> result``.

The payload is plain data (:class:`CellPayload`): the cell's normalized ``spec``, its
``kind``, the digests of the artifacts it reads (``inputs``), the artifact-store root, the
batch size and ``allow_imports`` (whether the study trusts model factories named by import
path: without it, such a model is refused before its module is imported). Names are
resolved here, on the worker. The result (:class:`CellResult`) is small: metrics and the
records of the artifacts the cell wrote. Tensors never travel back to the driver.

Modules:

- :mod:`tasks.cells.specs`: the typed spec of each kind of cell;
- :mod:`tasks.cells.payload`: the payload in and the result back;
- :mod:`tasks.cells.worker`: what every kind shares (cache, device, datasets and models
  by digest, precision and layout, the defended model);
- :mod:`tasks.cells.train`, :mod:`tasks.cells.attack`, :mod:`tasks.cells.transfer`: one
  runner per kind, with the metrics results rows show for it;
- :mod:`tasks.cells.kinds`: :data:`CELL_KINDS`, the table of kinds;
- :mod:`tasks.cells.run`: :func:`run_cell`, which dispatches through it.
"""

from __future__ import annotations

from tasks.cells.kinds import CELL_KINDS, CellKindInfo, CellKinds, PlanBuilder
from tasks.cells.payload import CellOutput, CellPayload, CellResult
from tasks.cells.run import parse_payload, run_cell
from tasks.cells.specs import (
    AttackSpec,
    CellSpec,
    DefenseModelSpec,
    KindSpec,
    SpecModel,
    TrainSpec,
    TransferSpec,
)
from tasks.cells.worker import CODE_VERSION, device, worker_name

__all__ = [
    "CELL_KINDS",
    "CODE_VERSION",
    "AttackSpec",
    "CellKindInfo",
    "CellKinds",
    "CellOutput",
    "CellPayload",
    "CellResult",
    "CellSpec",
    "DefenseModelSpec",
    "KindSpec",
    "SpecModel",
    "TrainSpec",
    "TransferSpec",
    "PlanBuilder",
    "device",
    "parse_payload",
    "run_cell",
    "worker_name",
]

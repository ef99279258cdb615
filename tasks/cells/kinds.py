"""The kinds of cell, in one table: what runs a cell of each kind and what its specs,
results rows and submissions need to know about it.

Everything that lists the kinds derives from :data:`CELL_KINDS` (the driver's task
groups, ``advgrid results --kind``, the summary metrics of results rows, the run
summary) or from :class:`storage.enums.CellKind`, its keys (``execution.resources``,
the index's queries, which cannot import this layer). A new kind adds its member to
``CellKind``, its module here and its entry below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import tasks.cells.attack as attack
import tasks.cells.train as train
import tasks.cells.transfer as transfer
from storage import ArtifactStore
from storage.enums import CellKind
from tasks.cells.payload import CellOutput, CellPayload
from tasks.cells.specs import SpecModel


@dataclass(frozen=True)
class CellKindInfo:
    """One kind of cell.

    Attributes:
        kind: Its name, as the index stores it and ``execution.resources`` keys it.
        run: The worker's runner for one cell of the kind.
        specs: The spec models its cells have (:mod:`tasks.cells.specs`).
        summary_metrics: The metrics ``advgrid results`` shows for it, in order.
        group_by: The input role whose artifact cells of this kind claimed together
            share, so they run as one task; None when each runs on its own.
    """

    kind: CellKind
    run: Callable[[CellPayload, ArtifactStore], CellOutput]
    specs: tuple[type[SpecModel], ...]
    summary_metrics: tuple[str, ...]
    group_by: str | None = None


CELL_KINDS: Mapping[CellKind, CellKindInfo] = MappingProxyType(
    {
        CellKind.TRAIN: CellKindInfo(
            CellKind.TRAIN, train.run_train, train.SPECS, train.SUMMARY_METRICS
        ),
        CellKind.ATTACK: CellKindInfo(
            CellKind.ATTACK, attack.run_attack, attack.SPECS, attack.SUMMARY_METRICS
        ),
        CellKind.TRANSFER: CellKindInfo(
            CellKind.TRANSFER,
            transfer.run_transfer,
            transfer.SPECS,
            transfer.SUMMARY_METRICS,
            group_by=transfer.GROUP_BY,
        ),
    }
)
"""Every kind of cell, in the order plans list them: train, attack, transfer."""

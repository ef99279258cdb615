"""The kinds of cell, in one table: what runs a cell of each kind and what its specs,
results rows and submissions need to know about it.

Everything that lists the kinds derives from :data:`CELL_KINDS` (the driver's task
groups, ``advgrid results --kind``, the summary metrics of results rows, the run
summary, the payload's spec models) or, in the index, which cannot import this layer, from
the plain kind strings it stores. The three built-in kinds are :class:`storage.enums.CellKind`
members, registered at the end of this module; another kind is one module that defines
its runner and spec model and registers a :class:`CellKindInfo` whose ``plan`` adds its
cells (``docs/design.md`` has a worked example). Third-party packages add kinds through the
entry-point group ``advgrid.cell_kinds``: each entry point names a module that registers
its kinds when imported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from pydantic import TypeAdapter

import tasks.cells.attack as attack
import tasks.cells.train as train
import tasks.cells.transfer as transfer
from storage import ArtifactStore
from storage.enums import CellKind
from tasks.cells.payload import CellOutput, CellPayload
from tasks.cells.specs import SpecModel
from tasks.errors import UnknownComponentError

log = logging.getLogger(__name__)


class PlannedLike(Protocol):
    """A cell already in the plan, as a kind's ``plan`` hook sees it."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def spec(self) -> dict: ...


class PlanBuilder(Protocol):
    """What a kind's ``plan`` hook may use of the plan (:class:`orchestrator.study.plan.Plan`)."""

    @property
    def cells(self) -> Sequence[PlannedLike]: ...

    def add(
        self, kind: str, spec: dict, inputs: dict[str, tuple[str, ...]], *, once: bool = False
    ) -> PlannedLike: ...


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
        plan: Adds the kind's cells once the study's train, attack and transfer cells are
            planned (it sees them through :class:`PlanBuilder`); None for the built-in
            kinds, which the study planner makes itself.
        row_fields: The fields of an ``advgrid results`` row that the kind's spec says
            differently from the common reading (``dataset``, ``model``, ``defense``,
            ``attack``, ``params``), from the plain spec; None when the common one fits.
    """

    kind: str
    run: Callable[[CellPayload, ArtifactStore], CellOutput]
    specs: tuple[type[SpecModel], ...]
    summary_metrics: tuple[str, ...]
    group_by: str | None = None
    plan: Callable[[PlanBuilder], None] | None = None
    row_fields: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    _adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        union: Any = self.specs[0]
        for model in self.specs[1:]:
            union = union | model
        object.__setattr__(self, "_adapter", TypeAdapter(union))

    def parse(self, spec: Mapping[str, Any]) -> SpecModel:
        """The typed spec of a cell of this kind; raises :class:`pydantic.ValidationError`."""
        parsed: SpecModel = self._adapter.validate_python(spec)
        return parsed


class CellKinds(Mapping[str, CellKindInfo]):
    """Kind name → :class:`CellKindInfo`, in the order kinds were registered (the order
    plans and summaries list them)."""

    def __init__(self) -> None:
        self._kinds: dict[str, CellKindInfo] = {}
        self._plugins_loaded = False

    def register(self, info: CellKindInfo) -> CellKindInfo:
        """Add a kind; a name registered twice is an error."""
        if info.kind in self._kinds:
            raise ValueError(f"cell kind '{info.kind}' is already registered")
        if not info.kind.replace("_", "").isalnum() or len(info.kind) > 32:
            raise ValueError(f"cell kind '{info.kind}' must be snake_case, at most 32 characters")
        self._kinds[info.kind] = info
        return info

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group="advgrid.cell_kinds"):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except Exception:  # a broken plugin must not break the built-ins
                log.exception("could not load cell kind plugin %s", ep.value)

    def __getitem__(self, kind: str) -> CellKindInfo:
        self._load_plugins()
        try:
            return self._kinds[kind]
        except KeyError:
            known = ", ".join(self._kinds)
            raise UnknownComponentError(
                f"unknown cell kind {kind!r}; this advgrid runs {known} (a kind another "
                "advgrid registered needs the package that registers it here too)"
            ) from None

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(list(self._kinds))

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._kinds)


CELL_KINDS = CellKinds()
"""Every kind of cell, in the order plans list them: train, attack, transfer, then others."""

CELL_KINDS.register(
    CellKindInfo(
        CellKind.TRAIN,
        train.run_train,
        train.SPECS,
        train.SUMMARY_METRICS,
        row_fields=train.row_fields,
    )
)
CELL_KINDS.register(
    CellKindInfo(CellKind.ATTACK, attack.run_attack, attack.SPECS, attack.SUMMARY_METRICS)
)
CELL_KINDS.register(
    CellKindInfo(
        CellKind.TRANSFER,
        transfer.run_transfer,
        transfer.SPECS,
        transfer.SUMMARY_METRICS,
        group_by=transfer.GROUP_BY,
        row_fields=transfer.row_fields,
    )
)

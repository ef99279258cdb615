"""Cells: insert a study's cells once, read them back with their metrics and artifacts."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.orm import Session

from storage.core import DatabaseCore, chunks
from storage.enums import CellState
from storage.errors import NotFoundError
from storage.models import AttemptModel, CellArtifactModel, CellModel, MetricModel
from storage.rows import AttemptRow, CellRow, NewCell, attempt_row, cell_row

log = logging.getLogger(__name__)

_CHUNK = 500  # keys per existence check: well under every backend's bound-parameter limit
_INSERT_BATCH = 5000


class CellsMixin(DatabaseCore):
    """Cell queries of :class:`storage.Database`."""

    def add_cells(self, study_id: int, cells: Iterable[NewCell]) -> int:
        """Insert the cells whose key is new to the study.

        Safe to run concurrently from several drivers: a key inserted by another driver in
        the meantime is skipped, not an error.

        Args:
            study_id: The study.
            cells: Cells to add; keys already in the study (or repeated) are skipped.

        Returns:
            How many cells were inserted.
        """
        new = {c.key: c for c in cells}
        with self.session_scope() as s:
            if self.dialect == "postgresql":
                inserted = self._insert_new_pg(s, study_id, list(new.values()))
            else:
                inserted = self._insert_new_sqlite(s, study_id, new)
        log.debug("study %s: %d new cells", study_id, inserted)
        return inserted

    def _insert_new_pg(self, s: Session, study_id: int, cells: list[NewCell]) -> int:
        # known keys are left out first (sending 100 000 rows to have them all ignored costs
        # seconds on a resume); ON CONFLICT DO NOTHING still skips those another driver
        # inserts concurrently, and RETURNING counts the rows really inserted
        known = set(s.scalars(select(CellModel.key).where(CellModel.study_id == study_id)))
        cells = [c for c in cells if c.key not in known]
        if not cells:
            return 0
        stmt = self._insert_ignore(CellModel.__table__, ["study_id", "key"])
        stmt = stmt.returning(CellModel.__table__.c.id)
        conn = s.connection()
        return sum(
            len(conn.execute(stmt, [_insert_row(study_id, c) for c in batch]).all())
            for batch in chunks(cells, _INSERT_BATCH)
        )

    def _insert_new_sqlite(self, s: Session, study_id: int, new: dict[str, NewCell]) -> int:
        # BEGIN IMMEDIATE holds the write lock from the existence check to the insert
        for chunk in chunks(list(new), _CHUNK):
            q = select(CellModel.key).where(
                CellModel.study_id == study_id, CellModel.key.in_(chunk)
            )
            for key in s.scalars(q):
                del new[key]
        rows = [_insert_row(study_id, c) for c in new.values()]
        for batch in chunks(rows, _INSERT_BATCH):
            s.execute(insert(CellModel), list(batch))
        return len(rows)

    def cells(
        self, study_id: int, *, kind: str | None = None, state: str | None = None
    ) -> list[CellRow]:
        """Cells of a study in insertion order, with metrics and artifact roles.

        Args:
            study_id: The study.
            kind: Only cells of this kind.
            state: Only cells in this state.

        Returns:
            The cells (three queries whatever their number).
        """
        q = select(CellModel).where(CellModel.study_id == study_id)
        if kind is not None:
            q = q.where(CellModel.kind == kind)
        if state is not None:
            q = q.where(CellModel.state == state)
        with self.session_scope(write=False) as s:
            return self._rows(s, q.order_by(CellModel.id))

    def get_cell(self, study_id: int, key: str) -> CellRow:
        """The cell ``key`` of a study.

        Raises:
            NotFoundError: No such cell.
        """
        q = select(CellModel).where(CellModel.study_id == study_id, CellModel.key == key)
        with self.session_scope(write=False) as s:
            rows = self._rows(s, q)
        if not rows:
            raise NotFoundError(
                f"no cell with key {key!r} in study id {study_id} of {self.masked_url}; "
                "`advgrid plan STUDY.yaml` lists the cells of a study"
            )
        return rows[0]

    def states_of(self, keys: Iterable[str]) -> dict[str, set[str]]:
        """The states of the cells with these keys, in every study that has them (a key
        absent from the index is absent from the answer)."""
        wanted = sorted(set(keys))
        out: dict[str, set[str]] = {}
        with self.session_scope(write=False) as s:
            for batch in chunks(wanted, 500):  # bound parameters of one IN list
                q = select(CellModel.key, CellModel.state).where(CellModel.key.in_(list(batch)))
                for key, state in s.execute(q):
                    out.setdefault(key, set()).add(state)
        return out

    def _rows(self, s: Session, query: Select[Any]) -> list[CellRow]:
        """Cells selected by ``query`` with their metrics and artifacts (no N+1)."""
        cells = list(s.scalars(query))
        if not cells:
            return []
        ids = query.with_only_columns(CellModel.id).order_by(None)
        metrics: dict[int, dict[str, float]] = defaultdict(dict)
        for cid, name, value in s.execute(
            select(MetricModel.cell_id, MetricModel.name, MetricModel.value).where(
                MetricModel.cell_id.in_(ids)
            )
        ):
            metrics[cid][name] = value
        arts: dict[int, dict[str, str]] = defaultdict(dict)
        cols = CellArtifactModel.cell_id, CellArtifactModel.role, CellArtifactModel.digest
        for cid, role, digest in s.execute(select(*cols).where(CellArtifactModel.cell_id.in_(ids))):
            arts[cid][role] = digest
        return [cell_row(c, metrics[c.id], arts[c.id]) for c in cells]

    def counts(self, study_id: int) -> dict[str, dict[str, int]]:
        """Number of cells per kind and state: ``{kind: {state: n}}``."""
        q = (
            select(CellModel.kind, CellModel.state, func.count())
            .where(CellModel.study_id == study_id)
            .group_by(CellModel.kind, CellModel.state)
        )
        out: dict[str, dict[str, int]] = defaultdict(dict)
        with self.session_scope(write=False) as s:
            for kind, state, n in s.execute(q):
                out[kind][state] = n
        return dict(out)

    def attempts(self, cell_id: int) -> list[AttemptRow]:
        """Every attempt of a cell, oldest first (kept across retries)."""
        q = select(AttemptModel).where(AttemptModel.cell_id == cell_id).order_by(AttemptModel.n)
        with self.session_scope(write=False) as s:
            return [attempt_row(a) for a in s.scalars(q)]

    def artifacts_of(self, study_id: int, keys: list[str], role: str) -> dict[str, str]:
        """The ``role`` artifacts of the given cells.

        Returns:
            ``{cell key: digest}``; cells without such an artifact are left out.
        """
        out: dict[str, str] = {}
        with self.session_scope(write=False) as s:
            for chunk in chunks(list(keys), _CHUNK):
                q = (
                    select(CellModel.key, CellArtifactModel.digest)
                    .join(CellArtifactModel, CellArtifactModel.cell_id == CellModel.id)
                    .where(
                        CellModel.study_id == study_id,
                        CellModel.key.in_(chunk),
                        CellArtifactModel.role == role,
                    )
                )
                out.update({k: d for k, d in s.execute(q)})
        return out

    def unlogged_done(self, study_id: int) -> list[CellRow]:
        """Done cells with no MLflow run yet (the outbox), in insertion order."""
        q = (
            select(CellModel)
            .where(
                CellModel.study_id == study_id,
                CellModel.state == CellState.DONE,
                CellModel.mlflow_run_id.is_(None),
            )
            .order_by(CellModel.id)
        )
        with self.session_scope(write=False) as s:
            return self._rows(s, q)

    def set_mlflow_run_id(self, cell_id: int, run_id: str) -> None:
        """Record the MLflow run that logged a cell.

        Raises:
            NotFoundError: No cell with that id.
        """
        with self.session_scope() as s:
            result = s.execute(
                update(CellModel).where(CellModel.id == cell_id).values(mlflow_run_id=run_id)
            )
            if rowcount(result) == 0:
                raise NotFoundError(f"no cell with id {cell_id} in {self.masked_url}")


def _insert_row(study_id: int, c: NewCell) -> dict[str, Any]:
    return {
        "study_id": study_id,
        "key": c.key,
        "kind": c.kind,
        "spec_json": c.spec_json,
        "depends_on": json.dumps(list(c.depends_on)),
        "state": CellState.PENDING,
        "attempts": 0,
    }


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (``CursorResult.rowcount``)."""
    return int(result.rowcount)

"""Results: commit a cell's outcome (done, failed, released) under its lease token.

A result is written only while the cell is still ``running`` under the token its claim
returned; the row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL, the write lock
of ``BEGIN IMMEDIATE`` on SQLite), so a concurrent takeover either happens before (and the
late result is dropped, nothing written) or waits until the result is committed.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from storage.artifacts import check_digest
from storage.core import DatabaseCore
from storage.enums import CellState, Outcome
from storage.models import (
    OUTCOMES,
    ArtifactModel,
    AttemptModel,
    CellArtifactModel,
    CellModel,
    MetricModel,
)
from storage.rows import ArtifactRecord, artifact_row

log = logging.getLogger(__name__)


class CommitsMixin(DatabaseCore):
    """Result operations of :class:`storage.Database`."""

    def complete(
        self,
        cell_id: int,
        token: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, ArtifactRecord],
        duration_s: float | None,
        worker: str | None,
        notes: list[str] | tuple[str, ...] = (),
    ) -> bool:
        """Record a cell's result if it still holds the lease ``token``.

        Args:
            cell_id: The cell.
            token: The token its claim returned.
            metrics: ``{name: value}``; values that are not finite numbers are not stored
                (SQLite cannot store NaN) and a warning is logged.
            artifacts: ``{role: record}``; records already indexed are not rewritten.
            duration_s: Seconds the work took.
            worker: Where it ran.
            notes: What the run said of itself, kept with its attempt (``attempts.note``).

        Returns:
            True when recorded, also when this very result was recorded before (a retry
            after a connection dropped during the commit); False, with nothing written,
            when the lease was lost.
        """
        for record in artifacts.values():
            check_digest(record.digest)
        with self.session_scope() as s:
            cell = _owned(s, cell_id, token)
            if cell is None:
                if _recorded_under(s, cell_id, token):
                    return True
                log.info("cell %s: result under a lost lease dropped", cell_id)
                return False
            now = self._now(s)
            cell.state, cell.finished_at, cell.error = CellState.DONE, now, None
            cell.duration_s, cell.worker = duration_s, worker
            # the token stays on a done cell: it names the attempt whose result this is
            cell.lease_expires_at = None
            _write_metrics(s, cell_id, metrics)
            self._write_artifacts(s, cell_id, artifacts, now)
            note = "\n".join(notes) or None
            _close_attempt(s, cell_id, now, Outcome.OK, worker=worker, error=None, note=note)
            return True

    def _write_artifacts(
        self, s: Session, cell_id: int, artifacts: dict[str, ArtifactRecord], now: datetime
    ) -> None:
        s.execute(delete(CellArtifactModel).where(CellArtifactModel.cell_id == cell_id))
        if not artifacts:
            return
        unique = {a.digest: a for a in artifacts.values()}.values()
        # ON CONFLICT DO NOTHING: another cell may index the same content at the same time
        s.execute(
            self._insert_ignore(ArtifactModel, ["digest"]),
            [artifact_row(a, now) for a in unique],
        )
        s.execute(
            insert(CellArtifactModel),
            [{"cell_id": cell_id, "role": r, "digest": a.digest} for r, a in artifacts.items()],
        )

    def fail(
        self, cell_id: int, token: str, *, error: str, worker: str | None, max_attempts: int
    ) -> str | None:
        """Record a failure if the cell still holds the lease ``token``.

        Args:
            cell_id: The cell.
            token: The token its claim returned.
            error: What went wrong (a traceback), stored on the cell and the attempt.
            worker: Where it ran.
            max_attempts: A cell that has had this many attempts is quarantined.

        Returns:
            ``failed`` (will be retried) or ``quarantined``; None, with nothing written,
            when the lease was lost.
        """
        with self.session_scope() as s:
            cell = _owned(s, cell_id, token)
            if cell is None:
                log.info("cell %s: failure under a lost lease dropped", cell_id)
                return None
            now = self._now(s)
            state = CellState.QUARANTINED if cell.attempts >= max_attempts else CellState.FAILED
            cell.state, cell.finished_at, cell.error = state, now, error
            cell.lease_token, cell.lease_expires_at = None, None
            _close_attempt(s, cell_id, now, Outcome.ERROR, worker=worker, error=error)
            return state

    def release(self, cell_id: int, token: str, outcome: str = Outcome.KILLED) -> bool:
        """Give a cell back (``pending``, no error), e.g. when the driver shuts down.

        Args:
            cell_id: The cell.
            token: The token its claim returned.
            outcome: How its attempt ended, ``killed`` or ``lost_lease``.

        Returns:
            True when released; False when the lease had already been lost.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        with self.session_scope() as s:
            cell = _owned(s, cell_id, token)
            if cell is None:
                return False
            now = self._now(s)
            cell.state = CellState.PENDING  # no error to clear: a claim cleared it
            cell.lease_token, cell.lease_expires_at = None, None
            _close_attempt(s, cell_id, now, outcome, worker=None, error=None)
            return True


def _owned(s: Session, cell_id: int, token: str) -> CellModel | None:
    """The cell, locked, if it is running under ``token``; else None."""
    q = select(CellModel).where(
        CellModel.id == cell_id,
        CellModel.lease_token == token,
        CellModel.state == CellState.RUNNING,
    )
    return s.scalars(q.with_for_update()).one_or_none()


def _recorded_under(s: Session, cell_id: int, token: str) -> bool:
    """Whether the cell is done with the result committed under ``token``."""
    q = select(CellModel.id).where(
        CellModel.id == cell_id, CellModel.lease_token == token, CellModel.state == CellState.DONE
    )
    return s.scalar(q) is not None


def _write_metrics(s: Session, cell_id: int, metrics: dict[str, float]) -> None:
    s.execute(delete(MetricModel).where(MetricModel.cell_id == cell_id))
    rows = []
    for name, value in metrics.items():
        if not _finite(value):
            log.warning(
                "cell %s: metric %s=%r is not a finite number; not stored", cell_id, name, value
            )
            continue
        rows.append({"cell_id": cell_id, "name": name, "value": float(value)})
    if rows:
        s.execute(insert(MetricModel), rows)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _close_attempt(
    s: Session,
    cell_id: int,
    now: datetime,
    outcome: str,
    *,
    worker: str | None,
    error: str | None,
    note: str | None = None,
) -> None:
    """Close the cell's open attempt (there is at most one)."""
    values: dict[str, Any] = {"outcome": outcome, "ended_at": now, Outcome.ERROR: error}
    if note is not None:
        values["note"] = note
    if worker:
        values["worker"] = worker
    s.execute(
        update(AttemptModel)
        .where(AttemptModel.cell_id == cell_id, AttemptModel.outcome.is_(None))
        .values(**values)
    )

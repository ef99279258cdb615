"""Leases: claim runnable cells, renew, commit or fail them under a token.

A claim gives a cell a fresh ``lease_token`` and an expiry; a result is committed only while
the cell is still ``running`` under that token, so a cell executed twice (Ray retries are
at-least-once; a slow driver whose lease expired) is recorded once. On PostgreSQL the
claimed rows are locked with ``FOR UPDATE SKIP LOCKED`` so concurrent drivers skip each
other's picks; on SQLite every write transaction starts with ``BEGIN IMMEDIATE``.
Every state change is also conditional on the state it expects, so a lost race updates
nothing instead of overwriting.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, or_, select, update

from storage.artifacts import ArtifactRecord
from storage.models import (
    ArtifactModel,
    AttemptModel,
    CellArtifactModel,
    CellModel,
    MetricModel,
)
from storage.rows import ClaimedCell

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


class LeaseMixin:
    """Lease operations of :class:`storage.Database`."""

    dialect: str

    def _session(self) -> Any:  # provided by Database
        raise NotImplementedError

    def _now(self, session: Session) -> datetime:  # provided by Database
        raise NotImplementedError

    def claim(
        self,
        study_id: int,
        owner: str,
        limit: int,
        lease_s: float,
        max_attempts: int,
        *,
        keys: set[str] | None = None,
    ) -> list[ClaimedCell]:
        """Lease up to ``limit`` runnable cells (dependencies done), oldest first.

        Runnable: ``pending``; ``failed`` with attempts left; ``running`` whose lease expired
        (its open attempt is closed as ``lost_lease``). ``keys`` restricts the claim to
        the cells of the current plan.
        """
        if limit <= 0:
            return []
        with self._session() as s:
            now = self._now(s)
            picked = self._pick(s, study_id, now, limit, max_attempts, keys)
            return [
                c
                for c in (self._take(s, row, owner, now, lease_s, max_attempts) for row in picked)
                if c is not None
            ]

    def _runnable(self, study_id: int, now: datetime, max_attempts: int) -> Any:
        return and_(
            CellModel.study_id == study_id,
            or_(
                CellModel.state == "pending",
                and_(CellModel.state == "failed", CellModel.attempts < max_attempts),
                and_(CellModel.state == "running", CellModel.lease_expires_at < now),
            ),
        )

    def _pick(
        self,
        s: Session,
        study_id: int,
        now: datetime,
        limit: int,
        max_attempts: int,
        keys: set[str] | None,
    ) -> list[Any]:
        q = (
            select(CellModel.id, CellModel.key, CellModel.depends_on)
            .where(self._runnable(study_id, now, max_attempts))
            .order_by(CellModel.id)
        )
        candidates = [r for r in s.execute(q) if keys is None or r.key in keys]
        if any(r.depends_on not in ("[]", "") for r in candidates):
            done = set(
                s.scalars(
                    select(CellModel.key).where(
                        CellModel.study_id == study_id, CellModel.state == "done"
                    )
                )
            )
        else:
            done = set()
        ready = [r.id for r in candidates if set(json.loads(r.depends_on or "[]")) <= done]
        if not ready:
            return []
        lock = (
            select(CellModel)
            .where(
                CellModel.id.in_(ready[: limit * 4]), self._runnable(study_id, now, max_attempts)
            )
            .order_by(CellModel.id)
        )
        if self.dialect == "postgresql":
            lock = lock.with_for_update(skip_locked=True)
        return list(s.scalars(lock))[:limit]

    def _take(
        self,
        s: Session,
        cell: CellModel,
        owner: str,
        now: datetime,
        lease_s: float,
        max_attempts: int,
    ) -> ClaimedCell | None:
        was_running = cell.state == "running"
        token, n = uuid.uuid4().hex, cell.attempts + 1
        result = s.execute(
            update(CellModel)
            .where(
                CellModel.id == cell.id,
                CellModel.state == cell.state,
                CellModel.attempts == cell.attempts,
            )
            .values(
                state="running",
                lease_token=token,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                heartbeat_at=now,
                started_at=now,
                finished_at=None,
                attempts=n,
                error=None,
            )
        )
        if _rowcount(result) != 1:
            return None
        if was_running:
            s.execute(
                update(AttemptModel)
                .where(AttemptModel.cell_id == cell.id, AttemptModel.outcome.is_(None))
                .values(outcome="lost_lease", ended_at=now)
            )
        s.execute(insert(AttemptModel).values(cell_id=cell.id, n=n, started_at=now, worker=owner))
        return ClaimedCell(
            cell.id,
            cell.key,
            cell.kind,
            cell.spec_json,
            json.loads(cell.depends_on or "[]"),
            token,
            n,
        )

    def heartbeat(self, tokens: list[str], lease_s: float) -> int:
        """Extend the leases held under ``tokens``; returns how many were extended."""
        if not tokens:
            return 0
        with self._session() as s:
            now = self._now(s)
            result = s.execute(
                update(CellModel)
                .where(CellModel.lease_token.in_(tokens), CellModel.state == "running")
                .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
            )
            return _rowcount(result)

    def _own(self, cell_id: int, token: str) -> Any:
        return and_(
            CellModel.id == cell_id, CellModel.lease_token == token, CellModel.state == "running"
        )

    def complete(
        self,
        cell_id: int,
        token: str,
        *,
        metrics: dict[str, float],
        artifacts: dict[str, ArtifactRecord],
        duration_s: float | None,
        worker: str | None,
    ) -> bool:
        """Record a result; False (and nothing written) if the lease was lost."""
        with self._session() as s:
            now = self._now(s)
            n = s.scalar(select(CellModel.attempts).where(self._own(cell_id, token)))
            if n is None:
                return False
            s.execute(
                update(CellModel)
                .where(self._own(cell_id, token))
                .values(
                    state="done",
                    finished_at=now,
                    duration_s=duration_s,
                    worker=worker,
                    lease_token=None,
                    lease_expires_at=None,
                    error=None,
                )
            )
            self._write_metrics(s, cell_id, metrics)
            self._write_artifacts(s, cell_id, artifacts, now)
            self._close_attempt(s, cell_id, n, now, "ok", worker, None)
            return True

    @staticmethod
    def _write_metrics(s: Session, cell_id: int, metrics: dict[str, float]) -> None:
        s.query(MetricModel).filter(MetricModel.cell_id == cell_id).delete()
        rows = []
        for name, value in metrics.items():
            if value is None or not math.isfinite(float(value)):
                log.warning(
                    "cell %s: metric %s=%r is not a finite number; not stored", cell_id, name, value
                )
                continue
            rows.append({"cell_id": cell_id, "name": name, "value": float(value)})
        if rows:
            s.execute(insert(MetricModel), rows)

    @staticmethod
    def _write_artifacts(
        s: Session, cell_id: int, artifacts: dict[str, ArtifactRecord], now: datetime
    ) -> None:
        if not artifacts:
            return
        digests = {a.digest for a in artifacts.values()}
        known = set(
            s.scalars(select(ArtifactModel.digest).where(ArtifactModel.digest.in_(digests)))
        )
        for a in {a.digest: a for a in artifacts.values()}.values():
            if a.digest not in known:
                s.add(
                    ArtifactModel(
                        digest=a.digest,
                        kind=a.kind,
                        uri=a.uri,
                        bytes=a.bytes,
                        format=a.format,
                        meta_json=json.dumps(a.meta, sort_keys=True),
                        created_at=now,
                    )
                )
        s.flush()
        s.query(CellArtifactModel).filter(CellArtifactModel.cell_id == cell_id).delete()
        s.execute(
            insert(CellArtifactModel),
            [
                {"cell_id": cell_id, "role": role, "digest": a.digest}
                for role, a in artifacts.items()
            ],
        )

    @staticmethod
    def _close_attempt(
        s: Session,
        cell_id: int,
        n: int,
        now: datetime,
        outcome: str,
        worker: str | None,
        error: str | None,
    ) -> None:
        values: dict[str, Any] = {"outcome": outcome, "ended_at": now, "error": error}
        if worker:
            values["worker"] = worker
        s.execute(
            update(AttemptModel)
            .where(AttemptModel.cell_id == cell_id, AttemptModel.n == n)
            .values(**values)
        )

    def fail(
        self, cell_id: int, token: str, *, error: str, worker: str | None, max_attempts: int
    ) -> str | None:
        """Record a failure: ``failed`` (attempts left) or ``quarantined``; None if not owned."""
        with self._session() as s:
            now = self._now(s)
            n = s.scalar(select(CellModel.attempts).where(self._own(cell_id, token)))
            if n is None:
                return None
            state = "quarantined" if n >= max_attempts else "failed"
            s.execute(
                update(CellModel)
                .where(self._own(cell_id, token))
                .values(
                    state=state,
                    finished_at=now,
                    error=error,
                    lease_token=None,
                    lease_expires_at=None,
                )
            )
            self._close_attempt(s, cell_id, n, now, "error", worker, error)
            return state

    def release(self, cell_id: int, token: str, outcome: str = "killed") -> bool:
        """Give a cell back (pending) without an error, e.g. when the driver stops."""
        with self._session() as s:
            now = self._now(s)
            n = s.scalar(select(CellModel.attempts).where(self._own(cell_id, token)))
            if n is None:
                return False
            s.execute(
                update(CellModel)
                .where(self._own(cell_id, token))
                .values(state="pending", lease_token=None, lease_expires_at=None)
            )
            self._close_attempt(s, cell_id, n, now, outcome, None, None)
            return True

    def running_owners(self, study_id: int) -> set[str]:
        with self._session() as s:
            q = (
                select(CellModel.lease_owner)
                .where(CellModel.study_id == study_id, CellModel.state == "running")
                .distinct()
            )
            return {o for o in s.scalars(q) if o}

    def expire_leases(self, study_id: int, owners: Iterable[str]) -> int:
        """Make the running cells of ``owners`` claimable now (their process is gone)."""
        owners = list(owners)
        if not owners:
            return 0
        with self._session() as s:
            past = self._now(s) - timedelta(seconds=1)
            result = s.execute(
                update(CellModel)
                .where(
                    CellModel.study_id == study_id,
                    CellModel.state == "running",
                    CellModel.lease_owner.in_(owners),
                )
                .values(lease_expires_at=past)
            )
            return _rowcount(result)

    def retry_quarantined(self, study_id: int) -> int:
        """Quarantined and failed cells become pending: one more attempt each."""
        with self._session() as s:
            result = s.execute(
                update(CellModel)
                .where(
                    CellModel.study_id == study_id, CellModel.state.in_(("quarantined", "failed"))
                )
                .values(state="pending")
            )
            return _rowcount(result)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (``CursorResult.rowcount``)."""
    return int(result.rowcount)

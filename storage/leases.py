"""Leases: claim runnable cells, renew them, expire them, give quarantined cells another go.

A claim gives a cell a fresh ``lease_token`` and an expiry; results are committed under that
token (:mod:`storage.commits`), so a cell executed twice (Ray retries are at-least-once; a
driver whose lease expired while it was slow) is recorded once. On PostgreSQL the claimed
rows are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent drivers pass over each
other's picks; on SQLite every write transaction holds the database's write lock from its
``BEGIN IMMEDIATE``.

Lease times come from :meth:`DatabaseCore._now`: the database clock on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, cast, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from storage.cells import rowcount
from storage.core import DatabaseCore, chunks
from storage.enums import CellState, Outcome
from storage.models import AttemptModel, CellModel
from storage.rows import ClaimedCell

log = logging.getLogger(__name__)

_CHUNK = 500  # bound parameters per IN list
_PAGE = 500  # candidate cells read at a time by a claim


class LeaseMixin(DatabaseCore):
    """Lease operations of :class:`storage.Database`."""

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
        """Lease up to ``limit`` runnable cells whose dependencies are all done, by id.

        Runnable: ``pending``; ``failed`` with fewer than ``max_attempts`` attempts;
        ``running`` with an expired lease (its open attempt is closed as ``lost_lease``).

        Args:
            study_id: The study.
            owner: Who holds the leases (``host:pid:nonce``), see :meth:`expire_leases`.
            limit: At most this many cells.
            lease_s: Seconds until the leases expire unless renewed by :meth:`heartbeat`.
            max_attempts: Attempts a failed cell gets before it is quarantined.
            keys: Only cells with these keys (the current plan); None for all.

        Returns:
            The claimed cells, each with its token and attempt number.
        """
        if limit <= 0:
            return []
        with self.session_scope() as s:
            now = self._now(s)
            runnable = _runnable(study_id, now, max_attempts)
            cells: list[CellModel] = []
            for ready in _ready_batches(s, study_id, runnable, keys, page=_page(limit)):
                cells += self._lock(s, ready, runnable, limit - len(cells))
                if len(cells) >= limit:
                    break
            claimed = _take(s, cells, owner, now, lease_s)
        if claimed:
            log.debug("study %s: %s claimed %d cells", study_id, owner, len(claimed))
        return claimed

    def _lock(
        self, s: Session, ready: list[int], runnable: ColumnElement[bool], limit: int
    ) -> list[CellModel]:
        """Lock up to ``limit`` of the ``ready`` cells that are still runnable, by id.

        On PostgreSQL rows another driver has locked are skipped, and only the rows
        returned are locked (``LIMIT`` applies before ``FOR UPDATE``).
        """
        q = (
            select(CellModel)
            .where(CellModel.id.in_(ready), runnable)
            .order_by(CellModel.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        return list(s.scalars(q))

    def heartbeat(self, tokens: list[str], lease_s: float) -> int:
        """Extend the leases held under ``tokens`` to ``lease_s`` seconds from now.

        Returns:
            How many leases were extended (a lost lease is not).
        """
        if not tokens:
            return 0
        extended = 0
        with self.session_scope() as s:
            now = self._now(s)
            for chunk in chunks(list(tokens), _CHUNK):
                result = s.execute(
                    update(CellModel)
                    .where(CellModel.lease_token.in_(chunk), CellModel.state == CellState.RUNNING)
                    .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now)
                )
                extended += rowcount(result)
        return extended

    def running_owners(self, study_id: int) -> set[str]:
        """Owners holding leases on running cells of the study, expired or not."""
        q = (
            select(CellModel.lease_owner)
            .where(CellModel.study_id == study_id, CellModel.state == CellState.RUNNING)
            .distinct()
        )
        with self.session_scope(write=False) as s:
            return {o for o in s.scalars(q) if o}

    def expire_leases(self, study_id: int, owners: Iterable[str]) -> int:
        """Make the running cells of ``owners`` claimable now: their process is gone.

        Returns:
            How many leases were expired.
        """
        owners = list(owners)
        if not owners:
            return 0
        with self.session_scope() as s:
            past = self._now(s) - timedelta(seconds=1)
            result = s.execute(
                update(CellModel)
                .where(
                    CellModel.study_id == study_id,
                    CellModel.state == CellState.RUNNING,
                    CellModel.lease_owner.in_(owners),
                )
                .values(lease_expires_at=past)
            )
            n = rowcount(result)
        log.info("study %s: expired %d leases of %s", study_id, n, ", ".join(sorted(owners)))
        return n

    def retry_quarantined(self, study_id: int) -> int:
        """Quarantined and failed cells become pending with a fresh attempt budget.

        ``attempts`` is reset to 0; the attempt history is kept.

        Returns:
            How many cells were reset.
        """
        with self.session_scope() as s:
            result = s.execute(
                update(CellModel)
                .where(
                    CellModel.study_id == study_id,
                    CellModel.state.in_((CellState.QUARANTINED, CellState.FAILED)),
                )
                .values(state=CellState.PENDING, attempts=0)
            )
            return rowcount(result)


def _runnable(study_id: int, now: datetime, max_attempts: int) -> ColumnElement[bool]:
    return and_(
        CellModel.study_id == study_id,
        or_(
            CellModel.state == CellState.PENDING,
            and_(CellModel.state == CellState.FAILED, CellModel.attempts < max_attempts),
            and_(CellModel.state == CellState.RUNNING, CellModel.lease_expires_at < now),
        ),
    )


def _page(limit: int) -> int:
    """Ready cells read per round trip: a few more than asked (others may lock some), so a
    claim of one cell does not read 500."""
    return min(_PAGE, max(16, 4 * limit))


def _ready_batches(
    s: Session,
    study_id: int,
    runnable: ColumnElement[bool],
    keys: set[str] | None,
    *,
    page: int = _PAGE,
) -> Iterator[list[int]]:
    """Ids of runnable cells whose dependencies are all done, a page at a time, by id.

    The dependency check runs in the database (:func:`_deps_done`), so cells blocked on
    unfinished work are never sent back: a claim in a 100 000-cell study whose transfer
    cells wait for training reads only the cells it can take. Paging keeps a claim cheap
    when ``keys`` (the current plan) leaves out cells of an extended study.
    """
    after = 0
    ready_q = select(CellModel.id, CellModel.key).where(runnable, _deps_done(s, study_id))
    while True:
        rows = s.execute(
            ready_q.where(CellModel.id > after).order_by(CellModel.id).limit(page)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        ready = [r.id for r in rows if keys is None or r.key in keys]
        if ready:
            yield ready


def _deps_done(s: Session, study_id: int) -> ColumnElement[bool]:
    """True for a cell none of whose ``depends_on`` keys names a cell that is not done.

    ``depends_on`` is a JSON array of keys; both backends expand it in SQL
    (``json_each`` on SQLite, ``jsonb_array_elements_text`` on PostgreSQL) and look each
    key up through the ``(study_id, key)`` unique index.
    """
    if s.get_bind().dialect.name == "postgresql":
        fn = func.jsonb_array_elements_text(cast(CellModel.depends_on, JSONB))
    else:
        fn = func.json_each(CellModel.depends_on)
    dep = fn.table_valued("value").alias("dep")
    done = aliased(CellModel, name="dep_cell")
    is_done = exists().where(
        done.study_id == study_id, done.key == dep.c.value, done.state == CellState.DONE
    )
    return ~exists(select(dep.c.value).where(~is_done))


def _take(
    s: Session, cells: list[CellModel], owner: str, now: datetime, lease_s: float
) -> list[ClaimedCell]:
    """Lease the locked ``cells`` to ``owner``, opening an attempt for each."""
    if not cells:
        return []
    ids = [c.id for c in cells]
    last_q = (
        select(AttemptModel.cell_id, func.max(AttemptModel.n))
        .where(AttemptModel.cell_id.in_(ids))
        .group_by(AttemptModel.cell_id)
    )
    last: dict[int, int] = {cid: n for cid, n in s.execute(last_q)}
    lost = [c for c in cells if c.state == CellState.RUNNING]
    for c in lost:
        log.info("cell %s: lease of %s expired; reclaimed", c.key[:12], c.lease_owner)
    _close_attempts(s, [c.id for c in lost], now, Outcome.LOST_LEASE)
    claimed = []
    for c in cells:
        token, n = uuid.uuid4().hex, last.get(c.id, 0) + 1
        c.state, c.lease_token, c.lease_owner = CellState.RUNNING, token, owner
        c.lease_expires_at = now + timedelta(seconds=lease_s)
        c.heartbeat_at = c.started_at = now
        c.finished_at, c.error, c.attempts = None, None, c.attempts + 1
        s.add(AttemptModel(cell_id=c.id, n=n, started_at=now, worker=owner, owner=owner))
        deps = json.loads(c.depends_on or "[]")
        claimed.append(ClaimedCell(c.id, c.key, c.kind, c.spec_json, deps, token, n))
    return claimed


def _close_attempts(s: Session, cell_ids: list[int], now: datetime, outcome: str) -> None:
    if cell_ids:
        s.execute(
            update(AttemptModel)
            .where(AttemptModel.cell_id.in_(cell_ids), AttemptModel.outcome.is_(None))
            .values(outcome=outcome, ended_at=now)
        )

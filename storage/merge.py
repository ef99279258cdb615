"""The index side of bundles: read the artifacts to export, merge imported done cells.

The files of a bundle are handled by :mod:`storage.bundle`; this module only writes rows,
and only after the bundle's files are in the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from storage.core import DatabaseCore, chunks
from storage.enums import CellState, Outcome
from storage.errors import NotFoundError
from storage.models import (
    ArtifactModel,
    AttemptModel,
    CellArtifactModel,
    CellModel,
    MetricModel,
    StudyModel,
)
from storage.rows import ArtifactRecord, artifact_record, artifact_row

if TYPE_CHECKING:
    from storage.manifest import CellEntry, StudyEntry

log = logging.getLogger(__name__)

_CHUNK = 500  # bound parameters per IN list
_BATCH = 5000  # rows per INSERT


@dataclass(frozen=True)
class MergeCounts:
    """What :meth:`BundleMixin.merge_done_cells` did to the study and its cells."""

    study_created: bool
    inserted: int
    updated: int
    skipped: int
    running: int


class BundleMixin(DatabaseCore):
    """Bundle operations of :class:`storage.Database`."""

    def artifact_records(self, digests: Iterable[str]) -> list[ArtifactRecord]:
        """The index entries of ``digests``, sorted by digest.

        Raises:
            NotFoundError: One of them is not indexed.
        """
        wanted = sorted(set(digests))
        found: dict[str, ArtifactRecord] = {}
        with self.session_scope(write=False) as s:
            for chunk in chunks(wanted, _CHUNK):
                q = select(ArtifactModel).where(ArtifactModel.digest.in_(chunk))
                found.update((m.digest, artifact_record(m)) for m in s.scalars(q))
        missing = [d for d in wanted if d not in found]
        if missing:
            raise NotFoundError(
                f"{len(missing)} artifacts are not in the index at {self.masked_url}, e.g. "
                f"{missing[0]}; `advgrid artifacts verify` checks the index and the store"
            )
        return [found[d] for d in wanted]

    def merge_done_cells(
        self, study: StudyEntry, cells: Sequence[CellEntry], artifacts: Sequence[ArtifactRecord]
    ) -> MergeCounts:
        """Merge done cells into study ``study.name`` by key, in one transaction.

        The study is created from ``study`` if there is none by its name, else kept as it
        is. Per cell: a new key is inserted as done; a key already done is left alone
        (skipped); a key running under a live lease is left to the driver running it; any
        other (pending, failed, quarantined, running under an expired lease, whose open
        attempt is closed as ``lost_lease``) takes the imported result. Imported cells have
        no MLflow run, so the next ``advgrid run`` logs them.

        Args:
            study: The study as the bundle has it.
            cells: Done cells with unique keys.
            artifacts: Index entries of every artifact the cells name; their files must be
                in the store already.

        Returns:
            What was done.
        """
        with self.session_scope() as s:
            now = self._now(s)
            study_id, created = self._merge_study(s, study, now)
            self._index_artifacts(s, artifacts, now)
            existing = self._existing(s, study_id, [c.key for c in cells])
            take: dict[int, CellEntry] = {}
            skipped = running = 0
            for c in cells:
                row = existing.get(c.key)
                if row is None:
                    continue
                if row.state == CellState.DONE:
                    skipped += 1
                elif row.state == CellState.RUNNING and _live(row.lease_expires_at, now):
                    running += 1
                else:
                    take[row.id] = c
            new = [c for c in cells if c.key not in existing]
            ids = _insert_done(s, study_id, new)
            _update_done(s, take, now)
            _write_results(s, {**{ids[c.key]: c for c in new}, **take})
        log.info(
            "study %s: %d cells inserted, %d updated, %d already done, %d running here",
            study.name,
            len(new),
            len(take),
            skipped,
            running,
        )
        return MergeCounts(created, len(new), len(take), skipped, running)

    def _merge_study(self, s: Session, study: StudyEntry, now: datetime) -> tuple[int, bool]:
        """The id of study ``study.name``, created from ``study`` if absent; created?"""
        stmt = self._insert_ignore(StudyModel.__table__, ["name"]).values(
            name=study.name,
            spec_yaml=study.spec_yaml,
            spec_hash=study.spec_hash,
            created_at=now,
            created_by=study.created_by,
            advgrid_version=study.advgrid_version,
        )
        created = s.execute(stmt.returning(StudyModel.__table__.c.id)).scalar_one_or_none()
        if created is not None:
            return created, True
        return s.scalars(select(StudyModel.id).where(StudyModel.name == study.name)).one(), False

    def _index_artifacts(
        self, s: Session, artifacts: Sequence[ArtifactRecord], now: datetime
    ) -> None:
        rows = [artifact_row(a, now) for a in artifacts]
        for batch in chunks(rows, _BATCH):  # an entry indexed already is kept as it is
            s.execute(self._insert_ignore(ArtifactModel, ["digest"]), list(batch))

    def _existing(self, s: Session, study_id: int, keys: list[str]) -> dict[str, Any]:
        """``{key: (id, key, state, lease_expires_at)}`` of the study's cells with these keys.

        On PostgreSQL the rows are locked until the merge commits, so no driver claims or
        completes them meanwhile; on SQLite the transaction holds the write lock anyway.
        """
        out: dict[str, Any] = {}
        cols = CellModel.id, CellModel.key, CellModel.state, CellModel.lease_expires_at
        for chunk in chunks(keys, _CHUNK):
            q = select(*cols).where(CellModel.study_id == study_id, CellModel.key.in_(chunk))
            if self.dialect == "postgresql":
                q = q.with_for_update(of=CellModel)
            out.update((r.key, r) for r in s.execute(q))
        return out


def _live(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and expires >= now


def _done_values(c: CellEntry) -> dict[str, Any]:
    return {
        "state": CellState.DONE,
        "attempts": c.attempts,
        "finished_at": c.finished_at,
        "duration_s": c.duration_s,
        "worker": c.worker,
        "error": None,
        "mlflow_run_id": None,
    }


def _insert_done(s: Session, study_id: int, cells: list[CellEntry]) -> dict[str, int]:
    """Insert ``cells`` as done; returns ``{key: id}``."""
    rows = [
        {
            "study_id": study_id,
            "key": c.key,
            "kind": c.kind,
            "spec_json": c.spec_json,
            "depends_on": json.dumps(list(c.depends_on)),
            **_done_values(c),
        }
        for c in cells
    ]
    for batch in chunks(rows, _BATCH):
        s.execute(insert(CellModel), list(batch))
    ids: dict[str, int] = {}
    for chunk in chunks([c.key for c in cells], _CHUNK):
        q = select(CellModel.key, CellModel.id).where(
            CellModel.study_id == study_id, CellModel.key.in_(chunk)
        )
        ids.update((key, cid) for key, cid in s.execute(q))
    return ids


def _update_done(s: Session, cells: dict[int, CellEntry], now: datetime) -> None:
    """Give existing cells the imported results; close their open attempts."""
    if not cells:
        return
    rows = [
        {"id": cid, "lease_token": None, "lease_expires_at": None, **_done_values(c)}
        for cid, c in cells.items()
    ]
    s.execute(update(CellModel), rows)  # by primary key, one statement per batch
    for chunk in chunks(list(cells), _CHUNK):
        s.execute(delete(MetricModel).where(MetricModel.cell_id.in_(chunk)))
        s.execute(delete(CellArtifactModel).where(CellArtifactModel.cell_id.in_(chunk)))
        s.execute(
            update(AttemptModel)
            .where(AttemptModel.cell_id.in_(chunk), AttemptModel.outcome.is_(None))
            .values(outcome=Outcome.LOST_LEASE, ended_at=now)
        )


def _write_results(s: Session, cells: dict[int, CellEntry]) -> None:
    """Metrics and artifact roles of the cells ``{id: entry}`` (none written yet)."""
    metrics = [
        {"cell_id": cid, "name": name, "value": value}
        for cid, c in cells.items()
        for name, value in c.metrics.items()
    ]
    roles = [
        {"cell_id": cid, "role": role, "digest": digest}
        for cid, c in cells.items()
        for role, digest in c.artifacts.items()
    ]
    for model, rows in ((MetricModel, metrics), (CellArtifactModel, roles)):
        for batch in chunks(rows, _BATCH):
            s.execute(insert(model), list(batch))

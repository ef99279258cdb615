"""Plain, frozen rows returned by :class:`storage.Database` (never ORM objects).

Timestamps are timezone-aware UTC on every backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from storage.models import ArtifactModel, AttemptModel, CellModel, StudyModel


@dataclass(frozen=True)
class NewCell:
    """A cell to insert with :meth:`storage.Database.add_cells`.

    Attributes:
        key: 64-character hex cell key, unique within its study.
        kind: ``train``, ``attack`` or ``transfer``.
        spec_json: Canonical JSON of the normalized cell spec.
        depends_on: Keys of the cells that must be ``done`` before this one may run.
    """

    key: str
    kind: str
    spec_json: str
    depends_on: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StudyRow:
    """One study."""

    id: int
    name: str
    spec_yaml: str
    spec_hash: str
    created_at: datetime
    created_by: str
    advgrid_version: str


@dataclass(frozen=True)
class CellRow:
    """One cell with its metrics and artifacts.

    Attributes:
        metrics: ``{metric name: value}``.
        artifacts: ``{role: artifact digest}``, e.g. ``{"adversarial": "ab12…"}``.
    """

    id: int
    study_id: int
    key: str
    kind: str
    spec_json: str
    depends_on: list[str]
    state: str
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    worker: str | None
    error: str | None
    mlflow_run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimedCell:
    """A cell this process holds a lease on.

    Attributes:
        token: The lease token; results are committed only under it.
        attempt: Number of this attempt in the cell's history (``attempts.n``), 1 first.
    """

    id: int
    key: str
    kind: str
    spec_json: str
    depends_on: list[str]
    token: str
    attempt: int


@dataclass(frozen=True)
class AttemptRow:
    """One claim of a cell; ``outcome`` (ok, error, lost_lease, killed) is None while running.

    Attributes:
        worker: Where the attempt ran once its result is recorded; until then its owner.
        owner: The lease owner (``host:pid:nonce``) that claimed it; None for attempts
            recorded before schema revision 0002.
        note: What the attempt said of its run (``resumed at epoch 2 of 4 …``), lines
            joined by newlines; None when it said nothing.
    """

    id: int
    cell_id: int
    n: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    worker: str | None
    error: str | None
    owner: str | None
    note: str | None = None


@dataclass(frozen=True)
class ArtifactRecord:
    """What the index knows about one stored artifact.

    Attributes:
        digest: SHA-256 (64 lowercase hex characters) of the file's bytes.
        kind: What it holds, e.g. ``checkpoint`` or ``adversarial``.
        uri: Location relative to the store root, ``objects/ab/cdef….safetensors``.
        bytes: File size.
        format: File format, ``safetensors``.
        meta: JSON metadata stored in the file.
    """

    digest: str
    kind: str
    uri: str
    bytes: int
    format: str = "safetensors"
    meta: dict[str, Any] = field(default_factory=dict)


def study_row(m: StudyModel) -> StudyRow:
    return StudyRow(
        m.id, m.name, m.spec_yaml, m.spec_hash, m.created_at, m.created_by, m.advgrid_version
    )


def cell_row(m: CellModel, metrics: dict[str, float], artifacts: dict[str, str]) -> CellRow:
    return CellRow(
        id=m.id,
        study_id=m.study_id,
        key=m.key,
        kind=m.kind,
        spec_json=m.spec_json,
        depends_on=json.loads(m.depends_on or "[]"),
        state=m.state,
        attempts=m.attempts,
        lease_owner=m.lease_owner,
        lease_expires_at=m.lease_expires_at,
        started_at=m.started_at,
        finished_at=m.finished_at,
        duration_s=m.duration_s,
        worker=m.worker,
        error=m.error,
        mlflow_run_id=m.mlflow_run_id,
        metrics=dict(metrics),
        artifacts=dict(artifacts),
    )


def attempt_row(m: AttemptModel) -> AttemptRow:
    return AttemptRow(
        id=m.id,
        cell_id=m.cell_id,
        n=m.n,
        started_at=m.started_at,
        ended_at=m.ended_at,
        outcome=m.outcome,
        worker=m.worker,
        error=m.error,
        owner=m.owner,
        note=m.note,
    )


def artifact_record(m: ArtifactModel) -> ArtifactRecord:
    return ArtifactRecord(m.digest, m.kind, m.uri, m.bytes, m.format, json.loads(m.meta_json))


def artifact_row(a: ArtifactRecord, now: datetime) -> dict[str, Any]:
    """The ``artifacts`` row that indexes ``a``, first seen at ``now``."""
    return {
        "digest": a.digest,
        "kind": a.kind,
        "uri": a.uri,
        "bytes": a.bytes,
        "format": a.format,
        "meta_json": json.dumps(a.meta, sort_keys=True),
        "created_at": now,
    }

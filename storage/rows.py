"""Plain, frozen rows returned by :class:`storage.Database` (never ORM objects)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class NewCell:
    """A cell to insert."""

    key: str
    kind: str
    spec_json: str
    depends_on: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StudyRow:
    id: int
    name: str
    spec_yaml: str
    spec_hash: str
    created_at: datetime
    created_by: str
    advgrid_version: str

    @classmethod
    def of(cls, m: Any) -> StudyRow:
        return cls(
            m.id, m.name, m.spec_yaml, m.spec_hash, m.created_at, m.created_by, m.advgrid_version
        )


@dataclass(frozen=True)
class CellRow:
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


def cell_row(
    m: Any,
    metrics: dict[str, float],
    artifacts: dict[str, str],
    utc: Callable[[datetime | None], datetime | None],
) -> CellRow:
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
        lease_expires_at=utc(m.lease_expires_at),
        started_at=utc(m.started_at),
        finished_at=utc(m.finished_at),
        duration_s=m.duration_s,
        worker=m.worker,
        error=m.error,
        mlflow_run_id=m.mlflow_run_id,
        metrics=dict(metrics),
        artifacts=dict(artifacts),
    )


@dataclass(frozen=True)
class ClaimedCell:
    """A cell this process holds a lease on."""

    id: int
    key: str
    kind: str
    spec_json: str
    depends_on: list[str]
    token: str
    attempt: int


@dataclass(frozen=True)
class AttemptRow:
    cell_id: int
    n: int
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None
    worker: str | None
    error: str | None

    @classmethod
    def of(cls, m: Any, utc: Callable[[datetime | None], datetime | None]) -> AttemptRow:
        return cls(m.cell_id, m.n, utc(m.started_at), utc(m.ended_at), m.outcome, m.worker, m.error)

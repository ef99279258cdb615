"""SQLAlchemy ORM models of the SQL index: flat, typed, one class per table.

Times: every timestamp column is :class:`UTCDateTime`. PostgreSQL stores ``timestamptz``;
SQLite, which has no time zone type, stores naive UTC text. Either way a value goes in as
UTC and comes back as a timezone-aware UTC ``datetime``, so rows round-trip identically on
both backends. Naive datetimes handed in are taken to be UTC already.

The tables are created by the Alembic migrations in :mod:`storage.migrations`, never by
``metadata.create_all``; ``tests/storage/test_migrations.py`` checks the two agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.enums import CellState, Outcome

CELL_STATES = tuple(CellState)
OUTCOMES = tuple(Outcome)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always binds UTC and returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite stores text without an offset; compare like with like: naive UTC
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class StudyModel(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    advgrid_version: Mapped[str] = mapped_column(String(32))


class CellModel(Base):
    __tablename__ = "cells"
    __table_args__ = (
        UniqueConstraint("study_id", "key", name="uq_cells_study_key"),
        Index("ix_cells_study_state", "study_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    spec_json: Mapped[str] = mapped_column(Text)
    depends_on: Mapped[str] = mapped_column(Text, default="[]")
    state: Mapped[str] = mapped_column(String(16), default=CellState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_token: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))


class AttemptModel(Base):
    """One claim of a cell; ``outcome`` is NULL while it runs.

    ``n`` numbers the attempts of a cell over its whole history (1, 2, …), also across a
    :meth:`storage.Database.retry_quarantined`, which resets ``cells.attempts`` only.
    ``owner`` is the lease owner (``host:pid:nonce``) whose claim opened the attempt, never
    changed afterwards (NULL for attempts recorded before revision 0002); ``worker`` starts
    as the owner and becomes where the attempt ran once its result is recorded. ``note`` is
    what a successful attempt said of its run (revision 0003): a train cell's resume.
    """

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("cell_id", "n", name="uq_attempts_cell_n"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)


class MetricModel(Base):
    __tablename__ = "metrics"

    cell_id: Mapped[int] = mapped_column(
        ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class ArtifactModel(Base):
    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    uri: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    meta_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CellArtifactModel(Base):
    __tablename__ = "cell_artifacts"

    cell_id: Mapped[int] = mapped_column(
        ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)


TABLES = (StudyModel, CellModel, AttemptModel, MetricModel, ArtifactModel, CellArtifactModel)

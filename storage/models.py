"""SQLAlchemy ORM models of the SQL index: flat, typed, one class per table.

Timestamps are stored as timezone-aware UTC (``DateTime(timezone=True)``); on SQLite, which
has no time zone type, they are written and read back as naive UTC and normalized by
:func:`storage.db.utc`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


Time = DateTime(timezone=True)


class StudyModel(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    spec_yaml: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Time)
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
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AttemptModel(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("cell_id", "n", name="uq_attempts_cell_n"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(Time)
    ended_at: Mapped[datetime | None] = mapped_column(Time, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


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
    created_at: Mapped[datetime] = mapped_column(Time)


class CellArtifactModel(Base):
    __tablename__ = "cell_artifacts"

    cell_id: Mapped[int] = mapped_column(
        ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"), index=True)

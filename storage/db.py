"""The SQL index: engine set-up, schema migrations, studies and cell queries.

One :class:`Database` per URL. Every public method is one transaction, run through
:meth:`Database._session`, which commits, rolls back and wraps SQLAlchemy's errors in
:class:`StorageError`. Methods return frozen dataclasses, never ORM objects. Leases live in
:mod:`storage.leases`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, insert, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage.errors import NotFoundError, SchemaOutOfDateError, StorageError
from storage.leases import LeaseMixin
from storage.models import (
    ArtifactModel,
    AttemptModel,
    CellArtifactModel,
    CellModel,
    MetricModel,
    StudyModel,
)
from storage.rows import AttemptRow, CellRow, NewCell, StudyRow, cell_row

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def utc(value: datetime | None) -> datetime | None:
    """Timestamps as aware UTC, whatever the backend returned."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _normalize(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _engine(url: str) -> Engine:
    parsed = make_url(_normalize(url))
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, future=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # take the write lock up front: no deadlock between two readers upgrading to writers
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database(LeaseMixin):
    """The SQL index behind one URL (``sqlite:///…`` or ``postgresql://…``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.masked_url = mask_url(url)
        try:
            self.engine = _engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot open database {self.masked_url}: {exc}") from exc
        self.dialect = self.engine.dialect.name

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Database:
        """Open ``url``; an empty database is created at the current schema when ``create``.

        Raises :class:`SchemaOutOfDateError` with the command that fixes it when the schema
        is older (or newer) than this advgrid's.
        """
        db = cls(url)
        current, head = db.current_revision(), db.head_revision()
        if current == head:
            return db
        if current is None and create and not db._has_tables():
            db.upgrade()
            return db
        if current is None:
            raise SchemaOutOfDateError(
                f"database {db.masked_url} has no advgrid schema; create it with "
                f"`advgrid db upgrade --db {db.masked_url}`"
            )
        if current in db._known_revisions():
            raise SchemaOutOfDateError(
                f"database {db.masked_url} is at schema revision {current}, this advgrid "
                f"needs {head}; run `advgrid db upgrade --db {db.masked_url}`"
            )
        raise SchemaOutOfDateError(
            f"database {db.masked_url} is at schema revision {current}, newer than this "
            f"advgrid knows ({head}); upgrade advgrid"
        )

    # -- sessions and migrations ----------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = Session(self.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StorageError(f"database error on {self.masked_url}: {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", _normalize(self.url).replace("%", "%%"))
        return cfg

    def _has_tables(self) -> bool:
        try:
            return bool(inspect(self.engine).get_table_names())
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot reach database {self.masked_url}: {exc}") from exc

    def _known_revisions(self) -> set[str]:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic_config())
        return {rev.revision for rev in script.walk_revisions()}

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot reach database {self.masked_url}: {exc}") from exc

    def upgrade(self, revision: str = "head") -> tuple[str | None, str | None]:
        """Migrate to ``revision``; returns (before, after)."""
        from alembic import command

        before = self.current_revision()
        cfg = self._alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise StorageError(f"migration of {self.masked_url} failed: {exc}") from exc
        after = self.current_revision()
        log.info("database %s: %s -> %s", self.masked_url, before, after)
        return before, after

    def info(self) -> dict[str, Any]:
        """Masked URL, dialect, schema revision and row counts."""
        tables = [StudyModel, CellModel, AttemptModel, MetricModel, ArtifactModel]
        current = self.current_revision()
        counts = {}
        if current is not None:
            with self._session() as s:
                counts = {
                    t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in tables
                }
        return {
            "url": self.masked_url,
            "dialect": self.dialect,
            "revision": current,
            "head": self.head_revision(),
            "rows": counts,
        }

    def _now(self, session: Session) -> datetime:
        """The database clock (PostgreSQL); SQLite has none, so this process's UTC clock."""
        if self.dialect == "postgresql":
            return utc(session.scalar(select(func.now())))  # type: ignore[return-value]
        return datetime.now(timezone.utc)

    @staticmethod
    def _later(now: datetime, seconds: float) -> datetime:
        return now + timedelta(seconds=seconds)

    # -- studies -------------------------------------------------------------------------

    def upsert_study(
        self, name: str, spec_yaml: str, spec_hash: str, created_by: str, advgrid_version: str
    ) -> StudyRow:
        """Create study ``name`` or update its spec; returns the row."""
        with self._session() as s:
            row = s.scalars(select(StudyModel).where(StudyModel.name == name)).one_or_none()
            if row is None:
                row = StudyModel(
                    name=name,
                    spec_yaml=spec_yaml,
                    spec_hash=spec_hash,
                    created_at=self._now(s),
                    created_by=created_by,
                    advgrid_version=advgrid_version,
                )
                s.add(row)
            elif row.spec_hash != spec_hash:
                row.spec_yaml, row.spec_hash = spec_yaml, spec_hash
            s.flush()
            return StudyRow.of(row)

    def find_study(self, name: str) -> StudyRow | None:
        with self._session() as s:
            row = s.scalars(select(StudyModel).where(StudyModel.name == name)).one_or_none()
            return StudyRow.of(row) if row else None

    def get_study(self, name: str) -> StudyRow:
        found = self.find_study(name)
        if found is None:
            known = [s.name for s in self.list_studies()]
            raise NotFoundError(
                f"no study named {name!r} in {self.masked_url}; known studies: "
                f"{', '.join(known) or 'none'}"
            )
        return found

    def list_studies(self) -> list[StudyRow]:
        with self._session() as s:
            return [StudyRow.of(r) for r in s.scalars(select(StudyModel).order_by(StudyModel.id))]

    # -- cells ---------------------------------------------------------------------------

    def add_cells(self, study_id: int, cells: Iterable[NewCell]) -> int:
        """Insert the cells whose key is new for this study; returns how many."""
        with self._session() as s:
            existing = set(s.scalars(select(CellModel.key).where(CellModel.study_id == study_id)))
            rows, seen = [], set()
            for c in cells:
                if c.key in existing or c.key in seen:
                    continue
                seen.add(c.key)
                rows.append(
                    {
                        "study_id": study_id,
                        "key": c.key,
                        "kind": c.kind,
                        "spec_json": c.spec_json,
                        "depends_on": json.dumps(list(c.depends_on)),
                        "state": "pending",
                        "attempts": 0,
                    }
                )
            for i in range(0, len(rows), 5000):
                s.execute(insert(CellModel), rows[i : i + 5000])
            return len(rows)

    def cells(
        self, study_id: int, *, kind: str | None = None, state: str | None = None
    ) -> list[CellRow]:
        """Cells of a study (optionally one kind/state) with metrics and artifact roles."""
        with self._session() as s:
            q = select(CellModel).where(CellModel.study_id == study_id)
            if kind:
                q = q.where(CellModel.kind == kind)
            if state:
                q = q.where(CellModel.state == state)
            return self._rows(s, list(s.scalars(q.order_by(CellModel.id))), study_id)

    def _rows(self, s: Session, cells: list[CellModel], study_id: int) -> list[CellRow]:
        if not cells:
            return []
        metrics: dict[int, dict[str, float]] = defaultdict(dict)
        arts: dict[int, dict[str, str]] = defaultdict(dict)
        ids = [c.id for c in cells]
        for i in range(0, len(ids), 10_000):
            chunk = ids[i : i + 10_000]
            for cid, name, value in s.execute(
                select(MetricModel.cell_id, MetricModel.name, MetricModel.value).where(
                    MetricModel.cell_id.in_(chunk)
                )
            ):
                metrics[cid][name] = value
            for cid, role, digest in s.execute(
                select(
                    CellArtifactModel.cell_id, CellArtifactModel.role, CellArtifactModel.digest
                ).where(CellArtifactModel.cell_id.in_(chunk))
            ):
                arts[cid][role] = digest
        return [cell_row(c, metrics[c.id], arts[c.id], utc) for c in cells]

    def get_cell(self, study_id: int, key: str) -> CellRow:
        with self._session() as s:
            cell = s.scalars(
                select(CellModel).where(CellModel.study_id == study_id, CellModel.key == key)
            ).one_or_none()
            if cell is None:
                raise NotFoundError(f"no cell {key[:12]}… in study id {study_id}")
            return self._rows(s, [cell], study_id)[0]

    def counts(self, study_id: int) -> dict[str, dict[str, int]]:
        """``{kind: {state: count}}``."""
        with self._session() as s:
            out: dict[str, dict[str, int]] = defaultdict(dict)
            q = (
                select(CellModel.kind, CellModel.state, func.count())
                .where(CellModel.study_id == study_id)
                .group_by(CellModel.kind, CellModel.state)
            )
            for kind, state, n in s.execute(q):
                out[kind][state] = n
            return dict(out)

    def attempts(self, cell_id: int) -> list[AttemptRow]:
        with self._session() as s:
            q = select(AttemptModel).where(AttemptModel.cell_id == cell_id).order_by(AttemptModel.n)
            return [AttemptRow.of(a, utc) for a in s.scalars(q)]

    def artifacts_of(self, study_id: int, keys: list[str], role: str) -> dict[str, str]:
        """``{cell key: digest}`` of the ``role`` artifacts of the given cells."""
        with self._session() as s:
            q = (
                select(CellModel.key, CellArtifactModel.digest)
                .join(CellArtifactModel, CellArtifactModel.cell_id == CellModel.id)
                .where(
                    CellModel.study_id == study_id,
                    CellModel.key.in_(keys),
                    CellArtifactModel.role == role,
                )
            )
            return {k: d for k, d in s.execute(q)}

    def unlogged_done(self, study_id: int) -> list[CellRow]:
        """Done cells with no MLflow run yet (the outbox)."""
        with self._session() as s:
            q = (
                select(CellModel)
                .where(
                    CellModel.study_id == study_id,
                    CellModel.state == "done",
                    CellModel.mlflow_run_id.is_(None),
                )
                .order_by(CellModel.id)
            )
            return self._rows(s, list(s.scalars(q)), study_id)

    def set_mlflow_run_id(self, cell_id: int, run_id: str) -> None:
        with self._session() as s:
            s.execute(update(CellModel).where(CellModel.id == cell_id).values(mlflow_run_id=run_id))

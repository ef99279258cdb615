"""The SQL index: :class:`Database`, one per database URL.

Every public method is one transaction (:meth:`DatabaseCore.session_scope`) and returns
frozen dataclasses from :mod:`storage.rows`, never ORM objects; ``get_*`` raises
:class:`NotFoundError`, ``find_*`` returns None. Cell queries live in :mod:`storage.cells`,
leases in :mod:`storage.leases`, the results committed under a lease in
:mod:`storage.commits`, the table queries in :mod:`storage.table_queries` and
:mod:`storage.defense_queries`, bundle merges in
:mod:`storage.merge`, the engine set-up in :mod:`storage.engine`, migrations in
:mod:`storage.migrate`.

URLs: ``sqlite:///PATH`` (the parent folder is created) or ``postgresql://USER@HOST/DB``
(psycopg 3; ``postgresql+psycopg://`` too). A URL is only ever logged or shown masked.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from storage import migrate
from storage.cells import CellsMixin
from storage.commits import CommitsMixin
from storage.core import error_message
from storage.defense_queries import DefenseQueriesMixin
from storage.engine import mask_url
from storage.errors import NotFoundError, SchemaOutOfDateError, StorageError
from storage.leases import LeaseMixin
from storage.merge import BundleMixin
from storage.models import TABLES, ArtifactModel, CellArtifactModel, CellModel, StudyModel
from storage.rows import ArtifactRecord, StudyRow, artifact_record, study_row
from storage.table_queries import TableQueriesMixin

__all__ = ["Database", "mask_url"]

log = logging.getLogger(__name__)


class Database(
    CellsMixin, LeaseMixin, CommitsMixin, BundleMixin, TableQueriesMixin, DefenseQueriesMixin
):
    """The SQL index behind one URL.

    ``Database(url)`` connects lazily and checks nothing; :meth:`open` is the way in for
    everything but ``advgrid db upgrade``: it creates an empty database and refuses one
    whose schema is not this advgrid's.
    """

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Database:
        """Open the database at ``url``, creating the schema in an empty one.

        Args:
            url: Database URL.
            create: Create the schema when the database has no tables at all.

        Returns:
            The database, at the schema revision this advgrid needs.

        Raises:
            SchemaOutOfDateError: The schema is older (the message holds the
                ``advgrid db upgrade`` command), newer or foreign.
            StorageError: The database cannot be reached.
        """
        db = cls(url)
        try:
            db._check_schema(create)
        except BaseException:
            db.close()
            raise
        return db

    def _check_schema(self, create: bool) -> None:
        head = migrate.head_revision()
        current, tables = self._schema_state()
        if current == head:
            return
        if current is None and not tables and create:
            self.upgrade()
            log.info("created the advgrid schema %s in %s", head, self.masked_url)
            return
        raise SchemaOutOfDateError(migrate.schema_problem(self.masked_url, current, head, tables))

    def _schema_state(self) -> tuple[str | None, bool]:
        """The stamped revision and whether the database has any table."""
        try:
            with self._reader.connect() as conn:
                # tables first: a schema another driver commits between the two reads then
                # shows up with its revision, never as tables without one
                tables = migrate.has_tables(conn)
                return migrate.current_revision(conn), tables
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot read the schema of {self.masked_url}: {error_message(exc)}"
            ) from exc

    # -- schema ------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision stamped in the database; None when there is none."""
        return self._schema_state()[0]

    def head_revision(self) -> str:
        """The schema revision this advgrid needs."""
        return migrate.head_revision()

    def upgrade(self) -> tuple[str | None, str | None]:
        """Migrate the schema to this advgrid's (creating it in an empty database).

        Returns:
            ``(revision before, revision after)``; before is None for an empty database.

        Raises:
            StorageError: The migration failed; nothing was changed.
        """
        before = self.current_revision()
        try:
            migrate.upgrade(self.engine)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"migration of {self.masked_url} from revision {before} failed (nothing was "
                f"changed): {error_message(exc)}"
            ) from exc
        after = self.current_revision()
        log.info("database %s: schema %s -> %s", self.masked_url, before, after)
        return before, after

    def info(self) -> dict[str, Any]:
        """Masked URL, dialect, schema revision, this advgrid's revision and row counts.

        Returns:
            ``{"url", "dialect", "revision", "head", "rows": {table: count}}``; ``rows``
            is empty while the database has no schema.
        """
        current, counts = self.current_revision(), {}
        if current is not None:
            with self.session_scope(write=False) as s:
                for t in TABLES:
                    counts[t.__tablename__] = s.scalar(select(func.count()).select_from(t))
        return {
            "url": self.masked_url,
            "dialect": self.dialect,
            "revision": current,
            "head": self.head_revision(),
            "rows": counts,
        }

    # -- studies -----------------------------------------------------------------------

    def upsert_study(
        self, name: str, spec_yaml: str, spec_hash: str, created_by: str, advgrid_version: str
    ) -> StudyRow:
        """Create study ``name``, or update its spec (YAML and hash) if that changed.

        Safe against a concurrent driver creating the same study.

        Returns:
            The study as stored.
        """
        with self.session_scope() as s:
            values = {
                "name": name,
                "spec_yaml": spec_yaml,
                "spec_hash": spec_hash,
                "created_at": self._now(s),
                "created_by": created_by,
                "advgrid_version": advgrid_version,
            }
            s.execute(self._insert_ignore(StudyModel, ["name"]).values(**values))
            s.execute(
                update(StudyModel)
                .where(StudyModel.name == name, StudyModel.spec_hash != spec_hash)
                .values(spec_yaml=spec_yaml, spec_hash=spec_hash)
            )
            row = s.scalars(select(StudyModel).where(StudyModel.name == name)).one()
            return study_row(row)

    def find_study(self, name: str) -> StudyRow | None:
        """The study ``name``, or None."""
        with self.session_scope(write=False) as s:
            row = s.scalars(select(StudyModel).where(StudyModel.name == name)).one_or_none()
            return study_row(row) if row else None

    def get_study(self, name: str) -> StudyRow:
        """The study ``name``.

        Raises:
            NotFoundError: No such study; the message lists the known ones.
        """
        with self.session_scope(write=False) as s:
            row = s.scalars(select(StudyModel).where(StudyModel.name == name)).one_or_none()
            if row is not None:
                return study_row(row)
            known = list(s.scalars(select(StudyModel.name).order_by(StudyModel.name)))
        raise NotFoundError(
            f"no study named {name!r} in {self.masked_url}; known studies: "
            f"{', '.join(known) or 'none'}"
        )

    def list_studies(self) -> list[StudyRow]:
        """Every study, oldest first."""
        with self.session_scope(write=False) as s:
            return [study_row(r) for r in s.scalars(select(StudyModel).order_by(StudyModel.id))]

    # -- artifacts ---------------------------------------------------------------------

    def find_artifact(self, digest: str) -> ArtifactRecord | None:
        """The index entry of artifact ``digest``, or None."""
        with self.session_scope(write=False) as s:
            row = s.get(ArtifactModel, digest)
            return artifact_record(row) if row else None

    def artifacts(
        self, *, study: str | None = None, kind: str | None = None
    ) -> list[ArtifactRecord]:
        """The indexed artifacts, oldest first: all of them, or those the cells of ``study``
        wrote, and only those of ``kind`` (``checkpoint``, ``adversarial``…) if given.

        Raises:
            NotFoundError: ``study`` names no study.
        """
        query = select(ArtifactModel).order_by(ArtifactModel.created_at, ArtifactModel.digest)
        if kind is not None:
            query = query.where(ArtifactModel.kind == kind)
        if study is not None:
            used = (
                select(CellArtifactModel.digest)
                .join(CellModel, CellModel.id == CellArtifactModel.cell_id)
                .where(CellModel.study_id == self.get_study(study).id)
            )
            query = query.where(ArtifactModel.digest.in_(used))
        with self.session_scope(write=False) as s:
            return [artifact_record(row) for row in s.scalars(query)]

    def artifact_digests(self) -> list[str]:
        """The digest of every indexed artifact, sorted."""
        with self.session_scope(write=False) as s:
            return list(s.scalars(select(ArtifactModel.digest).order_by(ArtifactModel.digest)))

    def artifact(self, digest: str) -> ArtifactRecord:
        """The index entry of artifact ``digest``.

        Raises:
            NotFoundError: No artifact with that digest is indexed.
        """
        found = self.find_artifact(digest)
        if found is None:
            raise NotFoundError(
                f"no artifact {digest!r} in the index at {self.masked_url}; "
                "`advgrid artifacts ls` lists the indexed ones"
            )
        return found

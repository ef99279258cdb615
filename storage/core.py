"""What every part of :class:`storage.Database` stands on: engine, sessions, clock.

Every public method of :class:`storage.Database` is one :meth:`DatabaseCore.session_scope`:
one transaction that commits, or rolls back and wraps SQLAlchemy's error in
:class:`StorageError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Insert, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from storage.engine import READ_ONLY, make_engine, mask_url
from storage.errors import DatabaseUnavailableError, StorageError
from storage.models import as_utc

log = logging.getLogger(__name__)


class DatabaseCore:
    """Engine, transactions and the clock of one database URL.

    Attributes:
        masked_url: The URL with its password masked: the only form ever logged or shown.
        dialect: ``sqlite`` or ``postgresql``.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self.masked_url = mask_url(url)
        try:
            self.engine = make_engine(url)
        except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
            raise StorageError(
                f"cannot open database {self.masked_url}: {error_message(exc)}; expected "
                "sqlite:///PATH or postgresql://USER@HOST/DB"
            ) from exc
        self._reader = self.engine.execution_options(**{READ_ONLY: True})
        self.dialect = self.engine.dialect.name

    def close(self) -> None:
        """Close every pooled connection (the object may still be used afterwards)."""
        self.engine.dispose()

    @contextmanager
    def session_scope(self, *, write: bool = True) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error.

        Args:
            write: False for a read-only transaction (on SQLite a deferred ``BEGIN``
                that does not take the write lock).

        Yields:
            The session.

        Raises:
            StorageError: The database failed; the original error is its ``__cause__``.
        """
        session = Session(self.engine if write else self._reader, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            _rollback(session)
            error = DatabaseUnavailableError if _unavailable(exc) else StorageError
            raise error(f"database error on {self.masked_url}: {error_message(exc)}") from exc
        except BaseException:
            _rollback(session)
            raise
        finally:
            session.close()

    def _now(self, session: Session) -> datetime:
        """The time every lease is compared with, aware UTC.

        PostgreSQL: the database clock (``now()``, the start of this transaction), so
        drivers on machines with skewed clocks agree. SQLite has no server, and every
        process using the file runs on this machine: this process's UTC clock.
        """
        if self.dialect == "postgresql":
            return as_utc(session.execute(select(func.now())).scalar_one())
        return datetime.now(timezone.utc)

    def _insert_ignore(self, model: Any, conflict: Sequence[str]) -> Insert:
        """``INSERT … ON CONFLICT (conflict) DO NOTHING`` in this dialect."""
        if self.dialect == "postgresql":
            return postgresql.insert(model).on_conflict_do_nothing(index_elements=conflict)
        if self.dialect == "sqlite":
            return sqlite.insert(model).on_conflict_do_nothing(index_elements=conflict)
        raise StorageError(f"unsupported database dialect {self.dialect!r} at {self.masked_url}")


def _rollback(session: Session) -> None:
    """Roll back; on a dropped connection that fails too, and the server has rolled back."""
    try:
        session.rollback()
    except SQLAlchemyError:
        log.debug("rollback failed on a broken connection", exc_info=True)


def _unavailable(exc: SQLAlchemyError) -> bool:
    """Whether ``exc`` means the database could not be reached or the connection dropped.

    SQLAlchemy marks a dropped connection ``connection_invalidated``; the drivers raise
    ``OperationalError`` when a server cannot be reached or a SQLite file stays locked, and
    ``InterfaceError`` on a connection closed under them.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError))


def error_message(exc: BaseException) -> str:
    """An error's message without the SQL, parameters and help link SQLAlchemy appends."""
    text = str(exc).split("\n[SQL:")[0].split("\n(Background")[0].strip()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or repr(exc)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (bound-parameter limits of IN lists)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""Database URLs and engines: password masking, driver mapping, SQLite settings.

SQLite runs in WAL mode with a 30 s busy timeout and foreign keys on. pysqlite's own
transaction handling is switched off (``isolation_level = None``) and every transaction is
begun by hand: ``BEGIN IMMEDIATE`` for writes, so two writers never deadlock upgrading a
shared lock, and a plain deferred ``BEGIN`` for reads, which in WAL mode never wait for a
writer. A connection opened through an engine carrying the ``READ_ONLY`` execution option
is a reader.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

log = logging.getLogger(__name__)

READ_ONLY = "advgrid_read_only"
BUSY_TIMEOUT_S = 30
# libpq also takes a password as a query parameter: ?password=…
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


def mask_url(url: str | URL) -> str:
    """Return ``url`` with any password (user info or query parameter) replaced by ``***``.

    Args:
        url: A database URL.

    Returns:
        The URL, safe to log or show; a placeholder if it cannot be parsed.
    """
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except Exception:  # whatever the URL is, never echo it
        return "<unparseable database URL>"
    return _QUERY_SECRET.sub(r"\1***", rendered)


# the password of user info in any URL: scheme://user:PASSWORD@host
_USERINFO_SECRET = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]*:)([^\s/@'\"]+)(@)")
_TEXT_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#\s'\"]*")


def mask_secrets(text: str) -> str:
    """Return ``text`` with the password of every URL in it replaced by ``***``.

    For free text that may hold URLs: log lines, tracebacks, study files.

    Args:
        text: Any text.

    Returns:
        The text, with ``scheme://user:***@host`` and ``?password=***``.
    """
    return _TEXT_QUERY_SECRET.sub(r"\1***", _USERINFO_SECRET.sub(r"\1***\3", text))


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (SQLite or PostgreSQL), configured as described above."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see _sqlite_on_begin
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        _enable_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
    finally:
        cur.close()


def _enable_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds the file.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without the busy handler, while another connection is creating the
    schema; the switch is idempotent, so it is retried for up to the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _sqlite_on_begin(conn: Any) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

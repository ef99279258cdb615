"""Schema migrations: Alembic run programmatically, no ``alembic.ini`` needed.

The migration scripts live in :mod:`storage.migrations` (package data). Upgrades run on a
connection handed to ``env.py`` through ``Config.attributes["connection"]``, so they use
the same engine settings as everything else (``BEGIN IMMEDIATE`` on SQLite). On
PostgreSQL an upgrade first takes a transaction-scoped advisory lock, so two drivers
opening the same empty database at once create the schema once.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
# an arbitrary constant naming advgrid's lock among other pg_advisory_lock users
_PG_LOCK_KEY = 0x616476677269
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts (and at ``connection``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The schema revision this advgrid needs."""
    head = _script().get_current_head()
    assert head is not None, f"no migration scripts found in {MIGRATIONS}"
    return head


def known_revisions() -> set[str]:
    """Every revision this advgrid has a migration script for."""
    return {rev.revision for rev in _script().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, None when unstamped."""
    return MigrationContext.configure(connection).get_current_revision()


def has_tables(connection: Connection) -> bool:
    """Whether the database holds any table at all."""
    return bool(inspect(connection).get_table_names())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` in one transaction."""
    # alembic's ``context`` is process-global: two threads migrating at once would share it
    with _ALEMBIC_LOCK, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)


def schema_problem(masked_url: str, current: str | None, head: str, tables: bool) -> str:
    """Why a database at ``current`` cannot be used by this advgrid, and what to do."""
    fix = f"`advgrid db upgrade --db {masked_url}`"
    if current is None and not tables:
        return (
            f"database {masked_url} is empty (expected advgrid schema {head}); create it with {fix}"
        )
    if current is None:
        return (
            f"database {masked_url} has tables but no advgrid schema revision (expected {head}); "
            f"if it is an advgrid index, bring it up to date with {fix}; if it belongs to "
            "another application, give advgrid a database of its own"
        )
    if current in known_revisions():
        return (
            f"database {masked_url} is at advgrid schema revision {current}, this advgrid needs "
            f"{head}; back the database up, then run {fix}"
        )
    return (
        f"database {masked_url} is at schema revision {current!r}, newer than this advgrid knows "
        f"(its newest is {head}): upgrade advgrid (pip install -U advgrid), or, if the "
        "database belongs to another application, give advgrid a database of its own"
    )

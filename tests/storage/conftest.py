"""A database per test, on SQLite and (where a server answers) on PostgreSQL.

PostgreSQL: a fresh, uniquely named database on the server at ``ADVGRID_TEST_PG_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), dropped afterwards.
With no server the ``postgres`` cases skip and say why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from storage import Database, mask_url

PG_URL = os.environ.get(
    "ADVGRID_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the test server's maintenance database."""
    engine = create_engine(
        PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # no server (or no driver): the postgres cases skip, saying why
        engine.dispose()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        pytest.skip(
            f"no PostgreSQL server answers at {mask_url(PG_URL)} ({reason}); "
            "set ADVGRID_TEST_PG_URL to run the postgres cases"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """URL of a fresh, uniquely named PostgreSQL database, dropped afterwards."""
    name = f"advgrid_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'index.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A database at the current schema, on each backend."""
    database = Database.open(db_url)
    yield database
    database.close()

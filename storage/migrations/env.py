"""Alembic environment: runs on a connection handed over by :mod:`storage.migrate`, or on a URL.

:func:`storage.migrate.upgrade` passes its connection in ``config.attributes["connection"]``
(the normal way: same engine settings, one transaction). The URL branch serves the
``alembic`` command line, with ``-x url=…`` or ``sqlalchemy.url`` in an ini file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.engine import normalize_url
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=… or set sqlalchemy.url")
    return normalize_url(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

"""Upgrades from a stored old database: revision 0001 to this advgrid's head, on every backend.

``data/advgrid-0001.sqlite`` was written by advgrid at schema revision 0001 (a finished
study, ``data/stored.yaml``); ``data/advgrid-0001.json`` is what that advgrid reported about
it: its ``advgrid results --format json`` rows and every table row (``stored_db.py``,
``data/README.md``). The tests only touch copies. On PostgreSQL a fresh database is brought
to 0001 with Alembic and filled with the stored rows first.

Nothing here names the head revision: a later migration keeps these tests valid, and they
then test 0001 → that head.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, MetaData, create_engine, insert, select, text
from stored_db import DATA, STUDY_FILE, dump

from storage import Database, NewCell, SchemaOutOfDateError, mask_url
from storage.engine import make_engine
from storage.migrate import head_revision
from storage.migrate import upgrade as migrate_to
from tests.conftest import Cli

STORED = DATA / "advgrid-0001.sqlite"
EXPECTED: dict[str, Any] = json.loads(STORED.with_suffix(".json").read_text())
OLD: str = EXPECTED["revision"]
STUDY: str = EXPECTED["study"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a database at revision 0001 holding the stored rows: a copy of the file, or
    a fresh PostgreSQL database loaded from it."""
    copy = tmp_path / "old" / "advgrid.db"
    copy.parent.mkdir()
    shutil.copyfile(STORED, copy)
    if request.param == "sqlite":
        return f"sqlite:///{copy}"
    url: str = request.getfixturevalue("pg_url")
    _load(url, copy)
    return url


def _load(url: str, source: Path) -> None:
    """Bring ``url`` to revision OLD with Alembic, then copy every row of ``source`` in."""
    engine, src = make_engine(url), create_engine(f"sqlite:///{source}")
    try:
        migrate_to(engine, OLD)
        with src.connect() as read, engine.begin() as write:
            stored, target = MetaData(), MetaData()
            stored.reflect(read)
            target.reflect(write)
            for table in target.sorted_tables:  # parents before children
                if table.name == "alembic_version":
                    continue
                rows = [_utc(r) for r in read.execute(select(stored.tables[table.name])).mappings()]
                if rows:
                    write.execute(insert(table), rows)
                _advance_serial(write, table.name, [c.name for c in table.primary_key])
    finally:
        engine.dispose()
        src.dispose()


def _utc(row: Any) -> dict[str, Any]:
    """A stored row for ``timestamptz`` columns: advgrid's SQLite keeps naive UTC."""
    return {
        k: v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) and v.tzinfo is None else v
        for k, v in row.items()
    }


def _advance_serial(conn: Connection, table: str, key: list[str]) -> None:
    """Move a serial key's sequence past the copied ids, as if the rows had been inserted."""
    if len(key) != 1:
        return
    seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": key[0]})
    name = seq.scalar()
    if name is not None:
        top = f'SELECT COALESCE(MAX("{key[0]}"), 0) + 1 FROM "{table}"'
        conn.execute(text(f"SELECT setval(:seq, ({top}), false)"), {"seq": name})


def _stored_columns(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every table the stored database has, with only the columns it has."""
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            now = dump(conn)
    finally:
        db.close()
    assert set(EXPECTED["tables"]) <= set(now)
    return {
        name: [{c: row[c] for c in (rows[0] if rows else {})} for row in now[name]]
        for name, rows in EXPECTED["tables"].items()
    }


def _digest(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    return hashlib.sha256(Path(url.removeprefix("sqlite:///")).read_bytes()).hexdigest()


def _revision(url: str) -> str | None:
    db = Database(url)
    try:
        return db.current_revision()
    finally:
        db.close()


def test_the_stored_database_is_at_0001_and_matches_its_dump(tmp_path: Path) -> None:
    """The stored pair itself: if this fails, it was regenerated inconsistently."""
    assert OLD == "0001"
    assert head_revision() != OLD
    copy = tmp_path / "advgrid.db"
    shutil.copyfile(STORED, copy)  # even a read of a WAL database writes beside it
    engine = create_engine(f"sqlite:///{copy}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(OLD,)]
            assert dump(conn) == EXPECTED["tables"]
    finally:
        engine.dispose()
    assert len(EXPECTED["tables"]["cells"]) == len(EXPECTED["results"]) == 8
    assert {c["state"] for c in EXPECTED["tables"]["cells"]} == {"done"}


def test_an_old_database_is_refused_with_the_upgrade_command_and_left_alone(
    old_url: str, cli: Cli, workdir: Path
) -> None:
    before = _digest(old_url)
    fix = f"`advgrid db upgrade --db {mask_url(old_url)}`"
    with pytest.raises(SchemaOutOfDateError) as info:
        Database.open(old_url)
    assert str(info.value).endswith(f"then run {fix}")
    assert f"is at advgrid schema revision {OLD}, this advgrid needs {head_revision()}" in str(
        info.value
    )
    run = cli("run", STUDY_FILE, "--db", old_url, "--executor", "inline", "--no-mlflow", "-q")
    assert run.exit_code == 1
    assert run.output.startswith(f"Error: database {mask_url(old_url)} is at advgrid schema")
    assert run.output.rstrip().endswith(f"then run {fix}")
    assert _digest(old_url) == before  # None on PostgreSQL: the rows below say it
    assert _revision(old_url) == OLD
    assert _stored_columns(old_url) == EXPECTED["tables"]


def test_upgrade_keeps_every_row_and_the_study_stays_done(
    old_url: str, cli: Cli, workdir: Path
) -> None:
    upgraded = cli("db", "upgrade", "--db", old_url)
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.strip() == f"database at revision {head_revision()} (was {OLD})"
    assert _revision(old_url) == head_revision()
    assert _stored_columns(old_url) == EXPECTED["tables"]

    results = cli("results", STUDY, "--db", old_url, "--format", "json")
    assert results.exit_code == 0, results.output
    rows, expected = json.loads(results.output), EXPECTED["results"]
    assert len(rows) == len(expected)
    # keys added to the rows since then may come; the old ones keep their values
    assert [{k: r.get(k) for k in e} for r, e in zip(rows, expected, strict=True)] == expected

    store = workdir / "store"
    args = ("--db", old_url, "--store", store, "--executor", "inline", "--no-mlflow")
    run = cli("run", STUDY_FILE, *args)
    assert run.exit_code == 0, run.output
    assert f"{len(rows)} cells" in run.output
    assert "0 new, 0 to run" in run.output
    assert _stored_columns(old_url) == EXPECTED["tables"]


def test_after_the_upgrade_old_attempts_have_no_owner_and_new_claims_write_it(
    old_url: str, cli: Cli, workdir: Path
) -> None:
    assert cli("db", "upgrade", "--db", old_url).exit_code == 0
    db = Database.open(old_url, create=False)
    try:
        study = db.get_study(STUDY)
        old = [a for c in db.cells(study.id) for a in db.attempts(c.id)]
        stored = EXPECTED["tables"]["attempts"]
        assert [(a.id, a.worker, a.outcome) for a in old] == [
            (a["id"], a["worker"], a["outcome"]) for a in stored
        ]
        assert {a.owner for a in old} == {None}

        db.add_cells(study.id, [NewCell(key="f" * 64, kind="attack", spec_json="{}")])
        (claimed,) = db.claim(study.id, "host:9:feed", 5, 60, 3)
        assert claimed.key == "f" * 64
        assert db.complete(
            claimed.id, claimed.token, metrics={}, artifacts={}, duration_s=1, worker="node:1"
        )
        (attempt,) = db.attempts(claimed.id)
        assert (attempt.n, attempt.owner, attempt.worker, attempt.outcome) == (
            1,
            "host:9:feed",
            "node:1",
            "ok",
        )
        assert attempt.id > max(a["id"] for a in stored)
    finally:
        db.close()

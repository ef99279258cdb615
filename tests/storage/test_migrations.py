"""Schema migrations on every backend: creation, refusal of other revisions, the scripts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from storage import Database, NewCell, SchemaOutOfDateError, mask_url
from storage.migrate import alembic_config, head_revision
from storage.models import Base

TABLES = {"studies", "cells", "attempts", "metrics", "artifacts", "cell_artifacts"}


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def test_upgrade_creates_an_empty_database_once(db_url: str) -> None:
    db = Database(db_url)
    head = head_revision()
    assert db.current_revision() is None
    assert db.upgrade() == (None, head)
    assert db.upgrade() == (head, head)
    assert _tables(db) == TABLES | {"alembic_version"}
    db.close()


def test_a_database_stamped_at_base_is_refused_with_the_command(db: Database, db_url: str) -> None:
    with db.engine.begin() as conn:
        command.stamp(alembic_config(conn), "base")
    with pytest.raises(SchemaOutOfDateError) as info:
        Database.open(db_url)
    assert f"`advgrid db upgrade --db {mask_url(db_url)}`" in str(info.value)
    assert f"no advgrid schema revision (expected {head_revision()})" in str(info.value)


def test_an_older_revision_is_refused_with_the_command(db: Database, db_url: str) -> None:
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    with pytest.raises(SchemaOutOfDateError) as info:
        Database.open(db_url)
    message = str(info.value)
    assert f"is at advgrid schema revision 0001, this advgrid needs {head_revision()}" in message
    assert message.endswith(f"run `advgrid db upgrade --db {mask_url(db_url)}`")


def test_a_newer_revision_is_refused(db: Database, db_url: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SchemaOutOfDateError, match="newer than this advgrid knows") as info:
        Database.open(db_url)
    assert "upgrade advgrid" in str(info.value)
    assert "advgrid db upgrade" not in str(info.value)


def test_an_empty_database_is_left_alone_without_create(db_url: str) -> None:
    with pytest.raises(SchemaOutOfDateError, match="is empty.*advgrid db upgrade --db"):
        Database.open(db_url, create=False)
    db = Database(db_url)
    assert _tables(db) == set()
    db.close()


def test_another_applications_tables_are_not_touched(db_url: str) -> None:
    other = Database(db_url)
    with other.engine.begin() as conn:
        conn.execute(text("CREATE TABLE experiments (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaOutOfDateError, match="has tables but no advgrid schema revision"):
        Database.open(db_url)
    assert _tables(other) == {"experiments"}
    other.close()


def test_concurrent_opens_of_an_empty_database_create_it_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            Database.open(db_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    assert errors == []
    assert Database(db_url).current_revision() == head_revision()


def test_concurrent_drivers_create_an_empty_database_once(db_url: str) -> None:
    code = (
        "import sys, time; from storage import Database; "
        "time.sleep(max(0, float(sys.argv[2]) - time.time())); "  # all start together
        "Database.open(sys.argv[1]).close()"
    )
    root, start = Path(__file__).resolve().parents[2], time.time() + 1.2
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url, str(start)],
            cwd=root,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    failures = [p.communicate(timeout=60)[1] for p in procs if p.wait(timeout=60) != 0]
    assert failures == []
    assert Database(db_url).current_revision() == head_revision()


def test_the_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_0002_downgrades_to_0001_and_back_keeping_the_attempts(db: Database) -> None:
    study = db.upsert_study("s", "name: s", "0" * 64, "me", "0").id
    db.add_cells(study, [NewCell(key="a" * 64, kind="attack", spec_json="{}")])
    (claimed,) = db.claim(study, "host:1:abc", 1, 60, 3)
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    with db.engine.connect() as conn:
        found = inspect(conn)
        assert "owner" not in {c["name"] for c in found.get_columns("attempts")}
        assert "ix_attempts_cell_id" in {i["name"] for i in found.get_indexes("attempts")}
        unique = {u["name"] for u in found.get_unique_constraints("attempts")}
        assert unique == {"uq_attempts_cell_n"}
        assert conn.execute(text("SELECT cell_id, n, worker FROM attempts")).all() == [
            (claimed.id, 1, "host:1:abc")
        ]
    assert db.upgrade() == ("0001", head_revision())
    (attempt,) = db.attempts(claimed.id)
    assert (attempt.n, attempt.worker, attempt.owner) == (1, "host:1:abc", None)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_0003_keeps_an_attempt_note_and_downgrades_without_it(db: Database) -> None:
    study = db.upsert_study("s", "name: s", "0" * 64, "me", "0").id
    db.add_cells(study, [NewCell(key="b" * 64, kind="train", spec_json="{}")])
    (claimed,) = db.claim(study, "host:1:abc", 1, 60, 3)
    note = ["resumed at epoch 2 of 4 from state 0123456789ab"]
    assert db.complete(
        claimed.id, claimed.token, metrics={}, artifacts={}, duration_s=1.0, worker="w", notes=note
    )
    (attempt,) = db.attempts(claimed.id)
    assert attempt.note == note[0]
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    with db.engine.connect() as conn:
        assert "note" not in {c["name"] for c in inspect(conn).get_columns("attempts")}
    assert db.upgrade() == ("0002", head_revision())
    (attempt,) = db.attempts(claimed.id)
    assert (attempt.outcome, attempt.note) == ("ok", None)


def test_downgrade_drops_every_table(db: Database) -> None:
    with db.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert _tables(db) <= {"alembic_version"}
    assert db.current_revision() is None


def test_env_py_runs_from_a_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    cfg = alembic_config()
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")
    db = Database.open(url, create=False)
    assert _tables(db) == TABLES | {"alembic_version"}
    db.close()


@pytest.mark.postgres
def test_the_upgrade_command_in_messages_masks_the_password(pg_url: str) -> None:
    url = make_url(pg_url).set(password="s3cret").render_as_string(hide_password=False)
    with pytest.raises(SchemaOutOfDateError) as info:
        Database.open(url, create=False)  # the test server trusts local connections
    assert "s3cret" not in str(info.value)
    assert f"--db {mask_url(url)}`" in str(info.value)
    assert ":***@" in str(info.value)


def test_concurrent_opens_of_new_sqlite_files_never_see_a_locked_database(tmp_path) -> None:
    """Switching a new file to WAL races with the schema's creation; it must wait, not fail.

    Before the retry in ``storage.engine`` this failed in about half the rounds.
    """
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        errors: list[BaseException] = []

        def open_it(url: str = url, errors: list[BaseException] = errors) -> None:
            try:
                Database.open(url).close()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_it, daemon=True) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == [], f"round {round_}"
        assert Database(url).current_revision() == head_revision()

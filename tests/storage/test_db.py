"""The storage contract, run on every backend: schema, studies, cells, results, URLs.

Leases (claim, heartbeat, fail, release, expiry) are in ``test_leases.py``; schema
migrations in ``test_migrations.py``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from storage_builders import cell, k, record

from storage import ArtifactRecord, Database, NotFoundError, StorageError, mask_url
from storage.migrate import head_revision

TABLES = ["studies", "cells", "attempts", "metrics", "artifacts", "cell_artifacts"]


@pytest.fixture
def study(db: Database) -> int:
    return db.upsert_study("s", "name: s", "h1", "tester", "0.1.0").id


def _run(db: Database, study: int, name: str, **result: object) -> int:
    """Claim cell ``name`` and complete it; returns its id."""
    claimed = db.claim(study, "me", 1, 60, 3, keys={k(name)})
    assert [c.key for c in claimed] == [k(name)]
    args = {"metrics": {}, "artifacts": {}, "duration_s": 1.0, "worker": "w"} | result
    assert db.complete(claimed[0].id, claimed[0].token, **args)  # type: ignore[arg-type]
    return claimed[0].id


def test_fresh_database_is_created_at_head(db: Database, db_url: str) -> None:
    info = db.info()
    assert info["revision"] == info["head"] == db.current_revision() == head_revision()
    assert info["rows"] == dict.fromkeys(TABLES, 0)
    assert info["url"] == mask_url(db_url)
    assert info["dialect"] in ("sqlite", "postgresql")


def test_sqlite_settings(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'a' / 'b' / 'index.db'}")  # folders created
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    db.close()


@pytest.mark.postgres
def test_plain_postgresql_urls_use_psycopg(pg_url: str) -> None:
    db = Database.open("postgresql://" + pg_url.split("://", 1)[1])
    assert db.engine.dialect.driver == "psycopg"
    assert db.current_revision() == head_revision()
    db.close()


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(StorageError, match="database error on"):
        db.add_cells(12345, [cell("orphan")])
    assert db.info()["rows"]["cells"] == 0


def test_studies(db: Database) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    a = db.upsert_study("s", "v1", "h1", "me", "0.1.0")
    b = db.upsert_study("s", "v2", "h2", "you", "0.2.0")
    assert a.id == b.id
    assert (b.spec_yaml, b.spec_hash, b.created_by) == ("v2", "h2", "me")
    assert b.created_at == a.created_at
    assert b.created_at.tzinfo is not None
    assert before < b.created_at < before + timedelta(minutes=1)
    assert db.find_study("s") == b
    assert db.get_study("s") == b
    assert db.find_study("nope") is None
    db.upsert_study("other", "", "h", "me", "0.1.0")
    with pytest.raises(NotFoundError, match="no study named 'nope'.*known studies: other, s"):
        db.get_study("nope")
    assert [s.name for s in db.list_studies()] == ["s", "other"]


def test_add_cells_is_idempotent(db: Database, study: int) -> None:
    assert db.add_cells(study, [cell("a"), cell("b"), cell("a")]) == 2
    assert db.add_cells(study, [cell("a"), cell("c")]) == 1
    assert db.add_cells(study, iter([])) == 0
    assert db.counts(study) == {"attack": {"pending": 3}}
    other = db.upsert_study("t", "", "h", "me", "0").id
    assert db.add_cells(other, [cell("a")]) == 1  # keys are unique per study only


def test_add_many_cells(db: Database, study: int) -> None:
    cells = [cell(f"c{i}", deps=["root"] if i % 2 else None) for i in range(10_000)]
    assert db.add_cells(study, cells) == 10_000
    assert db.add_cells(study, [*cells[:5000], cell("new")]) == 1
    rows = db.cells(study)
    assert len(rows) == 10_001
    assert rows[1].depends_on == [k("root")]
    assert rows[0].depends_on == []


def test_concurrent_add_cells_insert_each_key_once(db: Database, db_url: str, study: int) -> None:
    cells = [cell(f"c{i}") for i in range(2000)]
    inserted: list[int] = []

    def add() -> None:
        mine = Database(db_url)
        inserted.append(mine.add_cells(study, cells))
        mine.close()

    threads = [threading.Thread(target=add) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(inserted) == [0, 0, 2000]
    assert db.counts(study) == {"attack": {"pending": 2000}}


def test_cells_filter_and_get_cell(db: Database, study: int) -> None:
    db.add_cells(study, [cell("t", "train"), cell("a"), cell("b")])
    _run(db, study, "a", metrics={"acc": 0.25})
    assert [c.key for c in db.cells(study, kind="attack")] == [k("a"), k("b")]
    assert [c.key for c in db.cells(study, state="done")] == [k("a")]
    assert [c.key for c in db.cells(study, kind="train", state="pending")] == [k("t")]
    assert db.cells(study, kind="transfer") == []
    got = db.get_cell(study, k("a"))
    assert (got.kind, got.state, got.metrics, got.spec_json) == (
        "attack",
        "done",
        {"acc": 0.25},
        '{"name": "a"}',
    )
    with pytest.raises(NotFoundError, match="no cell with key 'zz'"):
        db.get_cell(study, "zz")


def test_complete_records_metrics_artifacts_and_attempt(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    (c,) = db.claim(study, "driver", 1, 60, 3)
    ckpt, adv = record("ckpt", "checkpoint", epochs=3), record("adv", "adversarial")
    assert db.complete(
        c.id,
        c.token,
        metrics={"acc": 0.5, "robust_acc": 0.125},
        artifacts={"checkpoint": ckpt, "adversarial": adv},
        duration_s=2.5,
        worker="node-1",
    )
    row = db.get_cell(study, k("a"))
    assert (row.state, row.duration_s, row.worker, row.error) == ("done", 2.5, "node-1", None)
    assert row.lease_expires_at is None
    assert row.finished_at is not None
    assert row.finished_at >= row.started_at
    assert row.metrics == {"acc": 0.5, "robust_acc": 0.125}
    assert row.artifacts == {"checkpoint": ckpt.digest, "adversarial": adv.digest}
    (attempt,) = db.attempts(c.id)
    assert (attempt.n, attempt.outcome, attempt.worker, attempt.error) == (1, "ok", "node-1", None)
    assert attempt.owner == "driver"  # the claiming driver survives the worker's result
    assert attempt.ended_at is not None
    assert db.artifact(ckpt.digest) == ckpt
    assert db.find_artifact(record("unknown").digest) is None
    with pytest.raises(NotFoundError, match="no artifact"):
        db.artifact(record("unknown").digest)
    # committed again under the same token (a retry after the acknowledgement was lost):
    # "recorded", and nothing is rewritten
    assert db.complete(c.id, c.token, metrics={}, artifacts={}, duration_s=0, worker="w") is True
    assert db.get_cell(study, k("a")) == row


def test_an_artifact_shared_by_two_cells_is_indexed_once(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a"), cell("b")])
    shared = record("same")
    _run(db, study, "a", artifacts={"checkpoint": shared})
    _run(db, study, "b", artifacts={"checkpoint": shared, "copy": shared})
    assert db.info()["rows"]["artifacts"] == 1
    assert db.info()["rows"]["cell_artifacts"] == 3
    assert db.artifacts_of(study, [k("a"), k("b"), k("zz")], "checkpoint") == {
        k("a"): shared.digest,
        k("b"): shared.digest,
    }
    assert db.artifacts_of(study, [k("a")], "adversarial") == {}


def test_artifacts_lists_by_study_and_kind(db: Database, study: int) -> None:
    other = db.upsert_study("t", "name: t", "h2", "tester", "0.1.0").id
    db.add_cells(study, [cell("a"), cell("b")])
    db.add_cells(other, [cell("c")])
    ckpt, adv, elsewhere = record("ckpt"), record("adv", "adversarial"), record("other")
    _run(db, study, "a", artifacts={"checkpoint": ckpt})
    _run(db, study, "b", artifacts={"adversarial": adv})
    _run(db, other, "c", artifacts={"checkpoint": elsewhere})
    digests = {a.digest for a in db.artifacts()}
    assert digests == {ckpt.digest, adv.digest, elsewhere.digest}
    assert [a.digest for a in db.artifacts(study="s", kind="checkpoint")] == [ckpt.digest]
    assert {a.digest for a in db.artifacts(study="s")} == {ckpt.digest, adv.digest}
    assert db.artifacts(study="t", kind="adversarial") == []
    with pytest.raises(NotFoundError, match="no study named 'nope'"):
        db.artifacts(study="nope")


def test_a_missing_artifact_names_the_listing_command(db: Database) -> None:
    with pytest.raises(NotFoundError, match="`advgrid artifacts ls` lists the indexed ones"):
        db.artifact("0" * 64)


def test_an_invalid_digest_writes_nothing(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    (c,) = db.claim(study, "me", 1, 60, 3)
    bad = ArtifactRecord("../../etc/passwd", "checkpoint", "objects/x", 1)
    with pytest.raises(StorageError, match="invalid artifact digest"):
        db.complete(
            c.id, c.token, metrics={"a": 1.0}, artifacts={"ckpt": bad}, duration_s=0, worker="w"
        )
    row = db.get_cell(study, k("a"))
    assert (row.state, row.metrics) == ("running", {})


def test_non_finite_metrics_are_not_stored(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    metrics = {"ok": 1.0, "nan": float("nan"), "inf": float("inf"), "none": None}
    _run(db, study, "a", metrics=metrics)
    assert db.get_cell(study, k("a")).metrics == {"ok": 1.0}


def test_counts(db: Database, study: int) -> None:
    assert db.counts(study) == {}
    db.add_cells(study, [cell("t", "train"), cell("a"), cell("b"), cell("x", "transfer")])
    _run(db, study, "t")
    (c,) = db.claim(study, "me", 1, 60, 1, keys={k("a")})
    db.fail(c.id, c.token, error="boom", worker="w", max_attempts=1)
    db.claim(study, "me", 1, 60, 1, keys={k("b")})
    assert db.counts(study) == {
        "train": {"done": 1},
        "attack": {"quarantined": 1, "running": 1},
        "transfer": {"pending": 1},
    }


def test_mlflow_outbox(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a"), cell("b"), cell("c")])
    _run(db, study, "a")
    _run(db, study, "b")
    todo = db.unlogged_done(study)
    assert [c.key for c in todo] == [k("a"), k("b")]
    db.set_mlflow_run_id(todo[0].id, "run1")
    assert [c.key for c in db.unlogged_done(study)] == [k("b")]
    assert db.get_cell(study, k("a")).mlflow_run_id == "run1"
    with pytest.raises(NotFoundError, match="no cell with id 999999"):
        db.set_mlflow_run_id(999_999, "run2")


def test_database_errors_are_wrapped(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE cell_artifacts"))
    with pytest.raises(StorageError, match="database error on") as info:
        db.info()
    assert "[SQL:" not in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cret@db.lab:5432/advgrid", "postgresql://alice:***@db.lab:5432/advgrid"),
        ("postgresql+psycopg://bob:s3cret@h/db?sslmode=require", "postgresql+psycopg://bob:***@h/db?sslmode=require"),
        ("postgresql://h/db?password=s3cret&sslmode=require", "postgresql://h/db?password=***&sslmode=require"),
        ("sqlite:///x/y.db", "sqlite:///x/y.db"),
        ("not a url s3cret", "<unparseable database URL>"),
    ],
)  # fmt: skip
def test_mask_url_hides_passwords(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_unreachable_server_error_is_masked() -> None:
    url = "postgresql://alice:s3cret@127.0.0.1:1/advgrid"
    with pytest.raises(StorageError, match="cannot") as info:
        Database.open(url)
    assert "s3cret" not in str(info.value)
    assert "alice:***@127.0.0.1:1" in str(info.value)


def test_bad_url_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="expected sqlite:///PATH or postgresql://"):
        Database("nosuchdb+driver://x/y")


@pytest.mark.postgres
def test_password_never_shown_or_logged(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    url = make_url(pg_url).set(password="s3cret").render_as_string(hide_password=False)
    caplog.set_level(logging.DEBUG)
    db = Database.open(url)  # the test server trusts local connections: any password works
    study = db.upsert_study("s", "", "h", "me", "0").id
    db.add_cells(study, [cell("a")])
    db.claim(study, "me", 1, 60, 3)
    assert "s3cret" not in repr(db.info())
    assert "***" in db.masked_url
    assert "s3cret" not in caplog.text
    assert "created the advgrid schema" in caplog.text
    db.close()

"""The storage contract, run on every backend: schema, cells, leases, results."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from storage import (
    ArtifactRecord,
    Database,
    NewCell,
    NotFoundError,
    SchemaOutOfDateError,
    mask_url,
)


def _cell(key: str, kind: str = "attack", deps: list[str] | None = None) -> NewCell:
    return NewCell(key=key.ljust(64, "0"), kind=kind, spec_json="{}", depends_on=deps or [])


def _k(key: str) -> str:
    return key.ljust(64, "0")


@pytest.fixture
def db(db_url: str) -> Database:
    return Database.open(db_url)


@pytest.fixture
def study(db: Database) -> int:
    return db.upsert_study("s", "name: s", "h1", "tester", "0.1.0").id


def test_fresh_database_is_created_at_head(db: Database) -> None:
    info = db.info()
    assert info["revision"] == info["head"] == "0001"
    assert info["rows"] == {"studies": 0, "cells": 0, "attempts": 0, "metrics": 0, "artifacts": 0}


def test_out_of_date_schema_is_refused_with_the_fix(db_url: str) -> None:
    db = Database.open(db_url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaOutOfDateError, match="newer than this advgrid knows"):
        Database.open(db_url)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaOutOfDateError) as info:
        Database.open(db_url)
    assert f"`advgrid db upgrade --db {mask_url(db_url)}`" in str(info.value)


def test_studies(db: Database) -> None:
    a = db.upsert_study("s", "v1", "h1", "me", "0.1.0")
    b = db.upsert_study("s", "v2", "h2", "me", "0.1.0")
    assert a.id == b.id
    assert b.spec_yaml == "v2"
    assert db.find_study("nope") is None
    with pytest.raises(NotFoundError, match="no study named 'nope'.*known studies: s"):
        db.get_study("nope")
    assert [s.name for s in db.list_studies()] == ["s"]


def test_add_cells_is_idempotent(db: Database, study: int) -> None:
    assert db.add_cells(study, [_cell("a"), _cell("b"), _cell("a")]) == 2
    assert db.add_cells(study, [_cell("a"), _cell("c")]) == 1
    assert db.counts(study) == {"attack": {"pending": 3}}


def test_claim_respects_dependencies_and_limit(db: Database, study: int) -> None:
    db.add_cells(
        study, [_cell("t", "train"), _cell("a1", deps=[_k("t")]), _cell("a2", deps=[_k("t")])]
    )
    first = db.claim(study, "me", 10, 60, 3)
    assert [c.key for c in first] == [_k("t")]
    assert db.claim(study, "me", 10, 60, 3) == []
    rec = ArtifactRecord("f" * 64, "checkpoint", "objects/ff/x", 10, meta={"a": 1})
    assert db.complete(
        first[0].id,
        first[0].token,
        metrics={"acc": 0.5},
        artifacts={"checkpoint": rec},
        duration_s=1.0,
        worker="w",
    )
    assert len(db.claim(study, "me", 1, 60, 3)) == 1
    assert db.claim(study, "me", 5, 60, 3, keys={_k("a1")}) == []  # a1 already claimed
    cells = {c.key: c for c in db.cells(study)}
    assert cells[_k("t")].metrics == {"acc": 0.5}
    assert cells[_k("t")].artifacts == {"checkpoint": "f" * 64}
    assert db.artifacts_of(study, [_k("t")], "checkpoint") == {_k("t"): "f" * 64}


def test_stale_token_writes_nothing(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a")])
    (cell,) = db.claim(study, "me", 1, 0.05, 3)
    time.sleep(0.2)
    (again,) = db.claim(study, "other", 1, 60, 3)  # the lease expired: taken over
    assert again.attempt == 2
    assert not db.complete(
        cell.id, cell.token, metrics={"x": 1.0}, artifacts={}, duration_s=1, worker="slow"
    )
    assert db.fail(cell.id, cell.token, error="late", worker="slow", max_attempts=3) is None
    assert db.complete(
        again.id, again.token, metrics={"x": 2.0}, artifacts={}, duration_s=1, worker="fast"
    )
    row = db.get_cell(study, _k("a"))
    assert (row.state, row.metrics, row.worker) == ("done", {"x": 2.0}, "fast")
    assert [a.outcome for a in db.attempts(row.id)] == ["lost_lease", "ok"]


def test_heartbeat_keeps_the_lease(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a")])
    (cell,) = db.claim(study, "me", 1, 0.3, 3)
    for _ in range(3):
        time.sleep(0.1)
        assert db.heartbeat([cell.token], 0.3) == 1
    assert db.claim(study, "other", 1, 60, 3) == []


def test_failures_retry_then_quarantine(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a")])
    states = []
    for _ in range(3):
        (cell,) = db.claim(study, "me", 1, 60, 2) or (None,)
        if cell is None:
            break
        states.append(
            db.fail(cell.id, cell.token, error=f"boom {cell.attempt}", worker="w", max_attempts=2)
        )
    assert states == ["failed", "quarantined"]
    row = db.get_cell(study, _k("a"))
    assert row.error == "boom 2"
    assert row.attempts == 2
    assert [a.outcome for a in db.attempts(row.id)] == ["error", "error"]
    assert db.retry_quarantined(study) == 1
    (cell,) = db.claim(study, "me", 1, 60, 2)
    assert cell.attempt == 3


def test_release_and_expire(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a"), _cell("b")])
    a, b = db.claim(study, "host:1:x", 2, 60, 3)
    assert db.release(a.id, a.token)
    assert db.running_owners(study) == {"host:1:x"}
    assert db.expire_leases(study, ["host:1:x"]) == 1
    again = db.claim(study, "me", 5, 60, 3)
    assert sorted(c.key for c in again) == sorted([a.key, b.key])
    outcomes = {c.key: [x.outcome for x in db.attempts(c.id)] for c in again}
    assert outcomes[a.key] == ["killed", None]
    assert outcomes[b.key] == ["lost_lease", None]


def test_concurrent_claimers_never_share_a_cell(db_url: str) -> None:
    db = Database.open(db_url)
    study = db.upsert_study("c", "", "h", "me", "0").id
    db.add_cells(study, [_cell(f"c{i:03d}") for i in range(60)])
    got: list[list[str]] = [[], [], []]

    def worker(i: int) -> None:
        mine = Database(db_url)
        while cells := mine.claim(study, f"w{i}", 4, 60, 3):
            got[i] += [c.key for c in cells]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [k for g in got for k in g]
    assert len(keys) == len(set(keys)) == 60


def test_mlflow_outbox(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a"), _cell("b")])
    for c in db.claim(study, "me", 2, 60, 3):
        db.complete(c.id, c.token, metrics={}, artifacts={}, duration_s=0, worker="w")
    todo = db.unlogged_done(study)
    assert len(todo) == 2
    db.set_mlflow_run_id(todo[0].id, "run1")
    assert [c.key for c in db.unlogged_done(study)] == [todo[1].key]


def test_non_finite_metrics_are_not_stored(db: Database, study: int) -> None:
    db.add_cells(study, [_cell("a")])
    (c,) = db.claim(study, "me", 1, 60, 3)
    db.complete(
        c.id,
        c.token,
        metrics={"ok": 1.0, "bad": float("nan")},
        artifacts={},
        duration_s=0,
        worker="w",
    )
    assert db.get_cell(study, _k("a")).metrics == {"ok": 1.0}


def test_mask_url_hides_passwords() -> None:
    masked = mask_url("postgresql://alice:s3cret@db.lab:5432/advgrid")
    assert "s3cret" not in masked
    assert "***" in masked
    assert "alice" in masked

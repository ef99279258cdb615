"""The lease contract, run on every backend: claims, heartbeats, failures, expiry, races."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from storage_builders import cell, k

from storage import Database


@pytest.fixture
def study(db: Database) -> int:
    return db.upsert_study("s", "name: s", "h1", "tester", "0.1.0").id


def _keys(cells: list) -> list[str]:
    return [c.key for c in cells]


def _complete(db: Database, c: object) -> None:
    assert db.complete(c.id, c.token, metrics={}, artifacts={}, duration_s=0, worker="w")  # type: ignore[attr-defined]


def test_claim_respects_dependencies_and_limit(db: Database, study: int) -> None:
    db.add_cells(
        study,
        [
            cell("t", "train"),
            cell("u", "train"),
            cell("a1", deps=["t"]),
            cell("a2", deps=["t", "u"]),
            cell("x", deps=["not-in-study"]),
        ],
    )
    (t,) = db.claim(study, "me", 1, 60, 3)  # the limit, in id order
    assert t.key == k("t")
    (u,) = db.claim(study, "me", 10, 60, 3)  # a1 and a2 wait for t
    assert u.key == k("u")
    assert db.claim(study, "me", 10, 60, 3) == []
    assert db.claim(study, "me", 0, 60, 3) == []
    _complete(db, t)
    assert _keys(db.claim(study, "me", 10, 60, 3)) == [k("a1")]  # a2 waits for u
    _complete(db, u)
    assert db.claim(study, "me", 10, 60, 3, keys={k("x")}) == []
    (a2,) = db.claim(study, "me", 10, 60, 3)
    assert (a2.key, a2.kind, a2.depends_on, a2.attempt) == (k("a2"), "attack", [k("t"), k("u")], 1)
    assert a2.spec_json == '{"name": "a2"}'
    assert db.get_cell(study, k("x")).state == "pending"  # its dependency never appears


def test_a_claim_sets_the_lease(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    (c,) = db.claim(study, "host:1:abc", 1, 60, 3)
    assert len(c.token) == 32
    assert c.attempt == 1
    row = db.get_cell(study, k("a"))
    assert (row.state, row.attempts, row.lease_owner) == ("running", 1, "host:1:abc")
    assert row.started_at is not None
    assert row.lease_expires_at is not None
    assert row.started_at.tzinfo is not None
    assert before < row.started_at < before + timedelta(minutes=1)
    assert timedelta(seconds=59) < row.lease_expires_at - row.started_at < timedelta(seconds=61)
    (attempt,) = db.attempts(c.id)
    assert (attempt.n, attempt.outcome, attempt.owner, attempt.worker, attempt.ended_at) == (
        1,
        None,
        "host:1:abc",
        "host:1:abc",
        None,
    )
    assert db.running_owners(study) == {"host:1:abc"}


def test_a_stale_token_writes_nothing(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    (c,) = db.claim(study, "me", 1, 60, 3)
    wrong = "0" * 32
    assert not db.complete(c.id, wrong, metrics={"x": 1.0}, artifacts={}, duration_s=1, worker="w")
    assert db.fail(c.id, wrong, error="late", worker="w", max_attempts=3) is None
    assert db.release(c.id, wrong) is False
    assert db.heartbeat([wrong], 60) == 0
    row = db.get_cell(study, k("a"))
    assert (row.state, row.metrics, row.error, row.worker) == ("running", {}, None, None)
    assert [a.outcome for a in db.attempts(c.id)] == [None]


def test_an_expired_lease_is_reclaimed_and_the_late_result_dropped(
    db: Database, study: int
) -> None:
    db.add_cells(study, [cell("a")])
    (slow,) = db.claim(study, "slow", 1, 0.05, 3)
    assert db.claim(study, "other", 1, 60, 3) == []  # not expired yet
    time.sleep(0.2)
    (fast,) = db.claim(study, "fast", 1, 60, 3)  # the lease expired: taken over
    assert (fast.id, fast.attempt) == (slow.id, 2)
    assert fast.token != slow.token
    assert not db.complete(
        slow.id, slow.token, metrics={"x": 1.0}, artifacts={}, duration_s=1, worker="slow"
    )
    assert db.fail(slow.id, slow.token, error="late", worker="slow", max_attempts=3) is None
    assert db.heartbeat([slow.token], 60) == 0
    assert db.complete(
        fast.id, fast.token, metrics={"x": 2.0}, artifacts={}, duration_s=1, worker="fast"
    )
    row = db.get_cell(study, k("a"))
    assert (row.state, row.metrics, row.worker, row.attempts) == ("done", {"x": 2.0}, "fast", 2)
    attempts = db.attempts(row.id)
    assert [(a.n, a.outcome, a.worker) for a in attempts] == [
        (1, "lost_lease", "slow"),
        (2, "ok", "fast"),
    ]
    assert attempts[0].ended_at is not None


def test_each_attempt_keeps_the_driver_that_claimed_it(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    (first,) = db.claim(study, "host:1:aaa", 1, 60, 3)
    assert db.fail(first.id, first.token, error="boom", worker="node-1", max_attempts=3)
    (second,) = db.claim(study, "host:2:bbb", 1, 60, 3)
    assert db.complete(
        second.id, second.token, metrics={}, artifacts={}, duration_s=1, worker="node-2"
    )
    assert [(a.n, a.owner, a.worker, a.outcome) for a in db.attempts(first.id)] == [
        (1, "host:1:aaa", "node-1", "error"),
        (2, "host:2:bbb", "node-2", "ok"),
    ]


def test_heartbeat_keeps_the_lease(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a"), cell("b")])
    a, b = db.claim(study, "me", 2, 0.3, 3)
    for _ in range(4):
        time.sleep(0.1)
        assert db.heartbeat([a.token], 0.3) == 1
    (again,) = db.claim(study, "other", 5, 60, 3)  # b was not renewed, a was
    assert again.id == b.id
    assert db.heartbeat([], 60) == 0


def test_failures_retry_then_quarantine_until_asked(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    states = []
    while claimed := db.claim(study, "me", 1, 60, 2):
        (c,) = claimed
        states.append(db.fail(c.id, c.token, error=f"boom {c.attempt}", worker="w", max_attempts=2))
    assert states == ["failed", "quarantined"]
    row = db.get_cell(study, k("a"))
    assert (row.state, row.error, row.attempts) == ("quarantined", "boom 2", 2)
    assert [(a.n, a.outcome, a.error) for a in db.attempts(row.id)] == [
        (1, "error", "boom 1"),
        (2, "error", "boom 2"),
    ]
    assert db.retry_quarantined(study) == 1
    assert db.get_cell(study, k("a")).attempts == 0
    (c,) = db.claim(study, "me", 1, 60, 2)
    assert c.attempt == 3  # numbered across the cell's history
    assert db.fail(c.id, c.token, error="boom 3", worker="w", max_attempts=2) == "failed"
    assert db.retry_quarantined(study) == 1  # failed cells too
    assert [a.n for a in db.attempts(row.id)] == [1, 2, 3]
    assert db.get_cell(study, k("a")).state == "pending"


def test_a_failed_cell_needs_attempts_left(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a")])
    (c,) = db.claim(study, "me", 1, 60, 3)
    assert db.fail(c.id, c.token, error="boom", worker="w", max_attempts=3) == "failed"
    assert db.claim(study, "me", 1, 60, 1) == []  # with max_attempts=1 it has none left
    assert len(db.claim(study, "me", 1, 60, 2)) == 1


def test_release_and_expire(db: Database, study: int) -> None:
    db.add_cells(study, [cell("a"), cell("b")])
    a, b = db.claim(study, "host:1:x", 2, 60, 3)
    assert db.release(a.id, a.token)
    assert db.release(a.id, a.token) is False
    row = db.get_cell(study, k("a"))
    assert (row.state, row.error, row.lease_expires_at) == ("pending", None, None)
    assert db.running_owners(study) == {"host:1:x"}
    assert db.expire_leases(study, []) == 0
    assert db.expire_leases(study, ["someone-else"]) == 0
    assert db.expire_leases(study, ["host:1:x"]) == 1
    again = db.claim(study, "me", 5, 60, 3)
    assert sorted(c.key for c in again) == sorted([a.key, b.key])
    outcomes = {c.key: [x.outcome for x in db.attempts(c.id)] for c in again}
    assert outcomes == {a.key: ["killed", None], b.key: ["lost_lease", None]}
    assert db.running_owners(study) == {"me"}
    with pytest.raises(ValueError, match="outcome must be one of"):
        db.release(again[0].id, again[0].token, outcome="bored")


def test_concurrent_claimers_never_share_a_cell(db: Database, db_url: str, study: int) -> None:
    db.add_cells(study, [cell(f"c{i:03d}") for i in range(90)])
    got: list[list[str]] = [[], [], []]
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        mine = Database(db_url)
        try:
            while cells := mine.claim(study, f"w{i}", 4, 60, 3):
                got[i] += [c.key for c in cells]
        except BaseException as exc:  # reported below; a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    keys = [key for g in got for key in g]
    assert len(keys) == len(set(keys)) == 90
    assert db.counts(study) == {"attack": {"running": 90}}
    assert db.info()["rows"]["attempts"] == 90

"""``advgrid artifacts verify``: corrupted and missing artifacts are found, by hash."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from storage import ArtifactStore, Database
from tests.conftest import FinishedStudy


def test_verify_finds_corrupted_and_missing_artifacts(
    tiny_finished: FinishedStudy, tmp_path: Path, cli
) -> None:
    env = tiny_finished.copy(tmp_path).env  # this test damages the store

    clean = cli("artifacts", "verify", env=env)
    assert clean.exit_code == 0, clean.output
    # 3 checkpoints, 6 adversarial sets, 18 per-sample predictions of the transfer cells
    assert "27 indexed artifacts present" in clean.output

    store = ArtifactStore(env["ADVGRID_STORE"])
    digests = Database.open(env["ADVGRID_DB"]).artifact_digests()
    corrupt, missing = digests[0], digests[1]
    path = store.path(corrupt)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit in the tensor data
    path.write_bytes(bytes(blob))
    store.path(missing).unlink()

    result = cli("artifacts", "verify", "--format", "json", env=env)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["indexed"] == 27
    problems = {p["digest"]: p["problem"] for p in report["problems"]}
    assert set(problems) == {corrupt, missing}
    assert "hash" in problems[corrupt]
    assert "missing" in problems[missing]
    table = cli("artifacts", "verify", env=env)
    assert table.exit_code == 1
    assert "2 of the artifacts failed verification" in table.output


def test_gc_lists_then_deletes_old_orphans_only(
    tiny_finished: FinishedStudy, tmp_path: Path, cli
) -> None:
    env = tiny_finished.copy(tmp_path).env  # this test damages the store
    store = ArtifactStore(env["ADVGRID_STORE"])
    indexed = set(Database.open(env["ADVGRID_DB"]).artifact_digests())
    old = store.put({"v": torch.zeros(3)}, {"kind": "orphan"}).digest  # e.g. a crashed cell's
    fresh = store.put({"v": torch.ones(3)}, {"kind": "in flight"}).digest
    os.utime(store.path(old), (time.time() - 7200, time.time() - 7200))

    dry = cli("artifacts", "gc", env=env)
    assert dry.exit_code == 0, dry.output
    assert f"orphan {old}" in dry.output
    assert fresh not in dry.output  # younger than --min-age: a running cell may own it
    assert "dry run" in dry.output
    assert store.exists(old)

    done = cli("artifacts", "gc", "--delete", env=env)
    assert done.exit_code == 0, done.output
    assert not store.exists(old)
    assert store.exists(fresh)
    assert all(store.exists(d) for d in indexed)  # nothing the index points at is touched
    assert cli("artifacts", "verify", env=env).exit_code == 0

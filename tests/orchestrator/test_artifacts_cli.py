"""``advgrid artifacts``: the listing, and corrupted and missing artifacts found by hash."""

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


def test_ls_lists_by_study_and_kind(tiny_finished: FinishedStudy, cli) -> None:
    env = tiny_finished.env
    every = json.loads(cli("artifacts", "ls", "--format", "json", env=env).output)
    assert len(every) == 27
    assert {r["kind"] for r in every} == {"checkpoint", "adversarial", "predictions"}
    ckpts = cli(
        "artifacts", "ls", "--study", "tiny", "--kind", "checkpoint", "--format", "json", env=env
    )
    assert ckpts.exit_code == 0, ckpts.output
    rows = json.loads(ckpts.output)
    assert sorted(r["model"] for r in rows) == ["cnn", "mlp", "mlp2"]
    table = cli("artifacts", "ls", "--kind", "adversarial", env=env)
    assert table.exit_code == 0, table.output
    assert "6 artifacts" in table.output
    missing = cli("artifacts", "ls", "--study", "nope", env=env)
    assert missing.exit_code == 1
    assert missing.output.startswith("Error: no study named 'nope' in ")


def test_every_command_a_message_names_exists() -> None:
    """Messages tell users which command to run; each one they name must be there."""
    import re

    import click

    from orchestrator.cli import main

    root = Path(__file__).resolve().parents[2]
    named = {
        m.groups()
        for package in ("orchestrator", "storage", "tasks")
        for f in (root / package).rglob("*.py")
        for m in re.finditer(r"`advgrid ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", f.read_text())
    }
    assert ("artifacts", "ls") in named
    missing = []
    for verb, sub in sorted(named, key=str):
        command = main.commands.get(verb)
        if command is None:
            missing.append(verb)
        elif isinstance(command, click.Group) and sub and sub not in command.commands:
            missing.append(f"{verb} {sub}")
    assert missing == []


def test_gc_keeps_the_saved_state_of_an_unfinished_cell_only(
    tiny_finished: FinishedStudy, tmp_path: Path, cli
) -> None:
    from storage.rows import NewCell

    env = tiny_finished.copy(tmp_path).env
    store, db = ArtifactStore(env["ADVGRID_STORE"]), Database.open(env["ADVGRID_DB"])
    done_key = db.cells(db.get_study("tiny").id)[0].key
    running_key, unknown_key = "a" * 64, "b" * 64
    other = db.upsert_study("other", "name: other", "0" * 64, "me", "0").id
    db.add_cells(other, [NewCell(key=running_key, kind="train", spec_json="{}")])
    states = {}
    for i, key in enumerate((running_key, done_key, unknown_key)):
        record = store.put({"w": torch.full((2,), float(i))}, {"kind": "train_state"})
        os.utime(store.path(record.digest), (time.time() - 7200, time.time() - 7200))
        store.set_partial(key, record, {"epoch": 2})
        states[key] = record.digest

    dry = cli("artifacts", "gc", env=env)
    assert dry.exit_code == 0, dry.output
    assert f"stale state after epoch 2 of cell {done_key}" in dry.output
    assert f"stale state after epoch 2 of cell {unknown_key}" in dry.output
    assert running_key not in dry.output
    assert all(d not in dry.output for d in states.values())  # states are not orphans
    assert "0 orphaned files, 0.0 MB, and 2 stale saved states" in dry.output

    cli("artifacts", "gc", "--delete", env=env)
    assert store.partial(running_key) == {"digest": states[running_key], "epoch": 2}
    assert store.exists(states[running_key])
    for key in (done_key, unknown_key):
        assert store.partial(key) is None
        assert not store.exists(states[key])
    assert cli("artifacts", "verify", env=env).exit_code == 0

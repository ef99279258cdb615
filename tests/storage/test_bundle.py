"""Bundles: export a study's done cells, import them elsewhere, refuse anything unsafe.

Every test runs on both backends (the ``db`` fixture). Round trips export from ``db`` into
a fresh database on the same backend; the refusal tests import a damaged copy of one bundle
(exported once from SQLite) into ``db`` and check nothing was written.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from storage_builders import cell, k

from storage import (
    ArtifactStore,
    BundleError,
    Database,
    NewCell,
    NotFoundError,
    export_bundle,
    import_bundle,
)

DONE = ["train", "atk", "tr", "tr2", "tr3"]  # done in the exporting database, in this order


@pytest.fixture
def fresh_db(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Database]:
    """A second empty database on the same backend as ``db``."""
    if db_url.startswith("sqlite"):
        database = Database.open(f"sqlite:///{tmp_path / 'other' / 'index.db'}")
        yield database
        database.close()
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"advgrid_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database.open(make_url(db_url).set(database=name).render_as_string(False))
    try:
        yield database
    finally:
        database.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def source(db: Database, tmp_path: Path) -> tuple[Database, ArtifactStore]:
    """``db`` with study ``s``: see :func:`_populate`."""
    store = ArtifactStore(tmp_path / "store-a")
    _populate(db, store)
    return db, store


@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder bundle of study ``s``, exported once from SQLite."""
    root = tmp_path_factory.mktemp("shared")
    db = Database.open(f"sqlite:///{root / 'index.db'}")
    store = ArtifactStore(root / "store")
    _populate(db, store)
    db.close()
    return _export((db, store), root / "bundle")


@pytest.fixture
def bundle(shared_bundle: Path, tmp_path: Path) -> Path:
    """A copy of the shared bundle to damage."""
    return Path(shutil.copytree(shared_bundle, tmp_path / "b"))


def _populate(db: Database, store: ArtifactStore) -> None:
    """Study ``s``: five done cells with two artifacts, one pending and one failed cell."""
    sid = db.upsert_study("s", "name: s\n", "h1", "alice", "0.1.0").id
    db.add_cells(
        sid,
        [
            cell("train", "train"),
            cell("atk", deps=["train"]),
            *(cell(n, "transfer", deps=["atk"]) for n in ("tr", "tr2", "tr3", "todo")),
            cell("bad", deps=["train"]),
        ],
    )
    ckpt = store.put({"w": torch.arange(6.0)}, {"kind": "checkpoint", "arch": "mlp"})
    adv = store.put({"x_adv": torch.rand(4, 2)}, {"kind": "adversarial", "eps": 0.1})
    _done(db, sid, "train", {"loss": 0.5}, {"checkpoint": ckpt})
    _done(db, sid, "atk", {"robust_accuracy": 0.25, "n": 4.0}, {"adversarial": adv})
    for name in ("tr", "tr2", "tr3"):
        _done(db, sid, name, {"transfer_rate_all": 0.75}, {})
    (bad,) = db.claim(sid, "lab-a", 1, 60, 3, keys={k("bad")})
    db.fail(bad.id, bad.token, error="boom", worker="w", max_attempts=3)


def _done(db: Database, sid: int, name: str, metrics: dict, artifacts: dict) -> int:
    (c,) = db.claim(sid, "lab-a", 1, 60, 3, keys={k(name)})
    assert db.complete(
        c.id, c.token, metrics=metrics, artifacts=artifacts, duration_s=1.5, worker="node-a"
    )
    return c.id


def _export(source: tuple[Database, ArtifactStore], path: Path) -> Path:
    db, store = source
    summary = export_bundle(db, store, "s", path, advgrid_version="0.1.0")
    assert (summary.cells, summary.artifacts) == (5, 2)
    return path


def _snapshot(db: Database) -> dict[str, Any]:
    study = db.find_study("s")
    cells = db.cells(study.id) if study else []
    return {"rows": db.info()["rows"], "study": study, "cells": cells}


def _empty(db: Database, store: ArtifactStore) -> bool:
    return set(db.info()["rows"].values()) == {0} and list(store.iter_digests()) == []


@pytest.mark.parametrize("name", ["bundle", "bundle.tar", "bundle.tar.gz"])
def test_round_trip_into_a_fresh_database(
    source: tuple[Database, ArtifactStore], fresh_db: Database, tmp_path: Path, name: str
) -> None:
    db, store = source
    bundle = _export(source, tmp_path / name)
    assert bundle.is_dir() == (name == "bundle")
    target = ArtifactStore(tmp_path / "store-b")

    summary = import_bundle(fresh_db, target, bundle)

    assert (summary.study, summary.study_created) == ("s", True)
    assert (summary.inserted, summary.updated, summary.skipped, summary.running) == (5, 0, 0, 0)
    assert (summary.artifacts_copied, summary.artifacts_present) == (2, 0)
    old, new = db.get_study("s"), fresh_db.get_study("s")
    fields = ("name", "spec_yaml", "spec_hash", "created_by", "advgrid_version")
    assert [getattr(new, f) for f in fields] == [getattr(old, f) for f in fields]
    theirs = db.cells(old.id, state="done")
    mine = fresh_db.cells(new.id)
    assert [c.key for c in mine] == [k(n) for n in DONE]  # pending and failed stay behind
    same = ("key", "kind", "spec_json", "depends_on", "state", "attempts", "finished_at")
    same += ("duration_s", "worker", "metrics", "artifacts")
    for a, b in zip(theirs, mine, strict=True):
        assert [getattr(b, f) for f in same] == [getattr(a, f) for f in same]
        assert (b.mlflow_run_id, b.lease_owner, b.error) == (None, None, None)
    for digest in db.artifact_digests():
        assert fresh_db.artifact(digest) == db.artifact(digest)
        tensors, meta = target.get(digest)
        expected, expected_meta = store.get(digest)
        assert meta == expected_meta
        assert all(torch.equal(tensors[n], expected[n]) for n in expected)
    assert fresh_db.artifact_digests() == db.artifact_digests()


def test_import_twice_changes_nothing(db: Database, bundle: Path, tmp_path: Path) -> None:
    target = ArtifactStore(tmp_path / "store-b")
    import_bundle(db, target, bundle)
    before = _snapshot(db)

    again = import_bundle(db, target, bundle)

    assert (again.inserted, again.updated, again.skipped, again.running) == (0, 0, 5, 0)
    assert (again.study_created, again.artifacts_copied, again.artifacts_present) == (False, 0, 2)
    assert _snapshot(db) == before


def test_merge_by_key_into_a_database_with_some_of_the_cells(
    db: Database, bundle: Path, tmp_path: Path
) -> None:
    target = ArtifactStore(tmp_path / "store-b")
    # the same study here, extended; its cells carry no dependencies so each can be claimed
    sid = db.upsert_study("s", "name: s\nmore: 1\n", "h2", "bob", "0.1.0").id
    names = ["train", "atk", "tr", "tr2", "tr3", "local"]
    db.add_cells(sid, [NewCell(k(n), "transfer", f'{{"name": "{n}"}}') for n in names])
    _done(db, sid, "train", {"loss": 9.0}, {})  # computed here already: kept
    (failed,) = db.claim(sid, "lab-b", 1, 60, 3, keys={k("tr")})
    db.fail(failed.id, failed.token, error="oom", worker="w", max_attempts=3)
    (live,) = db.claim(sid, "lab-b", 1, 600, 3, keys={k("tr2")})
    (expired,) = db.claim(sid, "lab-b:dead", 1, -5, 3, keys={k("tr3")})

    summary = import_bundle(db, target, bundle)

    assert summary.study_created is False
    assert (summary.inserted, summary.updated, summary.skipped, summary.running) == (0, 3, 1, 1)
    assert db.get_study("s").spec_yaml == "name: s\nmore: 1\n"  # its spec is kept
    cells = {c.key: c for c in db.cells(sid)}
    assert cells[k("train")].metrics == {"loss": 9.0}
    assert cells[k("atk")].state == "done"
    assert cells[k("atk")].metrics == {"robust_accuracy": 0.25, "n": 4.0}
    assert set(cells[k("atk")].artifacts) == {"adversarial"}
    assert (cells[k("tr")].state, cells[k("tr")].error) == ("done", None)
    assert cells[k("tr")].metrics == {"transfer_rate_all": 0.75}
    assert (cells[k("tr2")].state, cells[k("tr2")].metrics) == ("running", {})
    assert cells[k("tr3")].state == "done"
    assert [a.outcome for a in db.attempts(expired.id)] == ["lost_lease"]
    assert cells[k("local")].state == "pending"
    # the driver whose lease expired comes back late: its result is dropped
    late = db.complete(
        expired.id, expired.token, metrics={"x": 1.0}, artifacts={}, duration_s=1, worker="w"
    )
    assert late is False
    assert db.complete(  # the live lease's driver commits as usual
        live.id, live.token, metrics={"x": 1.0}, artifacts={}, duration_s=1, worker="w"
    )
    assert import_bundle(db, target, bundle).skipped == 5


@pytest.mark.parametrize("damage", ["flip", "missing", "truncate"])
def test_a_damaged_object_writes_nothing(
    db: Database, bundle: Path, tmp_path: Path, damage: str
) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    digest = manifest["artifacts"][-1]["digest"]
    victim = bundle / "objects" / digest[:2] / f"{digest[2:]}.safetensors"
    blob = victim.read_bytes()
    if damage == "flip":
        victim.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    elif damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(blob[:-10])
    target = ArtifactStore(tmp_path / "store-b")

    with pytest.raises(BundleError) as info:
        import_bundle(db, target, bundle)

    message = str(info.value)
    assert message.startswith(f"{bundle}: artifacts[1]: objects/{digest[:2]}/{digest[2:]}")
    assert ("missing from the bundle" if damage == "missing" else "is corrupt") in message
    assert _empty(db, target)


def _tar_with(bundle: Path, path: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    """An archive of the folder bundle ``bundle`` with ``extra`` members added first."""
    with tarfile.open(path, "w:gz") as tar:
        extra(tar)
        for file in sorted(bundle.rglob("*")):
            tar.add(file, arcname=str(file.relative_to(bundle)), recursive=False)
    return path


def _file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _link(name: str, target: str, kind: bytes) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)

    return add


OBJECT = "objects/ab/" + "c" * 62 + ".safetensors"


@pytest.mark.parametrize(
    ("member", "add"),
    [
        ("../escaped.txt", _file("../escaped.txt")),
        ("/tmp/absolute.txt", _file("/tmp/absolute.txt")),
        ("objects/../../escaped.txt", _file("objects/../../escaped.txt")),
        ("notes.txt", _file("notes.txt")),
        (OBJECT, _link(OBJECT, "/etc/passwd", tarfile.SYMTYPE)),
        (OBJECT, _link(OBJECT, "manifest.json", tarfile.LNKTYPE)),
        ("objects/ab", _link("objects/ab", "/tmp", tarfile.SYMTYPE)),
    ],
)
def test_an_archive_with_a_foreign_member_is_refused(
    db: Database, bundle: Path, tmp_path: Path, member: str, add: Callable[[tarfile.TarFile], None]
) -> None:
    archive = _tar_with(bundle, tmp_path / "evil.tar.gz", add)
    target = ArtifactStore(tmp_path / "store-b")

    with pytest.raises(BundleError) as info:
        import_bundle(db, target, archive)

    assert str(info.value).startswith(f"{archive}: refusing archive member {member!r}")
    assert "nothing was imported" in str(info.value)
    assert _empty(db, target)
    assert not (tmp_path / "escaped.txt").exists()


def test_an_archive_made_by_hand_from_a_bundle_folder_imports(
    db: Database, bundle: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "by-hand.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(bundle, arcname=".")  # as `tar cf by-hand.tar -C b .` writes it: ./manifest.json
    summary = import_bundle(db, ArtifactStore(tmp_path / "store-b"), archive)
    assert summary.inserted == 5


def _set(doc: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        doc = doc[int(p)] if p.isdigit() else doc[p]
    if value is _DELETE:
        del doc[last]
    else:
        doc[last] = value


_DELETE = object()
BAD_DIGEST = "../../etc/passwd"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("format", "zip", "format: expected 'advgrid-bundle', got 'zip'; not an advgrid bundle"),
        ("version", 2, "version: this advgrid reads bundle version 1, got 2; upgrade advgrid"),
        ("version", "1", "version: this advgrid reads bundle version 1, got '1'"),
        ("cells.0.key", _DELETE, "cells[0].key: required key is missing"),
        ("cells.0.key", "K" * 64, "cells[0].key: expected a cell key: 64 lowercase hex"),
        ("cells.0.metrics.loss", "0.5", "cells[0].metrics.loss: Input should be a valid number"),
        ("cells.0.attempts", -1, "cells[0].attempts: Input should be greater than or equal to 0"),
        ("cells.0.spec_json", "{", "cells[0].spec_json: not JSON"),
        ("cells.0.artifacts.checkpoint", BAD_DIGEST, "cells[0].artifacts.checkpoint: invalid"),
        ("cells.0.artifacts.checkpoint", "0" * 64, "is not listed under artifacts"),
        ("artifacts.0.digest", BAD_DIGEST, "artifacts[0].digest: invalid artifact digest"),
        ("artifacts.0.format", "pickle", "artifacts[0].format: Input should be 'safetensors'"),
        ("study.colour", "blue", "study.colour: unknown key"),
        ("counts.cells", 4, "counts: {'cells': 4,"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key(
    db: Database, bundle: Path, tmp_path: Path, path: str, value: Any, expected: str
) -> None:
    file = bundle / "manifest.json"
    doc = json.loads(file.read_text())
    _set(doc, path, value)
    file.write_text(json.dumps(doc))
    target = ArtifactStore(tmp_path / "store-b")

    with pytest.raises(BundleError) as info:
        import_bundle(db, target, bundle)

    assert str(info.value).startswith(f"{bundle}: manifest.json")
    assert expected in str(info.value)
    assert _empty(db, target)


def test_a_manifest_that_is_not_json_or_absent(db: Database, tmp_path: Path) -> None:
    target = ArtifactStore(tmp_path / "store-b")
    folder = tmp_path / "b"
    folder.mkdir()
    with pytest.raises(BundleError, match=r"b: no manifest.json; expected a bundle written by"):
        import_bundle(db, target, folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=r"b: manifest.json cannot be read as JSON"):
        import_bundle(db, target, folder)
    garbage = tmp_path / "b.tar.gz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(BundleError, match=r"b.tar.gz: cannot read the archive"):
        import_bundle(db, target, garbage)
    assert _empty(db, target)


def test_export_refuses_an_existing_path_and_leaves_nothing_on_failure(
    source: tuple[Database, ArtifactStore], tmp_path: Path
) -> None:
    db, store = source
    taken = tmp_path / "taken.tar"
    taken.write_bytes(b"")
    with pytest.raises(BundleError, match="taken.tar already exists; give a new path"):
        export_bundle(db, store, "s", taken, advgrid_version="0.1.0")
    with pytest.raises(NotFoundError, match="no study named 'nope'"):
        export_bundle(db, store, "nope", tmp_path / "x", advgrid_version="0.1.0")
    store.remove(db.artifact_digests()[0])
    for name in ("x", "x.tar.gz"):
        with pytest.raises(NotFoundError, match="is missing from the store"):
            export_bundle(db, store, "s", tmp_path / name, advgrid_version="0.1.0")
    assert [p.name for p in tmp_path.iterdir() if p.name.lstrip(".").startswith("x")] == []

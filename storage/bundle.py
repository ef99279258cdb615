"""Bundles: a study's done cells and their artifacts, to move results between labs.

A bundle is a folder, or the same folder as a ``.tar`` / ``.tar.gz`` archive::

    manifest.json                      format, version, counts and the rows (JSON)
    objects/ab/cdef….safetensors       the artifact files, named by their SHA-256

:func:`export_bundle` writes one from an index and a store; :func:`import_bundle` merges one
into an index and a store by cell key (:meth:`storage.Database.merge_done_cells`).

Nothing is written on import until the whole bundle has been checked: the manifest against
:class:`storage.manifest.Manifest` (format, version, every key and type, every digest),
every artifact file re-hashed. An archive is extracted only after every member name has been
checked, and then with tarfile's ``data`` filter. The files go into the store first (content
addressed, atomic), then the rows into the index in one transaction, so no row ever points
at a missing file. JSON and safetensors only: no pickle.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from storage.artifacts import ArtifactStore
from storage.enums import CellState
from storage.errors import BundleError
from storage.localfs import SUFFIX
from storage.manifest import (
    FORMAT,
    MANIFEST,
    VERSION,
    ArtifactEntry,
    CellEntry,
    Counts,
    Manifest,
    StudyEntry,
    read_manifest,
)
from storage.rows import ArtifactRecord, CellRow

if TYPE_CHECKING:
    from storage.db import Database

__all__ = ["ExportSummary", "ImportSummary", "export_bundle", "import_bundle"]

log = logging.getLogger(__name__)

_OBJECT_DIR = re.compile(r"objects(/[0-9a-f]{2})?")
_OBJECT_FILE = re.compile(r"objects/[0-9a-f]{2}/[0-9a-f]{62}" + re.escape(SUFFIX))


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_bundle` wrote."""

    path: Path
    study: str
    cells: int
    artifacts: int
    bytes: int


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_bundle` did.

    Attributes:
        inserted: Cells new to the study, inserted as done.
        updated: Cells the study had but not done (pending, failed, quarantined, or running
            under an expired lease) that took the imported result.
        skipped: Cells already done here, left as they were.
        running: Cells running here under a live lease, left to the driver running them.
        artifacts_copied: Files copied into the store.
        artifacts_present: Files the store already held.
    """

    study: str
    study_created: bool
    inserted: int
    updated: int
    skipped: int
    running: int
    artifacts_copied: int
    artifacts_present: int


def export_bundle(
    db: Database, store: ArtifactStore, study: str, path: str | Path, *, advgrid_version: str
) -> ExportSummary:
    """Write study ``study``'s done cells and every artifact they name to a new bundle.

    Args:
        db: The index to read.
        store: The store holding the artifacts (each file is re-hashed as it is read).
        study: The study's name.
        path: The bundle to write: a folder, or a ``.tar`` / ``.tar.gz`` file. It must not
            exist; it appears whole (written under a temporary name, then renamed).
        advgrid_version: The version of advgrid writing it.

    Raises:
        BundleError: ``path`` exists or cannot be written.
        NotFoundError: No such study, or an artifact is missing from the store.
        CorruptArtifactError: An artifact file no longer hashes to its name.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise BundleError(f"{path} already exists; give a new path for the bundle")
    row = db.get_study(study)
    cells = db.cells(row.id, state=CellState.DONE)
    records = db.artifact_records({d for c in cells for d in c.artifacts.values()})
    manifest = Manifest(
        format=FORMAT,
        version=VERSION,
        advgrid_version=advgrid_version,
        counts=Counts(
            cells=len(cells), artifacts=len(records), bytes=sum(r.bytes for r in records)
        ),
        study=StudyEntry(
            name=row.name,
            spec_yaml=row.spec_yaml,
            spec_hash=row.spec_hash,
            created_by=row.created_by,
            advgrid_version=row.advgrid_version,
        ),
        cells=[_cell_entry(c) for c in cells],
        artifacts=[_artifact_entry(r) for r in records],
    )
    with _writer(path) as add:
        add(MANIFEST, manifest.model_dump_json(indent=1).encode())
        for r in records:
            add(store.uri(r.digest), store.read_bytes(r.digest))
    log.info(
        "exported %d cells and %d artifacts of %s to %s", len(cells), len(records), study, path
    )
    return ExportSummary(path, row.name, len(cells), len(records), manifest.counts.bytes)


def _cell_entry(c: CellRow) -> CellEntry:
    return CellEntry(
        key=c.key,
        kind=c.kind,
        spec_json=c.spec_json,
        depends_on=list(c.depends_on),
        metrics=dict(c.metrics),
        artifacts=dict(c.artifacts),
        duration_s=c.duration_s,
        worker=c.worker,
        finished_at=c.finished_at,
        attempts=c.attempts,
    )


def _artifact_entry(r: ArtifactRecord) -> ArtifactEntry:
    fields = {"digest": r.digest, "kind": r.kind, "bytes": r.bytes, "format": r.format}
    return ArtifactEntry.model_validate({**fields, "meta": dict(r.meta)})


def import_bundle(db: Database, store: ArtifactStore, path: str | Path) -> ImportSummary:
    """Merge a bundle into ``db`` and ``store`` by cell key; importing twice changes nothing.

    The study is created (with the bundle's spec) if the index has none by its name, else
    kept as it is. See :meth:`storage.Database.merge_done_cells` for what happens to each
    cell.

    Args:
        db: The index to merge into.
        store: The store to copy the artifact files into (those it holds are not rewritten).
        path: The bundle: a folder, or a tar archive (plain or gzip) of one.

    Returns:
        Counts of cells inserted, updated, skipped and left running, and of files copied.

    Raises:
        BundleError: The bundle is not one, its manifest is invalid, or a file is missing
            or does not hash to its name. Nothing has been written.
        StorageError: The store or the index failed (no row was written).
    """
    path = Path(path)
    with _unpacked(path) as root:
        manifest = read_manifest(root, str(path))
        for i, a in enumerate(manifest.artifacts):
            _check_object(root, a, f"{path}: artifacts[{i}]")
        copied = sum(store.put_bytes(a.digest, _read(root, a.digest)) for a in manifest.artifacts)
    records = [
        ArtifactRecord(a.digest, a.kind, store.uri(a.digest), a.bytes, a.format, dict(a.meta))
        for a in manifest.artifacts
    ]
    merged = db.merge_done_cells(manifest.study, manifest.cells, records)
    return ImportSummary(
        study=manifest.study.name,
        study_created=merged.study_created,
        inserted=merged.inserted,
        updated=merged.updated,
        skipped=merged.skipped,
        running=merged.running,
        artifacts_copied=copied,
        artifacts_present=len(records) - copied,
    )


def _object(root: Path, digest: str) -> Path:
    return root / "objects" / digest[:2] / f"{digest[2:]}{SUFFIX}"


def _check_object(root: Path, artifact: ArtifactEntry, where: str) -> None:
    """Check the bundle's file for ``artifact`` is there and hashes to its digest."""
    file = _object(root, artifact.digest)
    rel = file.relative_to(root)
    if file.is_symlink() or not file.is_file():
        raise BundleError(f"{where}: {rel} is missing from the bundle; nothing was imported")
    sha, size = hashlib.sha256(), 0
    try:
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BundleError(f"{where}: cannot read {rel}: {exc.strerror or exc}") from exc
    if sha.hexdigest() != artifact.digest:
        raise BundleError(
            f"{where}: {rel} is corrupt: its bytes hash to {sha.hexdigest()}, not to its "
            "name; nothing was imported"
        )
    if size != artifact.bytes:
        raise BundleError(f"{where}: {rel} holds {size} bytes, the manifest says {artifact.bytes}")


def _read(root: Path, digest: str) -> bytes:
    try:
        return _object(root, digest).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {_object(root, digest)}: {exc.strerror or exc}") from exc


def _tar_mode(name: str) -> str | None:
    if name.endswith((".tar.gz", ".tgz")):
        return "gz"
    return "" if name.endswith(".tar") else None


@contextmanager
def _writer(path: Path) -> Iterator[Callable[[str, bytes], None]]:
    """``add(name, bytes)`` into a new bundle at ``path``, renamed into place at the end."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    mode = _tar_mode(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode is None:
            tmp.mkdir()
            yield lambda name, blob: _write_file(tmp / name, blob)
        else:
            with tarfile.open(tmp, "x:gz") if mode == "gz" else tarfile.open(tmp, "x") as tar:
                yield lambda name, blob: _add_member(tar, name, blob)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write bundle {path}: {exc.strerror or exc}") from exc
        raise


def _write_file(target: Path, blob: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)


def _add_member(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(blob), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(blob))


@contextmanager
def _unpacked(path: Path) -> Iterator[Path]:
    """The bundle's folder: ``path`` itself, or its archive extracted into a temporary one."""
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise BundleError(
            f"{path}: no bundle there; expected a folder or a .tar / .tar.gz file written by "
            "`advgrid export`"
        )
    with tempfile.TemporaryDirectory(prefix="advgrid-bundle-") as tmp:
        _extract(path, Path(tmp))
        yield Path(tmp)


def _extract(path: Path, dest: Path) -> None:
    """Extract the archive at ``path`` into ``dest`` once every member has been checked."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(path, member)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{path}: cannot read the archive: {exc}") from exc


def _check_member(path: Path, member: tarfile.TarInfo) -> None:
    """Allow only ``manifest.json``, ``objects/``, ``objects/ab/`` and object files."""
    name = member.name.removeprefix("./")
    if name in ("", ".") or _OBJECT_DIR.fullmatch(name):
        ok = member.isdir()
    elif name == MANIFEST or _OBJECT_FILE.fullmatch(name):
        ok = member.isfile()
    else:
        raise BundleError(
            f"{path}: refusing archive member {member.name!r}: a bundle holds only "
            f"{MANIFEST} and objects/ab/<digest>{SUFFIX}; nothing was imported"
        )
    if not ok:
        raise BundleError(
            f"{path}: refusing archive member {member.name!r}: not a plain file or folder "
            "as its name says (links and devices are never extracted); nothing was imported"
        )

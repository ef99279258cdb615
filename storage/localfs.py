"""Where an artifact store's bytes live: the backend protocol, the file layout's names, and
the local backend (a folder, or a mounted shared one).

:class:`storage.artifacts.ArtifactStore` does all its file I/O through a :class:`Files`
backend: :class:`LocalFiles` here, or :class:`storage.fsstore.FsspecFiles` for a URL. Both
keep one layout (``objects/ab/cdef….safetensors``) and one rule: a file is written to a
temporary name (``.tmp-…``) and renamed, so no reader ever sees part of one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import Protocol

from storage.errors import StorageError

SUFFIX = ".safetensors"
"""The suffix of every stored file."""
TMP_PREFIX = ".tmp-"
"""The prefix of a file still being written; listings leave it out."""


class Files(Protocol):
    """Where a store's bytes live. ``rel`` is a path such as ``objects/ab/cdef….safetensors``;
    ``size``, ``read`` and ``mtime`` answer None for a missing file, ``remove`` False; ``write``
    never makes a partly written file visible under ``rel``; ``listing`` gives the files
    ``ab/cdef…<suffix>`` under ``folder`` (``objects/``: the artifacts), sorted, without
    temporaries; ``location`` is for messages (any password masked)."""

    def location(self, rel: str = "") -> str: ...
    def size(self, rel: str) -> int | None: ...
    def read(self, rel: str) -> bytes | None: ...
    def write(self, rel: str, blob: bytes) -> None: ...
    def listing(self, folder: str = "objects", suffix: str = SUFFIX) -> list[str]: ...
    def remove(self, rel: str) -> bool: ...
    def mtime(self, rel: str) -> float | None: ...


class LocalFiles:
    """A local (or mounted shared) folder: plain ``os`` calls, fsync and rename."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def location(self, rel: str = "") -> str:
        return str(self.root / rel) if rel else str(self.root)

    def size(self, rel: str) -> int | None:
        return _size(self.root / rel)

    def read(self, rel: str) -> bytes | None:
        return _read(self.root / rel)

    def write(self, rel: str, blob: bytes) -> None:
        _write_atomic(self.root / rel, blob)

    def listing(self, folder: str = "objects", suffix: str = SUFFIX) -> list[str]:
        return _list(self.root / folder, suffix)

    def remove(self, rel: str) -> bool:
        try:
            (self.root / rel).unlink()
        except FileNotFoundError:
            return False
        return True

    def mtime(self, rel: str) -> float | None:
        try:
            return (self.root / rel).stat().st_mtime
        except FileNotFoundError:
            return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc


def _list(folder: Path, suffix: str) -> list[str]:
    """Paths ``ab/cdef…`` of the files under ``folder`` whose names end in ``suffix``, sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        f"{p.parent.name}/{p.name}"
        for p in folder.glob(f"??/*{suffix}")
        if not p.name.startswith(TMP_PREFIX)
    )


def _write_atomic(target: Path, blob: bytes) -> None:
    """Write ``blob`` to ``target`` via a fsynced temporary file and a rename."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX, suffix=SUFFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            # mkstemp makes 0600 files; a lab's shared store needs what open() would give
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write artifact {target}: {exc.strerror or exc}") from exc


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """This process's umask, read from /proc where it can be (reading it elsewhere sets it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

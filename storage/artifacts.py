"""Content-addressed artifact store: safetensors files named by their SHA-256.

Layout: ``<root>/objects/ab/cdef….safetensors`` where ``abcdef…`` is the SHA-256 of the
file's bytes. A write goes to a temporary file in the target folder, is fsynced and renamed
into place, then the folder is fsynced, so a reader sees a whole file or none. A crash can
leave an orphan file, never an index row pointing at nothing: rows are written after the
file. Every read re-hashes the bytes. No pickle anywhere: tensors are safetensors, the
metadata is JSON in the safetensors header (``{"advgrid": "<json>"}``).

All file I/O goes through :func:`_read`, :func:`_write_atomic`, :func:`_size` and
:func:`_list`, so a remote (fsspec) backend only has to replace those.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.errors import CorruptArtifactError, NotFoundError, StorageError
from storage.rows import ArtifactRecord

if TYPE_CHECKING:
    import torch

__all__ = ["ArtifactRecord", "ArtifactStore", "check_digest"]

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")
SUFFIX = ".safetensors"
_TMP_PREFIX = ".tmp-"


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is 64 lowercase hex characters (anything else could name a path).

    Raises:
        StorageError: It is not.
    """
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise StorageError(
            f"invalid artifact digest {digest!r}: expected 64 lowercase hex characters "
            "(a SHA-256), as `advgrid artifacts ls` shows them"
        )
    return digest


class ArtifactStore:
    """Tensors in, digests out; digests in, verified tensors out.

    Args:
        root: The store's folder; ``objects/`` is created under it on the first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def uri(self, digest: str) -> str:
        """Location of ``digest`` relative to the root: ``objects/ab/cdef….safetensors``."""
        check_digest(digest)
        return f"objects/{digest[:2]}/{digest[2:]}{SUFFIX}"

    def path(self, digest: str) -> Path:
        """Local path of ``digest`` (which need not exist).

        Raises:
            StorageError: ``digest`` is not 64 lowercase hex characters.
        """
        return self.root / self.uri(digest)

    def exists(self, digest: str) -> bool:
        """Whether a file for ``digest`` is in the store (its bytes are not checked)."""
        return _size(self.path(digest)) is not None

    def put(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> ArtifactRecord:
        """Store ``tensors`` (moved to CPU, made contiguous) with JSON metadata ``meta``.

        Content addressed: the same tensors and metadata give the same digest and one file;
        an existing file is not rewritten.

        Args:
            tensors: Named tensors.
            meta: JSON-serializable metadata; ``meta["kind"]`` becomes the record's kind
                (default ``tensors``).

        Returns:
            The record to index.

        Raises:
            StorageError: ``meta`` is not JSON-serializable or the file cannot be written.
        """
        blob, meta = _serialize(tensors, meta)
        digest = hashlib.sha256(blob).hexdigest()
        target = self.path(digest)
        if _size(target) == len(blob):
            log.debug("artifact %s already stored", digest)
        else:
            _write_atomic(target, blob)
        return ArtifactRecord(
            digest=digest,
            kind=str(meta.get("kind", "tensors")),
            uri=self.uri(digest),
            bytes=len(blob),
            format="safetensors",
            meta=meta,
        )

    def put_bytes(self, digest: str, blob: bytes) -> bool:
        """Store ``blob``, the whole file of an artifact written elsewhere, under ``digest``.

        Returns:
            True when the file was written; False when the store already held it.

        Raises:
            CorruptArtifactError: ``blob`` does not hash to ``digest``; nothing is written.
            StorageError: ``digest`` is not a digest, or the file cannot be written.
        """
        target = self.path(digest)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise CorruptArtifactError(
                f"refusing to store artifact {digest}: the bytes given hash to {actual}"
            )
        if _size(target) == len(blob):
            return False
        _write_atomic(target, blob)
        return True

    def read_bytes(self, digest: str) -> bytes:
        """The bytes of ``digest``, after checking they hash to it.

        Raises:
            NotFoundError: No such file in the store.
            CorruptArtifactError: Its bytes hash to something else.
        """
        path = self.path(digest)
        blob = _read(path)
        if blob is None:
            raise NotFoundError(
                f"artifact {digest} is missing from the store ({path}); re-run the cell that "
                "wrote it (`advgrid run STUDY.yaml` resumes) or check the --store root"
            )
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise CorruptArtifactError(
                f"artifact {path} is corrupt: its bytes hash to {actual}, not to its name; "
                "run `advgrid artifacts verify` and re-run the cells that wrote it"
            )
        return blob

    def get(self, digest: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of ``digest``, after checking its hash.

        Raises:
            NotFoundError: No such file in the store.
            CorruptArtifactError: Its bytes hash to something else.
        """
        from safetensors.torch import load

        blob = self.read_bytes(digest)
        return load(blob), _metadata(blob)

    def iter_digests(self) -> Iterator[str]:
        """Digests of every file in the store, sorted (temporary files are skipped)."""
        for rel in _list(self.root / "objects"):
            digest = rel.replace("/", "").removesuffix(SUFFIX)
            if _DIGEST.fullmatch(digest) and rel == self.uri(digest).removeprefix("objects/"):
                yield digest

    def remove(self, digest: str) -> bool:
        """Delete the file of ``digest``; False when there was none. The index is not touched."""
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def age_s(self, digest: str) -> float | None:
        """Seconds since the file of ``digest`` was last written; None when there is none."""
        try:
            return max(0.0, time.time() - self.path(digest).stat().st_mtime)
        except FileNotFoundError:
            return None

    def verify(self) -> list[tuple[str, str]]:
        """Re-hash every file in the store.

        Returns:
            ``(digest, problem)`` for each file that does not hash to its name or cannot
            be read; empty when all is well.
        """
        problems = []
        for digest in self.iter_digests():
            try:
                self.read_bytes(digest)
            except StorageError as exc:
                problems.append((digest, str(exc)))
        return problems


def _serialize(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """safetensors bytes of ``tensors`` and ``meta``, and ``meta`` as it will read back."""
    from safetensors.torch import save

    try:
        text = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"artifact metadata must be JSON-serializable: {exc}") from exc
    data, storages = {}, set()
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr and ptr in storages:  # tied weights: safetensors refuses shared memory
            t = t.clone()
        storages.add(ptr)
        data[name] = t
    return save(data, metadata={"advgrid": text}), json.loads(text)


def _metadata(blob: bytes) -> dict[str, Any]:
    """The advgrid metadata in a safetensors header (8-byte length, then JSON)."""
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    meta: dict[str, Any] = json.loads(header.get("__metadata__", {}).get("advgrid", "{}"))
    return meta


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


def _list(folder: Path) -> list[str]:
    """Paths ``ab/cdef…`` of the artifact files under ``folder``, sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        f"{p.parent.name}/{p.name}"
        for p in folder.glob(f"??/*{SUFFIX}")
        if not p.name.startswith(_TMP_PREFIX)
    )


def _write_atomic(target: Path, blob: bytes) -> None:
    """Write ``blob`` to ``target`` via a fsynced temporary file and a rename."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TMP_PREFIX, suffix=SUFFIX)
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

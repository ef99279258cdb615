"""Content-addressed artifact store: safetensors files named by their SHA-256.

Layout: ``<root>/objects/ab/cdef….safetensors`` where ``abcdef…`` is the SHA-256 of the
file's bytes. A write goes to a temporary file in the target folder, is fsynced and renamed
into place, then the folder is fsynced, so a reader sees a whole file or none. A crash can
leave an orphan file, never an index row pointing at nothing: rows are written after the
file. Every read re-hashes the bytes. No pickle anywhere: tensors are safetensors, the
metadata is JSON in the safetensors header (``{"advgrid": "<json>"}``).

An unfinished cell may save where it is (a train cell's weights, optimizer and random
streams after an epoch) as an ordinary artifact, named for it by a small JSON pointer under
``<root>/partials/``, and say how far it is under ``<root>/progress/``
(:mod:`storage.cell_files`).

The root is a local folder (a path, or a ``file://`` URL, which is the same folder) or any
fsspec URL (``s3://bucket/prefix``, ``gs://…``). All file I/O goes through a small backend:
:class:`storage.localfs.LocalFiles` (the fast path: plain ``os`` calls, fsync, rename) or
:class:`storage.fsstore.FsspecFiles`, which keeps the same layout and rules on fsspec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.cell_files import CellFiles, partial_files
from storage.errors import CorruptArtifactError, NotFoundError, StorageError
from storage.localfs import SUFFIX, Files, LocalFiles
from storage.rows import ArtifactRecord

if TYPE_CHECKING:
    import torch
    from fsspec import AbstractFileSystem

__all__ = ["ArtifactRecord", "ArtifactStore", "check_digest", "partial_files"]

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")


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


class ArtifactStore(CellFiles):
    """Tensors in, digests out; digests in, verified tensors out.

    Args:
        root: The store's folder, or an fsspec URL (``s3://bucket/prefix``, ``gs://…``,
            ``file:///abs/path``); ``objects/`` is created under it on the first write.
            Credentials come from the environment or the fsspec configuration.
        filesystem: An fsspec filesystem instance configured in code (an endpoint,
            credentials) on which ``root`` is a path; by default the root picks its own.

    Attributes:
        root: The folder (a ``Path``; a ``file://`` URL becomes its path) or the URL as
            given; show :meth:`location` instead, which masks any password.

    Raises:
        StorageError: ``root`` is a URL that cannot name a store (see
            :func:`storage.fsstore.open_url`).
    """

    def __init__(self, root: str | Path, *, filesystem: AbstractFileSystem | None = None) -> None:
        self._files: Files
        self.root: Path | str
        if filesystem is not None:
            from storage.fsstore import FsspecFiles

            self.root = str(root)
            self._files = FsspecFiles(filesystem, filesystem._strip_protocol(self.root))
            return
        if isinstance(root, str) and "://" in root:
            from storage.fsstore import open_url

            opened = open_url(root)
            if not isinstance(opened, Path):
                self.root, self._files = root, opened
                return
            root = opened
        self.root = Path(root)
        self._files = LocalFiles(self.root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.location()!r})"

    def location(self, digest: str | None = None) -> str:
        """Where the store, or the file of ``digest``, is: a path, or a URL with any password
        masked (safe to show).

        Raises:
            StorageError: ``digest`` is not 64 lowercase hex characters.
        """
        return self._files.location("" if digest is None else self.uri(digest))

    def uri(self, digest: str) -> str:
        """Location of ``digest`` relative to the root: ``objects/ab/cdef….safetensors``."""
        check_digest(digest)
        return f"objects/{digest[:2]}/{digest[2:]}{SUFFIX}"

    def path(self, digest: str) -> Path:
        """Local path of ``digest`` (which need not exist).

        Raises:
            StorageError: ``digest`` is not 64 lowercase hex characters, or the store is not
                a local folder (use :meth:`location`).
        """
        rel = self.uri(digest)
        if not isinstance(self._files, LocalFiles):
            raise StorageError(
                f"the artifact store {self.location()} is not a local folder: its files have "
                "no local path"
            )
        return self._files.root / rel

    def exists(self, digest: str) -> bool:
        """Whether a file for ``digest`` is in the store (its bytes are not checked)."""
        return self._files.size(self.uri(digest)) is not None

    def size(self, digest: str) -> int | None:
        """Bytes of the stored file of ``digest``; None when there is none."""
        return self._files.size(self.uri(digest))

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
        rel = self.uri(digest)
        if self._files.size(rel) == len(blob):
            log.debug("artifact %s already stored", digest)
        else:
            self._files.write(rel, blob)
        return ArtifactRecord(
            digest=digest,
            kind=str(meta.get("kind", "tensors")),
            uri=rel,
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
        rel = self.uri(digest)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise CorruptArtifactError(
                f"refusing to store artifact {digest}: the bytes given hash to {actual}"
            )
        if self._files.size(rel) == len(blob):
            return False
        self._files.write(rel, blob)
        return True

    def read_bytes(self, digest: str) -> bytes:
        """The bytes of ``digest``, after checking they hash to it.

        Raises:
            NotFoundError: No such file in the store.
            CorruptArtifactError: Its bytes hash to something else.
        """
        rel = self.uri(digest)
        blob = self._files.read(rel)
        if blob is None:
            raise NotFoundError(
                f"artifact {digest} is missing from the store ({self._files.location(rel)}); "
                "re-run the cell that wrote it (`advgrid run STUDY.yaml` resumes) or check "
                "the --store root"
            )
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise CorruptArtifactError(
                f"artifact {self._files.location(rel)} is corrupt: its bytes hash to {actual}, "
                "not to its name; run `advgrid artifacts verify` and re-run the cells that "
                "wrote it"
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
        return load(blob), metadata(blob)

    def iter_digests(self) -> Iterator[str]:
        """Digests of every file in the store, sorted (temporary files are skipped)."""
        for rel in self._files.listing():
            digest = rel.replace("/", "").removesuffix(SUFFIX)
            if _DIGEST.fullmatch(digest) and rel == self.uri(digest).removeprefix("objects/"):
                yield digest

    def remove(self, digest: str) -> bool:
        """Delete the file of ``digest``; False when there was none. The index is not touched."""
        return self._files.remove(self.uri(digest))

    def age_s(self, digest: str) -> float | None:
        """Seconds since the file of ``digest`` was last written; None when there is none.

        On an object store this is the object's modification time as the store reports it
        (S3 ``LastModified``, GCS ``updated``: when the object was uploaded, since objects are
        written once), against this machine's clock.
        """
        written = self._files.mtime(self.uri(digest))
        return None if written is None else max(0.0, time.time() - written)

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


def metadata(blob: bytes) -> dict[str, Any]:
    """The advgrid metadata in a safetensors header (8-byte length, then JSON); ``{}`` for
    a safetensors file without any. Reads the header only: nothing in the file runs.

    Raises:
        ValueError: ``blob`` does not start with a safetensors header.
    """
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    meta: dict[str, Any] = json.loads(header.get("__metadata__", {}).get("advgrid", "{}"))
    return meta

"""What a store keeps for a cell that is not done yet: its saved state (where it left off)
and its progress (how far it is), each a small JSON file named by the cell key.

``<root>/partials/ab/cdef….json`` points at the saved state of unfinished cell ``abcdef…``
(an ordinary artifact, with the artifacts it stands on as ``parts``); it is written after
them and replaced whole, so a reader finds the old state or the new one, never half of one.
``<root>/progress/ab/cdef….json`` is what the running cell last said of its progress, for
``advgrid status`` and the drivers' progress bars, wherever they run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from storage.errors import CorruptArtifactError, StorageError

if TYPE_CHECKING:
    from storage.localfs import Files
    from storage.rows import ArtifactRecord

_DIGEST = re.compile(r"[0-9a-f]{64}")
PARTIALS = "partials"
PROGRESS = "progress"
POINTER = ".json"


def _key_uri(folder: str, cell_key: str) -> str:
    if not isinstance(cell_key, str) or not _DIGEST.fullmatch(cell_key):
        raise StorageError(
            f"invalid cell key {cell_key!r}: expected 64 lowercase hex characters (a SHA-256)"
        )
    return f"{folder}/{cell_key[:2]}/{cell_key[2:]}{POINTER}"


def partial_files(pointer: dict[str, Any]) -> list[str]:
    """The digests of the files a saved-state pointer stands on: its state and its parts."""
    named = [pointer.get("digest"), *list(pointer.get("parts") or [])]
    return [str(d) for d in named if isinstance(d, str) and _DIGEST.fullmatch(d)]


class CellFiles:
    """The saved states and progress of :class:`storage.ArtifactStore` (its base)."""

    _files: Files

    def remove(self, digest: str) -> bool:  # pragma: no cover - ArtifactStore's
        raise NotImplementedError

    # --- partial states: where an unfinished cell left off ------------------------------

    @staticmethod
    def _partial_uri(cell_key: str) -> str:
        return _key_uri(PARTIALS, cell_key)  # a SHA-256: it cannot name another path

    def set_partial(self, cell_key: str, record: ArtifactRecord, info: dict[str, Any]) -> None:
        """Make ``record`` (an artifact already stored) the saved state of the unfinished
        cell ``cell_key``, replacing the one before, whose files are then removed (those
        the new pointer does not name again). ``info["parts"]`` may list the digests of
        more artifacts the state stands on (an attack cell's finished batches). The pointer
        is written whole or not at all, after the state's files: a reader finds the old
        state or the new one, never half of one."""
        try:
            before = self.partial(cell_key)
        except CorruptArtifactError:
            before = None
        pointer = {"digest": record.digest, **info}
        self._files.write(self._partial_uri(cell_key), json.dumps(pointer).encode())
        if before is not None:
            for digest in set(partial_files(before)) - set(partial_files(pointer)):
                self.remove(digest)

    def partial(self, cell_key: str) -> dict[str, Any] | None:
        """The pointer to the saved state of cell ``cell_key`` (``digest`` and what the
        writer added), or None when it has none.

        Raises:
            CorruptArtifactError: The pointer is not the JSON this store writes.
        """
        rel = self._partial_uri(cell_key)
        blob = self._files.read(rel)
        if blob is None:
            return None
        try:
            pointer = json.loads(blob)
            if not _DIGEST.fullmatch(str(pointer["digest"])):
                raise ValueError(f"{pointer['digest']!r} is not a digest")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(
                f"the saved state pointer {self._files.location(rel)} is corrupt ({exc})"
            ) from exc
        return dict(pointer)

    def drop_partial(self, cell_key: str) -> bool:
        """Remove the saved state of cell ``cell_key`` (pointer, then file); False when
        there was none. A corrupt pointer is removed too."""
        try:
            pointer = self.partial(cell_key)
        except CorruptArtifactError:
            pointer = {}
        removed = self._files.remove(self._partial_uri(cell_key))
        for digest in partial_files(pointer or {}):
            self.remove(digest)
        return removed

    def iter_partials(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        """``(cell key, pointer)`` of every saved state, sorted by key; the pointer is None
        where it is corrupt."""
        for rel in self._files.listing(PARTIALS, POINTER):
            key = rel.replace("/", "").removesuffix(POINTER)
            if not _DIGEST.fullmatch(key):
                continue
            try:
                yield key, self.partial(key)
            except CorruptArtifactError:
                yield key, None

    # --- progress: how far a running cell is, for anyone who reads the store -------------

    @staticmethod
    def _progress_uri(cell_key: str) -> str:
        return _key_uri(PROGRESS, cell_key)

    def set_progress(self, cell_key: str, info: dict[str, Any]) -> None:
        """Record how far the running cell ``cell_key`` is (small JSON, replaced whole)."""
        self._files.write(self._progress_uri(cell_key), json.dumps(info).encode())

    def progress(self, cell_key: str) -> dict[str, Any] | None:
        """What the running cell ``cell_key`` last said of its progress, with ``age_s``
        (seconds since it said it); None when it said nothing or it is unreadable."""
        rel = self._progress_uri(cell_key)
        blob = self._files.read(rel)
        if blob is None:
            return None
        try:
            info = dict(json.loads(blob))
        except (ValueError, TypeError):
            return None
        written = self._files.mtime(rel)
        if written is not None:
            info["age_s"] = max(0.0, time.time() - written)
        return info

    def drop_progress(self, cell_key: str) -> bool:
        return self._files.remove(self._progress_uri(cell_key))

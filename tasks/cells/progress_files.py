"""A running cell's progress reports, written to the store for whoever reads it."""

from __future__ import annotations

import contextlib
from typing import Any

from storage import ArtifactStore
from storage.errors import StorageError
from tasks.cells.worker import worker_name
from tasks.progress import Sink


def progress_sink(store: ArtifactStore, cell_key: str, kind: str, what: str) -> Sink:
    """A sink that records each report as the cell's progress in ``store``, with the cell's
    kind, what it works on (a model, an attack on a defended model) and where it runs."""
    where = worker_name()

    def sink(report: dict[str, Any]) -> None:
        store.set_progress(cell_key, {**report, "kind": kind, "what": what, "worker": where})

    return sink


def drop_progress(store: ArtifactStore, cell_key: str) -> None:
    """Remove the cell's progress once it is done (a store that refuses just keeps it)."""
    with contextlib.suppress(StorageError):
        store.drop_progress(cell_key)

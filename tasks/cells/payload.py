"""What travels between the driver and a worker for one cell: :class:`CellPayload` in,
:class:`CellResult` back.

Both go over the wire as plain dicts (Ray pickles them, the inline executor hands them
over); these models are their schema, checked where the worker receives a payload and
where it returns a result. Tensors never travel back to the driver.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.cells.specs import SpecModel


class CellPayload(BaseModel):
    """One cell as the driver submits it (:meth:`orchestrator.run.driver.Driver._payload`).

    Attributes:
        key: The cell's key (names the Ray task).
        kind: Which kind of cell, and so which runner (:data:`tasks.cells.CELL_KINDS`).
        spec: The normalized spec, typed by its kind's spec models
            (:func:`tasks.cells.parse_payload` validates a plain payload).
        inputs: The digest of each artifact the cell reads, by role (``checkpoint``,
            ``adversarial``, ``autoencoder``).
        store: The artifact store's root (a folder or an fsspec URL).
        batch_size: The study's ``execution.batch_size``; None in hand-built payloads,
            where a train cell predicts 1024 samples at a time.
        channels_last: Whether models run in ``channels_last`` memory format.
        allow_imports: Whether the study trusts model factories named by import path. Kept
            as sent: only ``True`` itself trusts them, never a truthy stand-in such as
            ``"true"``, so the value is not coerced to a bool.
        num_cpus: The cell's CPU share; torch uses that many threads.
        data_workers: DataLoader worker processes that gather a train cell's minibatches
            (``execution.data_workers``); 0 gathers them in the cell's own process.
        checkpoint_every: A train cell saves its state after every this many epochs, an
            attack cell its finished batches after every this many batches
            (``execution.checkpoint_every``; None: not by count).
        checkpoint_minutes: Either saves when this many minutes have passed since it last
            did (``execution.checkpoint_minutes``; None: not by time).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    kind: str
    spec: SpecModel
    inputs: dict[str, str] = {}
    store: str
    batch_size: int | None = None
    channels_last: bool = False
    allow_imports: Any = False
    num_cpus: float = 1
    data_workers: int = 0
    checkpoint_every: int | None = None
    checkpoint_minutes: float | None = None

    def wire(self) -> dict[str, Any]:
        """The plain payload, as the driver sent it (keys it left out stay out)."""
        out = self.model_dump(mode="json", exclude_unset=True, exclude={"spec"})
        return {**out, "spec": self.spec.dump()}


class CellOutput(BaseModel):
    """What a kind's runner returns: its metrics, the records of the artifacts it stored
    (each :class:`storage.ArtifactRecord` as a dict, by role), and what it says of its run
    (``notes``, kept with its attempt: a train cell that resumed from a saved state)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: dict[str, float]
    artifacts: dict[str, dict[str, Any]]
    notes: tuple[str, ...] = ()


class CellResult(CellOutput):
    """What a worker returns for one cell (as a plain dict: :meth:`CellResult.wire`).

    ``started_at`` and ``ended_at`` are this worker's wall clock (epoch seconds) around the
    cell, which show how cells overlapped; the index keeps its own times on the database
    clock and does not store them.

    Attributes:
        worker: Where it ran (:func:`tasks.cells.worker.worker_name`).
        duration_s: How long the cell took, by this worker's monotonic clock.
    """

    worker: str
    duration_s: float
    started_at: float
    ended_at: float

    def wire(self) -> dict[str, Any]:
        """The plain result the driver commits."""
        return self.model_dump(mode="json")

"""A train cell's saved state in the store: written every ``checkpoint_every`` epochs or
``checkpoint_minutes`` minutes, read back by the next attempt of the same cell, removed
when the cell is done.

A state (:class:`tasks.resume.TrainState`) is an ordinary artifact, named for its cell by
the store's pointer (:meth:`storage.ArtifactStore.set_partial`), so a reader finds the
previous state or the new one and never half of one. It is used again only when it is
whole (its bytes hash to its name), of this cell key, of this code version, device type and
number of epochs, and of the model's weight names and shapes; otherwise it is discarded,
and the attempt's note says which and why (``advgrid attempts``). Every other run trains as
if nothing had been saved: the state changes nothing but where training starts.
"""

from __future__ import annotations

import logging
import time

from torch import nn

from storage import ArtifactStore
from storage.errors import StorageError
from tasks import resume

log = logging.getLogger(__name__)


class StoreCheckpoints:
    """:class:`tasks.training.Checkpoints` that write to the store under ``cell_key``.

    Args:
        store: The artifact store.
        cell_key: The cell the states belong to.
        expected: What every state records and a reader checks (cell key, code version,
            device type, epochs).
        every: Save after every this many epochs (None: not by epochs).
        minutes: Save when this many minutes have passed since the last save or the
            start (None: not by time).
        worker: Where the run is, recorded with each state.
    """

    def __init__(
        self,
        store: ArtifactStore,
        cell_key: str,
        expected: dict[str, object],
        *,
        every: int | None,
        minutes: float | None,
        worker: str,
    ) -> None:
        self.store, self.key, self.expected = store, cell_key, expected
        self.every, self.minutes, self.worker = every, minutes, worker
        self.last = time.monotonic()
        self.saved = 0

    def due(self, epoch: int) -> bool:
        if self.every is not None and epoch % self.every == 0:
            return True
        return self.minutes is not None and time.monotonic() - self.last >= 60 * self.minutes

    def save(self, state: resume.TrainState) -> None:
        meta = {**state.meta, **self.expected}
        record = self.store.put(state.tensors, meta)
        info = {"epoch": state.epoch, "epochs": self.expected["epochs"], "worker": self.worker}
        self.store.set_partial(self.key, record, info)
        self.last, self.saved = time.monotonic(), self.saved + 1
        log.info("cell %s: state saved after epoch %d", self.key[:12], state.epoch)


def load(
    store: ArtifactStore, cell_key: str, expected: dict[str, object], model: nn.Module
) -> tuple[resume.TrainState | None, list[str]]:
    """The saved state the cell can continue from (None: none, or none usable) and the
    notes its attempt records: where it resumed, or which state it discarded and why (the
    discarded state is removed)."""
    try:
        pointer = store.partial(cell_key)
    except StorageError as exc:
        store.drop_partial(cell_key)
        return None, [f"discarded the saved state: {exc}; training from epoch 0"]
    if pointer is None:
        return None, []
    digest = str(pointer["digest"])
    try:
        tensors, meta = store.get(digest)
    except StorageError as exc:
        store.drop_partial(cell_key)
        return None, [f"discarded the saved state {digest[:12]}: {exc}; training from epoch 0"]
    why = resume.mismatch(meta, tensors, expected, model)
    if why is not None:
        store.drop_partial(cell_key)
        return None, [f"discarded the saved state {digest[:12]}: {why}; training from epoch 0"]
    epoch = int(meta["epoch"])
    where = f" (saved on {pointer['worker']})" if pointer.get("worker") else ""
    note = f"resumed at epoch {epoch} of {expected['epochs']} from state {digest[:12]}{where}"
    return resume.TrainState(epoch, tensors, meta), [note]

"""Which worker errors recur on every attempt (quarantined at once) and which may not."""

from __future__ import annotations

from storage.errors import StorageError
from tasks.checkpoint_io import CheckpointError
from tasks.datasets.files import MissingDataError
from tasks.defenses.purify import MissingArtifactError
from tasks.errors import (
    FactoryError,
    InputError,
    UnknownComponentError,
    WorkerDataError,
    recurs,
)


def test_bad_input_recurs_and_a_worker_s_own_trouble_does_not() -> None:
    for exc in (
        InputError("target class 50 is outside 0..9"),
        UnknownComponentError("pgdd"),
        FactoryError("no module"),
        CheckpointError("not a state dict"),
        MissingArtifactError("no autoencoder"),
    ):
        assert recurs(exc), exc
    for exc in (
        MissingDataError("no files here"),  # another worker may have them
        WorkerDataError("another copy of the files"),
        StorageError("cannot write artifact"),
        OSError("disk full"),
        RuntimeError("CUDA out of memory"),
    ):
        assert not recurs(exc), exc

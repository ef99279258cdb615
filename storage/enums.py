"""The words the index stores for a cell's state and kind and an attempt's outcome.

They are ``StrEnum`` members, so they compare equal to the strings the database holds and
render as those strings in f-strings, JSON and SQL parameters; the lowest layer defines
them so that every package spells them one way. A new cell kind adds its member here and
its entry in :data:`tasks.cells.CELL_KINDS`.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` for Python 3.10: members format as their values."""

        __str__ = str.__str__
        __format__ = str.__format__  # type: ignore[assignment]


class CellState(StrEnum):
    """Where a cell is: ``pending → running → done | failed``; ``quarantined`` after its
    last allowed attempt failed."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class CellKind(StrEnum):
    """What a cell does: fit a model, attack one, or evaluate stored examples on another."""

    TRAIN = "train"
    ATTACK = "attack"
    TRANSFER = "transfer"


class Outcome(StrEnum):
    """How an attempt ended."""

    OK = "ok"
    ERROR = "error"
    LOST_LEASE = "lost_lease"
    KILLED = "killed"


__all__ = ["CellKind", "CellState", "Outcome", "StrEnum"]

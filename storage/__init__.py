"""Storage: the SQL index (SQLAlchemy 2 + Alembic) and the content-addressed artifact store.

Imports nothing from ``orchestrator`` or ``tasks``.
"""

from storage.artifacts import ArtifactRecord, ArtifactStore
from storage.db import Database, mask_url
from storage.errors import (
    CorruptArtifactError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
)
from storage.rows import AttemptRow, CellRow, ClaimedCell, NewCell, StudyRow

__all__ = [
    "ArtifactRecord",
    "ArtifactStore",
    "AttemptRow",
    "CellRow",
    "ClaimedCell",
    "CorruptArtifactError",
    "Database",
    "NewCell",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageError",
    "StudyRow",
    "mask_url",
]

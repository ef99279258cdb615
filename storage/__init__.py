"""Storage: the SQL index (SQLAlchemy 2 + Alembic) and the content-addressed artifact store.

Imports nothing from ``orchestrator`` or ``tasks``.
"""

from storage.artifacts import ArtifactStore
from storage.db import Database
from storage.engine import mask_url
from storage.errors import (
    CorruptArtifactError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageError,
)
from storage.rows import (
    ArtifactRecord,
    AttemptRow,
    CellRow,
    ClaimedCell,
    NewCell,
    StudyRow,
)

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

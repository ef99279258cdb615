"""Storage: the SQL index (SQLAlchemy 2 + Alembic) and the content-addressed artifact store.

Imports nothing from ``orchestrator`` or ``tasks``.
"""

from storage.artifacts import ArtifactStore
from storage.bundle import ExportSummary, ImportSummary, export_bundle, import_bundle
from storage.db import Database
from storage.engine import mask_secrets, mask_url
from storage.errors import (
    BundleError,
    CorruptArtifactError,
    DatabaseUnavailableError,
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
from storage.version import __version__

__all__ = [
    "__version__",
    "ArtifactRecord",
    "ArtifactStore",
    "AttemptRow",
    "BundleError",
    "CellRow",
    "ClaimedCell",
    "CorruptArtifactError",
    "DatabaseUnavailableError",
    "Database",
    "ExportSummary",
    "ImportSummary",
    "NewCell",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageError",
    "StudyRow",
    "export_bundle",
    "import_bundle",
    "mask_secrets",
    "mask_url",
]

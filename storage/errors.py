"""Errors raised by :mod:`storage`.

Every message says what was expected, what came and what to do, naming the database (with
its password masked), the study, the cell key or the artifact file.
"""


class StorageError(Exception):
    """Base of every storage error: the database or the artifact store failed us."""


class DatabaseUnavailableError(StorageError):
    """The connection to the database failed or dropped; the transaction was rolled back.

    Worth retrying: nothing of the failed transaction was written (unless the connection
    dropped after the server committed, which callers must tolerate by being idempotent).
    """


class NotFoundError(StorageError, LookupError):
    """A study, cell or artifact that is not there."""


class SchemaOutOfDateError(StorageError):
    """The database schema is not the one this advgrid needs."""


class CorruptArtifactError(StorageError):
    """An artifact whose bytes no longer hash to its name."""


class BundleError(StorageError):
    """A bundle (``advgrid export`` / ``advgrid import``) that cannot be written or read."""

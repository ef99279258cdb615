"""Errors raised by :mod:`storage`.

Every message says what was expected, what came and what to do, naming the database (with
its password masked), the study, the cell key or the artifact file.
"""


class StorageError(Exception):
    """Base of every storage error: the database or the artifact store failed us."""


class NotFoundError(StorageError, LookupError):
    """A study, cell or artifact that is not there."""


class SchemaOutOfDateError(StorageError):
    """The database schema is not the one this advgrid needs."""


class CorruptArtifactError(StorageError):
    """An artifact whose bytes no longer hash to its name."""

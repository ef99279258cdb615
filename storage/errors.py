"""Errors raised by :mod:`storage`."""


class StorageError(Exception):
    """Base of every storage error: the database or the artifact store failed us."""


class NotFoundError(StorageError, LookupError):
    """A study, cell or artifact that is not there."""


class SchemaOutOfDateError(StorageError):
    """The database schema is not the one this advgrid needs."""


class CorruptArtifactError(StorageError):
    """An artifact whose bytes no longer hash to its name."""

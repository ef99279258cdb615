"""Errors raised on the worker side."""


class TaskError(Exception):
    """Base of every error raised by :mod:`tasks`."""


class UnknownComponentError(TaskError, KeyError):
    """A component name that no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(TaskError, ValueError):
    """Inputs that break a component's contract (shape, range, dtype)."""


class ImportNotAllowedError(TaskError):
    """A model named by an import path in data that was not marked as trusted."""


class FactoryError(TaskError):
    """A model factory import path that cannot be imported, found, called or used."""


class NotDifferentiableError(TaskError, RuntimeError):
    """A gradient asked of a defense that declares itself not differentiable."""


class WorkerDataError(InputError):
    """Data on this worker that is not the study's (missing files, another copy): another
    worker may have the right one, so a cell that meets it is retried."""


def recurs(exc: BaseException) -> bool:
    """Whether ``exc`` would be raised again by every attempt of the cell: bad input (a
    contract, a component, a file's content) rather than a flaky worker, a full disk or a
    lost connection. Such a cell is quarantined at its first failure, not retried."""
    if isinstance(exc, WorkerDataError):
        return False
    deterministic = (
        InputError,
        UnknownComponentError,
        ImportNotAllowedError,
        FactoryError,
        NotDifferentiableError,
    )
    return isinstance(exc, deterministic) or getattr(exc, "recurs", False) is True

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

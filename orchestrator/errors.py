"""Errors raised on the driver side."""

from __future__ import annotations


class AdvgridError(Exception):
    """Base of every driver-side error; the CLI turns it into ``Error: …`` and exit 1."""


class ConfigError(AdvgridError):
    """A study file or setting that cannot be used; lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            text = f"{source}: {problems[0]}" if source else problems[0]
        else:
            lines = "\n".join(f"  {source}: {p}" if source else f"  {p}" for p in problems)
            text = f"{source or 'study'} has {len(problems)} problems:\n{lines}"
        super().__init__(text)


class RunFailedError(AdvgridError):
    """A run that ended with failed or blocked cells."""

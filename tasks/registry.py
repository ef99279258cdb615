"""Component registries: one generic :class:`Registry` per kind of component.

A component is registered next to its definition::

    @ATTACKS.register("pgd")
    class PGD(Attack):
        Params = PGDParams

Every entry carries a typed params model (pydantic, ``extra="forbid"``, frozen) and a
one-line summary taken from the first line of the component's docstring. Third-party
packages add components through the entry-point groups ``advgrid.attacks``,
``advgrid.defenses``, ``advgrid.models`` and ``advgrid.datasets``: each entry point names a
module that registers its components when imported.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from tasks.errors import UnknownComponentError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Params(BaseModel):
    """Base for every component's params model: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component."""

    name: str
    obj: T
    params: type[Params]
    summary: str


def _summary(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


class Registry(Generic[T]):
    """Name → component table for one kind (attack, defense, model, dataset)."""

    def __init__(self, kind: str, plural: str) -> None:
        self.kind = kind
        self.plural = plural
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str, *, params: type[Params] | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        ``params`` defaults to the object's ``Params`` attribute.
        """
        if name != name.lower() or not name.replace("_", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r} must be lowercase snake_case")

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            model = params if params is not None else getattr(obj, "Params", None)
            if model is None or not issubclass(model, Params):
                raise TypeError(
                    f"{self.kind} {name!r} needs a Params model (tasks.registry.Params)"
                )
            self._entries[name] = Entry(name=name, obj=obj, params=model, summary=_summary(obj))
            return obj

        return decorate

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"advgrid.{self.plural}"):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except Exception:  # a broken plugin must not break the built-ins
                log.exception("could not load %s plugin %s", self.kind, ep.value)

    def get(self, name: str) -> Entry[T]:
        """The entry for ``name``; raises :class:`UnknownComponentError` with close matches."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        self._load_plugins()
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        return (
            f"unknown {self.kind} {name!r}{hint} Run `advgrid list {self.plural}` to see all names."
        )

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load_plugins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return [e.name for e in self]

    def params_of(self, name: str, values: dict[str, Any]) -> Params:
        """Validate ``values`` against the params model of ``name``."""
        return self.get(name).params.model_validate(values)

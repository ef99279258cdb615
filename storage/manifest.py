"""The manifest of a bundle (``manifest.json``): its schema and how it is read.

:class:`Manifest` is the whole format: strict types, no unknown keys, every digest a
SHA-256, every string within its database column. :func:`read_manifest` checks the format
name and version first (so an old advgrid says "upgrade" rather than listing keys), then
the rest, and names the bundle and the bad key in every error.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from storage.artifacts import check_digest
from storage.errors import BundleError, StorageError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "ArtifactEntry",
    "CellEntry",
    "Counts",
    "Manifest",
    "StudyEntry",
    "read_manifest",
]

FORMAT: Final = "advgrid-bundle"
VERSION: Final = 1
MANIFEST = "manifest.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHOWN = 5  # problems listed in one error


def _digest(value: str) -> str:
    try:
        return check_digest(value)
    except StorageError as exc:  # pydantic reports ValueError with the key's location
        raise ValueError(str(exc)) from exc


def _key(value: str) -> str:
    if not _HEX64.fullmatch(value):
        raise ValueError("expected a cell key: 64 lowercase hex characters")
    return value


Digest = Annotated[str, AfterValidator(_digest)]
Key = Annotated[str, AfterValidator(_key)]
Count = Annotated[int, Field(ge=0)]
# strings that fit their database columns (PostgreSQL enforces the lengths)
Name32 = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Name128 = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name255 = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Text32 = Annotated[str, StringConstraints(max_length=32)]
Text64 = Annotated[str, StringConstraints(max_length=64)]
Text255 = Annotated[str, StringConstraints(max_length=255)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudyEntry(_Row):
    """The study: created from these values where the importing index has none by its name."""

    name: Name255
    spec_yaml: str
    spec_hash: Text64
    created_by: Text255
    advgrid_version: Text32


class CellEntry(_Row):
    """One done cell: what it is, its result and its artifacts (``{role: digest}``)."""

    key: Key
    kind: Name32
    spec_json: str
    depends_on: list[Key]
    metrics: dict[Name128, float]
    artifacts: dict[Name32, Digest]
    duration_s: float | None
    worker: Text255 | None
    finished_at: datetime | None
    attempts: Count

    @field_validator("spec_json")
    @classmethod
    def _is_json(cls, value: str) -> str:
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        return value


class ArtifactEntry(_Row):
    """One artifact's index entry; its file is ``objects/ab/cdef….safetensors``."""

    digest: Digest
    kind: Name32
    bytes: Count
    format: Literal["safetensors"]
    meta: dict[str, Any]


class Counts(_Row):
    """How many cells and artifacts the bundle holds, and the artifacts' total size."""

    cells: Count
    artifacts: Count
    bytes: Count


class Manifest(_Row):
    """``manifest.json``: everything in a bundle but the artifact files."""

    format: Literal["advgrid-bundle"]
    version: Literal[1]
    advgrid_version: str
    counts: Counts
    study: StudyEntry
    cells: list[CellEntry]
    artifacts: list[ArtifactEntry]

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        listed = _unique([a.digest for a in self.artifacts], "artifacts", "digest")
        _unique([c.key for c in self.cells], "cells", "key")
        for i, cell in enumerate(self.cells):
            for role, digest in cell.artifacts.items():
                if digest not in listed:
                    raise ValueError(
                        f"cells[{i}].artifacts.{role}: artifact {digest} is not listed "
                        "under artifacts"
                    )
        actual = Counts(
            cells=len(self.cells),
            artifacts=len(self.artifacts),
            bytes=sum(a.bytes for a in self.artifacts),
        )
        if actual != self.counts:
            raise ValueError(f"counts: {self.counts.model_dump()} do not match the rows")
        return self


def _unique(values: list[str], rows: str, key: str) -> set[str]:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{rows}[{i}].{key}: {value} appears twice")
        seen.add(value)
    return seen


def read_manifest(root: Path, where: str) -> Manifest:
    """The validated manifest of the bundle unpacked at ``root``.

    Args:
        root: The bundle's folder.
        where: How errors name the bundle (its path as the user gave it).

    Raises:
        BundleError: Missing, not JSON, not an advgrid bundle, a version this advgrid does
            not read, or a key that is missing, unknown or of the wrong type.
    """
    file = root / MANIFEST
    if file.is_symlink() or not file.is_file():
        raise BundleError(f"{where}: no {MANIFEST}; expected a bundle written by `advgrid export`")
    try:
        text = file.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{where}: {MANIFEST} cannot be read as JSON: {exc}") from exc
    _check_format(data, f"{where}: {MANIFEST}")
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise BundleError(
            f"{where}: {MANIFEST} is invalid: {'; '.join(problems[:_SHOWN])}{more}; "
            "nothing was imported"
        ) from exc


def _check_format(data: Any, where: str) -> None:
    got = data.get("format") if isinstance(data, dict) else type(data).__name__
    if got != FORMAT:
        raise BundleError(
            f"{where}: format: expected {FORMAT!r}, got {got!r}; not an advgrid bundle"
        )
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > VERSION
        hint = "upgrade advgrid to import it" if newer else "re-export it with `advgrid export`"
        raise BundleError(
            f"{where}: version: this advgrid reads bundle version {VERSION}, got {version!r}; "
            + hint
        )


def _describe(err: Any) -> str:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    if err["type"] == "missing":
        message = "required key is missing"
    elif err["type"] == "extra_forbidden":
        message = "unknown key"
    elif not loc:  # a check across rows: the message names the rows
        message = err["msg"].removeprefix("Value error, ")
    else:
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        message = f"{err['msg'].removeprefix('Value error, ')} (got {got})"
    return f"{loc}: {message}" if loc else message

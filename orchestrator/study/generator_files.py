"""Generators read from files: ``generator: {checkpoint: FILE}`` in a purifier's or gat's params.

A generator a study trained is an artifact of its store: a safetensors file whose header
holds advgrid's metadata (the architecture, the recipe it was trained with under ``vae``, and
the dataset it was trained on). Another study may use that file instead of training its own.
Before any defense entry is resolved, :func:`take` reads the file's header (its code is never
run), checks that it is such a generator, and replaces the entry's ``generator:`` by the
file's recipe plus ``checkpoint: sha256:<hex>``: the recipe decides the levels an α list
or a gat level is checked against, and the keys hold the file's content, not its path. A
recipe key the entry gives that the file contradicts is refused (the file decides). After
the datasets are described, :func:`check_datasets` refuses a generator used on a dataset it
was not trained on (another dataset, other params such as the split's seed, or other
files): its training images could be the study's evaluation images, or not its kind of
image at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.study.problems import Problems
from orchestrator.study.schema import Study
from storage.artifacts import metadata

PREFIX = "sha256:"


@dataclass(frozen=True)
class GeneratorFile:
    """One generator file a study names: where it is, its digest, what it was trained on,
    and where the entries that use it give their params (``("defenses", 1)``,
    ``("models", 2, "train", "defense")``)."""

    path: str
    sha256: str
    dataset: dict[str, Any]
    entries: tuple[tuple, ...]


def take(study: Study, values: dict, where: tuple, base: Path, problems: Problems) -> bool:
    """Replace the ``generator:`` of the params at ``where`` (a copy of a defense entry's
    raw values, or of a recipe's training defense) by the recipe of the file it names;
    whether it names one. Problems go to ``problems``."""
    gen = values.get("generator")
    if not isinstance(gen, dict) or gen.get("checkpoint") is None:
        return False
    loc = (*where, "generator", "checkpoint")
    given = gen["checkpoint"]
    if not isinstance(given, str) or given.startswith(PREFIX):
        problems.add(loc, f"must be the path of a generator file, got {given!r}")
        return True
    path = Path(given).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        blob = path.read_bytes()
    except OSError as exc:
        problems.add(loc, f"cannot read {path}: {exc.strerror or exc}")
        return True
    meta = _meta(blob)
    if (
        meta is None
        or meta.get("kind") != "checkpoint"
        or meta.get("arch") not in ("hvae", "vae")
        or not isinstance(meta.get("vae"), dict)
    ):
        problems.add(
            loc,
            f"{path.name} is not a generator file written by advgrid: give the artifact of a "
            "generator cell (model `generator` in `advgrid results`; its file is in the "
            "store, `advgrid artifacts ls`)",
        )
        return True
    recipe = {k: v for k, v in meta["vae"].items() if k != "checkpoint"}
    for key, value in gen.items():
        if key != "checkpoint" and key in recipe and recipe[key] != value:
            problems.add(
                (*where, "generator", key),
                f"is {value!r}, but the generator in {path.name} was trained with "
                f"{key}: {recipe[key]!r}; remove it (the file's recipe is used)",
            )
    sha = hashlib.sha256(blob).hexdigest()
    values["generator"] = {**recipe, "checkpoint": PREFIX + sha}
    known = study.generator_files.get(sha)
    entries = (*known.entries, where) if known else (where,)
    study.generator_files[sha] = GeneratorFile(str(path.resolve()), sha, meta["dataset"], entries)
    return True


def _meta(blob: bytes) -> dict[str, Any] | None:
    """advgrid's metadata in a safetensors header, or None when the file has no header."""
    try:
        return metadata(blob)
    except (ValueError, AttributeError, TypeError):  # not JSON, or JSON of another shape
        return None


def check_datasets(study: Study, problems: Problems) -> None:
    """Refuse each generator file used on a study dataset other than the one it was
    trained on (name, params but ``root``, and the digest of its files)."""
    for f in study.generator_files.values():
        trained = _identity(f.dataset)
        for d in study.home_datasets():  # out of domain, a purifier is its home's
            here = _identity(
                {"name": d.name, "params": d.params, "digest": study.data_info[d.label].digest}
                if d.label in study.data_info
                else {"name": d.name, "params": d.params}
            )
            if here == trained:
                continue
            problems.add(
                (*f.entries[0], "generator", "checkpoint"),
                f"the generator in {Path(f.path).name} was trained on {_show(f.dataset)}, "
                f"but this study uses it on dataset {d.label!r} ({_show(here)}): a purifier's "
                "generator must be trained on the training part of the same data (use one "
                "trained by this study: remove `checkpoint:`)",
            )


def _identity(dataset: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in dict(dataset.get("params") or {}).items() if k != "root"}
    return {"name": dataset.get("name"), "params": params, "digest": dataset.get("digest")}


def _show(dataset: dict[str, Any]) -> str:
    params = {k: v for k, v in dict(dataset.get("params") or {}).items() if k != "root"}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{dataset.get('name')} ({shown})" if shown else str(dataset.get("name"))

"""Checks of a study's model entries: architecture and params, a recipe or a checkpoint file
(hashed here), a training defense, split parts, torchvision's models, model factories by
import path, and the names ``datasets:``, ``sources:`` and ``targets:`` refer to."""

from __future__ import annotations

import difflib
import hashlib
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.study import generator_files
from orchestrator.study.problems import Problems
from orchestrator.study.schema import ModelEntry, Study, StudyFile
from tasks import models
from tasks.defenses import DEFENSES
from tasks.errors import FactoryError, UnknownComponentError
from tasks.models import MODELS
from tasks.train_defenses import TRAINING_DEFENSES
from tasks.training import DefenseChoice


def check(study: Study, problems: Problems, base: Path) -> None:
    """Check every model entry of ``study``, hashing its checkpoint files.

    Args:
        study: The study being validated; ``study.checkpoints`` is filled in.
        problems: Where errors go.
        base: The folder relative checkpoint paths start from (the study file's).
    """
    spec = study.file
    names = [m.name for m in spec.models]
    dataset_labels = [d.label for d in study.datasets]
    for i, m in enumerate(spec.models):
        loc = ("models", i)
        if names.count(m.name) > 1:
            problems.add(loc + ("name",), f"model name {m.name!r} is used twice")
        _check_arch(spec, m, loc, problems)
        if (m.train is None) == (m.checkpoint is None):
            problems.add(loc, "give exactly one of `train:` (a recipe) or `checkpoint:` (a file)")
        if m.checkpoint is not None:
            _check_checkpoint(study, m, base, loc, problems)
        else:
            for key in ("normalization", "expected_clean_accuracy"):
                if getattr(m, key) is not None:
                    problems.add(
                        loc + (key,), f"`{key}:` is for a model loaded from a `checkpoint:` file"
                    )
        _check_train_defense(study, m, loc, problems, base)
        for j, d in enumerate(m.datasets or []):
            if d not in dataset_labels:
                problems.add(loc + ("datasets", j), _unknown("dataset", d, dataset_labels))
    _check_splits(spec, problems)
    known = list(dict.fromkeys(n for m in spec.models for n in [m.name, *m.part_names()]))
    for axis in ("sources", "targets"):
        value = getattr(spec, axis)
        for j, name in enumerate([] if value == "all" else value):
            if name not in known:
                problems.add((axis, j), _unknown("model", name, known))


def _check_train_defense(
    study: Study, m: ModelEntry, loc: tuple, problems: Problems, base: Path
) -> None:
    """A recipe's ``defense:`` names a training defense with valid parameters; it is stored
    normalized (defaults filled in), which is how it enters the train cell's key. A
    generator it reads from a file (``gat``) is replaced by the file's recipe first."""
    choice = m.train.defense if m.train is not None else None
    if m.train is None or choice is None:
        return
    where = loc + ("train", "defense")
    values = choice.values
    if generator_files.take(study, values, where, base, problems):
        choice = DefenseChoice(name=choice.name, **values)
    if choice.name not in TRAINING_DEFENSES:
        message = TRAINING_DEFENSES.unknown_message(choice.name)
        if choice.name in DEFENSES:
            message = (
                f"{choice.name!r} is an inference-time defense, not a training one; "
                "list it under the study's `defenses:` instead"
            )
        problems.add(where + ("name",), message)
        return
    model = TRAINING_DEFENSES.get(choice.name).params
    try:
        params = model.model_validate(values)
    except ValidationError as exc:
        problems.add_pydantic(exc, where, model)
        return
    normalized = DefenseChoice(name=choice.name, **params.model_dump(mode="json"))
    m.train = m.train.model_copy(update={"defense": normalized})


def _check_splits(spec: StudyFile, problems: Problems) -> None:
    """Split entries train from a recipe, and their parts' names are nobody else's."""
    for i, m in enumerate(spec.models):
        if m.splits is None:
            continue
        loc = ("models", i, "splits")
        if m.checkpoint is not None:
            problems.add(loc, "splits need a `train:` recipe; a checkpoint file is one model")
        parts = m.part_names()
        for j, other in enumerate(spec.models):
            if j != i and other.name in parts:
                message = f"the part {other.name!r} has the name of models[{j}]"
                problems.add(loc, f"{message}; rename one of the two models")


def _check_arch(spec: StudyFile, m: ModelEntry, loc: tuple, problems: Problems) -> None:
    if models.is_torchvision(m.arch):
        _check_torchvision(m, loc, problems)
    elif models.is_import_path(m.arch):
        _check_factory(spec, m, loc, problems)
    elif m.arch not in MODELS:
        problems.add(loc + ("arch",), MODELS.unknown_message(m.arch))
    elif getattr(MODELS.get(m.arch).obj, "part_of", None):
        part_of = MODELS.get(m.arch).obj.part_of
        problems.add(
            loc + ("arch",),
            f"{m.arch!r} is not a classifier: it is a trained part of {part_of}, which the "
            "study trains itself; give the model a classifier architecture (see `advgrid "
            "list models`)",
        )
    else:
        try:
            MODELS.params_of(m.arch, m.params)
        except ValidationError as exc:
            problems.add_pydantic(exc, loc + ("params",), MODELS.get(m.arch).params)


def _check_torchvision(m: ModelEntry, loc: tuple, problems: Problems) -> None:
    """One of torchvision's models (no import path: no ``allow_imports`` needed): a known
    name, and JSON params that leave weights and classes to advgrid."""
    try:
        models.check_torchvision(m.arch, m.params)
    except UnknownComponentError as exc:
        problems.add(loc + ("arch",), str(exc))
    except FactoryError as exc:
        problems.add(loc + ("params",), str(exc))
    for where, message in _not_json(m.params, ()):
        problems.add(loc + ("params", *where), message)


def _check_factory(spec: StudyFile, m: ModelEntry, loc: tuple, problems: Problems) -> None:
    """An import-path model: allowed by the study, importable, callable; JSON params."""
    if not spec.allow_imports:
        problems.add(
            loc + ("arch",),
            f"{m.arch!r} is a model factory import path, and importing it runs its code; "
            "add `allow_imports: true` to the study if you trust this code",
        )
        return
    try:
        models.factory(m.arch, allow_imports=True)
    except FactoryError as exc:
        problems.add(loc + ("arch",), str(exc))
    for where, message in _not_json(m.params, ()):
        problems.add(loc + ("params", *where), message)


def _not_json(value: Any, where: tuple) -> list[tuple[tuple, str]]:
    """Where ``value`` holds something other than JSON data (it enters the cell key as JSON).

    YAML can write dates, sets, binary and non-string keys, which JSON would drop or change.
    """
    if value is None or isinstance(value, str | bool | int):
        return []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(where, f"must be a finite number (got {value})")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _not_json(v, (*where, i))]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            return [(where, f"keys must be strings (got {bad[0]!r})")]
        return [p for k, v in value.items() for p in _not_json(v, (*where, k))]
    kind = type(value).__name__
    return [(where, f"must be a string, number, boolean, null, list or mapping (got a {kind})")]


def _check_checkpoint(
    study: Study, m: ModelEntry, base: Path, loc: tuple, problems: Problems
) -> None:
    path = Path(m.checkpoint or "")
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        problems.add(loc + ("checkpoint",), f"no such file: {path}")
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    study.checkpoints[m.name] = (str(path.resolve()), digest.hexdigest())


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"no {kind} named {name!r} in this study; {hint}known: {', '.join(known)}"

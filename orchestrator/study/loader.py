"""Study files: parsing and complete validation before anything is written.

A study file is YAML. Its structure is checked by pydantic (unknown keys are errors); then
every component name is resolved in its registry, every parameter validated by the
component's params model (each point of a parameter grid separately) and every cross
reference checked. All problems are collected and reported together, each with the line in
the file and the path of the offending value (``attacks[2].eps[0]: must be ≥ 0``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.study import (
    adaptive_rules,
    defense_rules,
    domain_rules,
    generator_files,
    model_rules,
)
from orchestrator.study.problems import Problems
from orchestrator.study.resolution import resolve
from orchestrator.study.schema import Component, Resolved, Study, StudyFile
from tasks import datasets
from tasks.attacks import ATTACKS
from tasks.datasets import DATASETS
from tasks.defenses import DEFENSES
from tasks.errors import TaskError
from tasks.train_defenses import TRAINING_DEFENSES


def load(path: str | Path) -> Study:
    """Read and completely validate the study file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the study file: {exc.strerror}"]) from exc
    return parse(text, str(path))


def parse(text: str, source: str = "<study>") -> Study:
    """Validate the study in ``text``; ``source`` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}YAML syntax error: {problem}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                "the study must be a YAML mapping with keys name, datasets, "
                "models, attacks (see examples/quickstart.yaml)"
            ],
        )
    problems = Problems(source, text)
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as exc:
        problems.add_pydantic(exc, (), StudyFile)
        raise ConfigError(source, problems.items) from exc
    study = Study(file=spec, path=source, text=text)
    notes = Problems(source, text)
    _check_components(study, problems, notes)
    described = not problems.items
    if described:
        _describe_datasets(study, problems, Path(source).parent)
    model_rules.check(study, problems, Path(source).parent)
    if described:
        domain_rules.check(study, problems)
    if described:  # the purifiers' and the recipes' generator files, read above
        generator_files.check_datasets(study, problems)
    if problems.items:
        raise ConfigError(source, problems.items)
    study.notes = notes.items
    return study


def _describe_datasets(study: Study, problems: Problems, base: Path) -> None:
    """Find every dataset's files (a relative ``root:`` is relative to the study file) and
    read what planning needs of them: sizes, official split, the digest of their bytes."""
    for i, d in enumerate(list(study.datasets)):
        root = d.params.get("root")
        if isinstance(root, str):
            path = Path(root).expanduser()
            d.params["root"] = str(path if path.is_absolute() else (base / path).resolve())
        try:
            study.data_info[d.label] = datasets.describe(
                d.name, datasets.params_of(d.name, d.params)
            )
        except TaskError as exc:
            where = ("datasets", i, "root") if root is not None else ("datasets", i, "name")
            problems.add(where, str(exc))


def _check_components(study: Study, problems: Problems, notes: Problems) -> None:
    spec = study.file
    placed: list[tuple[int, Resolved]] = []
    for i, entry in enumerate(spec.datasets):
        entry, home = domain_rules.take(entry, ("datasets", i), problems)
        resolved = resolve(DATASETS, entry, ("datasets", i), problems, grid=False)
        study.datasets += [dataclasses.replace(r, models_from=home) for r in resolved]
    for i, entry in enumerate(spec.defenses):
        if entry.name not in DEFENSES and entry.name in TRAINING_DEFENSES:
            problems.add(
                ("defenses", i, "name"),
                f"{entry.name!r} is a training defense; name it in a model's recipe, "
                f"`train: {{defense: {{name: {entry.name}}}}}`, instead",
            )
            continue
        values = entry.values
        if generator_files.take(study, values, ("defenses", i), Path(study.path).parent, problems):
            entry = Component.model_validate({"name": entry.name, **values})
        resolved = resolve(DEFENSES, entry, ("defenses", i), problems, grid=False, defense=True)
        placed += [(i, d) for d in resolved]
        study.defenses += resolved
    for i, entry in enumerate(spec.attacks):
        study.attacks += resolve(ATTACKS, entry, ("attacks", i), problems, grid=True)
    known = [(i, a.name) for i, a in enumerate(spec.attacks) if a.name in ATTACKS]
    adaptive_rules.check(placed, known, problems, notes)
    defense_rules.check(placed, [m.name for m in spec.models], problems)
    defense_rules.check_generator_attacks(placed, known, problems)
    defense_rules.check_models(placed, spec.models, problems)
    # a defense entry with an eot_samples list is several defended models under its label
    entries = {"datasets": [r.label for r in study.datasets]}
    entries["defenses"] = [label for _, label in dict.fromkeys((i, d.label) for i, d in placed)]
    for kind, labels in entries.items():
        for label in {x for x in labels if labels.count(x) > 1}:
            problems.add((kind,), f"{label!r} appears twice; give one entry a distinct `label:`")

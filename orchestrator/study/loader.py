"""Study files: parsing and complete validation before anything is written.

A study file is YAML. Its structure is checked by pydantic (unknown keys are errors); then
every component name is resolved in its registry, every parameter validated by the
component's params model (each point of a parameter grid separately) and every cross
reference checked. All problems are collected and reported together, each with the line in
the file and the path of the offending value (``attacks[2].eps[0]: must be ≥ 0``).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from orchestrator.errors import ConfigError
from orchestrator.study import adaptive_rules as adaptive
from orchestrator.study import defense_rules as spec_defenses
from orchestrator.study.yamlpos import Positions, format_path
from tasks import models
from tasks.attacks import ATTACKS
from tasks.datasets import DATASETS
from tasks.defenses import DEFENSES
from tasks.errors import FactoryError
from tasks.models import MODELS
from tasks.registry import Registry
from tasks.train_defenses import TRAINING_DEFENSES
from tasks.training import DefenseChoice, TrainParams

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """A registry name plus flat parameters (``{name: pgd, eps: 0.1, steps: [10, 40]}``)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainParams | None = None
    checkpoint: str | None = None
    datasets: list[str] | None = None
    # cross-training-set models: the recipe trained once per disjoint part of the training
    # indices, as ``<name>_A``, ``<name>_B``, … (Papernot et al.'s models A…E)
    splits: int | None = Field(None, ge=2, le=26)

    def part_names(self) -> list[str]:
        """The names this entry stands for: ``[name]``, or one per training-set part."""
        if self.splits is None:
            return [self.name]
        return [f"{self.name}_{chr(ord('A') + i)}" for i in range(self.splits)]


@dataclass(frozen=True)
class ModelPart:
    """One model of the study: an entry, or one training-set part of an entry with ``splits``.

    Attributes:
        name: the model's name in cells and reports (``cnn``, or ``cnn_B`` for part 1).
        entry: the study file's entry it comes from.
        index: which part of the training indices it trains on; None for the whole.
    """

    name: str
    entry: ModelEntry
    index: int | None = None


class Resources(_Strict):
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class Execution(_Strict):
    batch_size: int = Field(256, ge=1)
    max_inflight: int | None = Field(None, ge=1)
    max_attempts: int = Field(3, ge=1)
    lease_seconds: float = Field(120.0, gt=0)
    db_retry_seconds: float = Field(120.0, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    resources: dict[Literal["train", "attack", "transfer"], Resources] = Field(default_factory=dict)

    def resources_for(self, kind: str) -> Resources:
        return self.resources.get(kind, Resources())  # type: ignore[call-overload]


class Storage(_Strict):
    db: str | None = None
    store: str | None = None
    mlflow_uri: str | None = None


class StudyFile(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    # importing a model factory (``arch: package.module:factory``) runs its code: only when
    # the study says it trusts that code
    allow_imports: StrictBool = False
    datasets: list[Component] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)
    defenses: list[Component] = Field(default_factory=lambda: [Component(name="none")])
    attacks: list[Component] = Field(min_length=1)
    sources: Literal["all"] | list[str] = "all"
    targets: Literal["all"] | list[str] = "all"
    execution: Execution = Field(default_factory=Execution)
    storage: Storage = Field(default_factory=Storage)

    @field_validator("defenses")
    @classmethod
    def _nonempty(cls, v: list[Component]) -> list[Component]:
        if not v:
            raise ValueError("list at least one defense (`- name: none` for undefended models)")
        return v


@dataclass(frozen=True)
class Resolved:
    """A validated component: registry name, label and normalized params.

    A defense also says how attack cells adapt to it (:mod:`orchestrator.study.adaptive_rules`):
    ``adaptive`` (``none``, ``bpda``, ``eot``, ``bpda+eot``), ``eot_samples`` (set only
    with eot) and ``adaptive_given`` (whether the entry says ``adaptive:``; an explicit
    ``none`` allows gradient attacks through a non-differentiable defense, on purpose).
    ``models`` names the models the defense wraps (None: all of them;
    :func:`orchestrator.study.defense_rules.wraps`). None of them is a defense parameter.
    """

    name: str
    label: str
    params: dict[str, Any]
    adaptive: str = "none"
    eot_samples: int | None = None
    adaptive_given: bool = False
    models: tuple[str, ...] | None = None


@dataclass
class Study:
    """A fully validated study."""

    file: StudyFile
    path: str
    text: str
    datasets: list[Resolved] = field(default_factory=list)
    defenses: list[Resolved] = field(default_factory=list)
    attacks: list[Resolved] = field(default_factory=list)
    checkpoints: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (path, sha256)
    notes: list[str] = field(default_factory=list)  # worth saying, not errors: `advgrid plan`

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def shareable_text(self) -> str:
        """The study file with every URL password masked: what is stored and logged."""
        from storage import mask_secrets

        return mask_secrets(self.text)

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.shareable_text.encode()).hexdigest()

    def model_parts(self) -> list[ModelPart]:
        """Every model in file order, entries with ``splits`` expanded into their parts."""
        return [
            ModelPart(name, m, None if m.splits is None else i)
            for m in self.file.models
            for i, name in enumerate(m.part_names())
        ]

    def model_names(self) -> list[str]:
        """The names of :meth:`model_parts`: every model a cell can train, attack or target."""
        return [part.name for part in self.model_parts()]

    def selected(self, axis: Literal["sources", "targets"]) -> list[str]:
        """The model names ``sources:`` or ``targets:`` picks, a split entry's name meaning
        all its parts; in the order given, each once."""
        value = getattr(self.file, axis)
        if value == "all":
            return self.model_names()
        groups = {m.name: m.part_names() for m in self.file.models}
        return list(dict.fromkeys(n for name in value for n in groups.get(name, [name])))


_MESSAGES = {
    "greater_than_equal": "must be ≥ {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be ≤ {le}",
    "less_than": "must be < {lt}",
    "missing": "required key is missing",
}


def _message(err: Any, allowed: list[str]) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {key!r}; {hint}allowed keys: {', '.join(sorted(allowed))}"
    if kind in _MESSAGES:
        ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
        return _MESSAGES[kind].format(**ctx) + f" (got {err.get('input')!r})"
    return f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"


class _Problems:
    def __init__(self, source: str, text: str) -> None:
        self.source, self.positions = source, Positions(text)
        self.items: list[str] = []

    def add(self, loc: tuple, message: str) -> None:
        line = self.positions.line(loc)
        where = f"line {line}: " if line else ""
        item = f"{where}{format_path(loc)}: {message}"
        if item not in self.items:  # a bad value shared by several grid points: say it once
            self.items.append(item)

    def add_pydantic(self, exc: ValidationError, prefix: tuple, model: type[BaseModel]) -> None:
        for err in exc.errors():
            loc = prefix + tuple(err["loc"])
            owner = _model_at(model, tuple(err["loc"][:-1]))
            self.add(loc, _message(err, list(owner.model_fields) if owner else []))


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return None
        ann = info.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type)]
        candidates = [ann, *args]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return current if isinstance(current, type) else None


def _resolve(
    registry: Registry,
    entry: Component,
    loc: tuple,
    problems: _Problems,
    grid: bool,
    *,
    defense: bool = False,
) -> list[Resolved]:
    if entry.name not in registry:
        problems.add(loc + ("name",), registry.unknown_message(entry.name))
        return []
    model = registry.get(entry.name).params
    values = entry.values
    label = str(values.pop("label", entry.name))
    how = adaptive.take(values, loc, problems) if defense else ("none", None, False)
    wraps = spec_defenses.take_models(values, loc, problems) if defense else None
    takes_list = {n for n, f in model.model_fields.items() if _is_list(f.annotation)}
    axes = [k for k, v in values.items() if grid and isinstance(v, list) and k not in takes_list]
    out: list[Resolved] = []
    for combo in itertools.product(*(range(len(values[k])) for k in axes)):
        point = dict(values)
        point.update({k: values[k][i] for k, i in zip(axes, combo, strict=True)})
        try:
            params = model.model_validate(point).model_dump(mode="json")
        except ValidationError as exc:
            for err in exc.errors():
                key = err["loc"][0] if err["loc"] else None
                sub = (key, combo[axes.index(key)]) if key in axes else tuple(err["loc"][:1])
                problems.add(
                    loc + sub + tuple(err["loc"][1:]), _message(err, list(model.model_fields))
                )
            continue
        if not any(r.params == params for r in out):
            out.append(Resolved(entry.name, label, params, *how, models=wraps))
    return out


def _is_list(annotation: object) -> bool:
    """Whether a parameter itself takes a list (its list values are not a grid)."""
    if get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in get_args(annotation) if get_origin(annotation) is not Annotated)


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
    problems = _Problems(source, text)
    try:
        spec = StudyFile.model_validate(data)
    except ValidationError as exc:
        problems.add_pydantic(exc, (), StudyFile)
        raise ConfigError(source, problems.items) from exc
    study = Study(file=spec, path=source, text=text)
    notes = _Problems(source, text)
    _check_components(study, problems, notes)
    _check_models(study, problems, Path(source).parent)
    if problems.items:
        raise ConfigError(source, problems.items)
    study.notes = notes.items
    return study


def _check_components(study: Study, problems: _Problems, notes: _Problems) -> None:
    spec = study.file
    placed: list[tuple[int, Resolved]] = []
    for i, entry in enumerate(spec.datasets):
        study.datasets += _resolve(DATASETS, entry, ("datasets", i), problems, grid=False)
    for i, entry in enumerate(spec.defenses):
        if entry.name not in DEFENSES and entry.name in TRAINING_DEFENSES:
            problems.add(
                ("defenses", i, "name"),
                f"{entry.name!r} is a training defense; name it in a model's recipe, "
                f"`train: {{defense: {{name: {entry.name}}}}}`, instead",
            )
            continue
        resolved = _resolve(DEFENSES, entry, ("defenses", i), problems, grid=False, defense=True)
        placed += [(i, d) for d in resolved]
        study.defenses += resolved
    for i, entry in enumerate(spec.attacks):
        study.attacks += _resolve(ATTACKS, entry, ("attacks", i), problems, grid=True)
    known = [(i, a.name) for i, a in enumerate(spec.attacks) if a.name in ATTACKS]
    adaptive.check(placed, known, problems, notes)
    spec_defenses.check(placed, [m.name for m in spec.models], problems)
    spec_defenses.check_models(placed, spec.models, problems)
    for kind, items in (("datasets", study.datasets), ("defenses", study.defenses)):
        labels = [r.label for r in items]
        for label in {x for x in labels if labels.count(x) > 1}:
            problems.add((kind,), f"{label!r} appears twice; give one entry a distinct `label:`")


def _check_models(study: Study, problems: _Problems, base: Path) -> None:
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
        _check_train_defense(m, loc, problems)
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


def _check_train_defense(m: ModelEntry, loc: tuple, problems: _Problems) -> None:
    """A recipe's ``defense:`` names a training defense with valid parameters; it is stored
    normalized (defaults filled in), which is how it enters the train cell's key."""
    choice = m.train.defense if m.train is not None else None
    if m.train is None or choice is None:
        return
    where = loc + ("train", "defense")
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
        params = model.model_validate(choice.values)
    except ValidationError as exc:
        problems.add_pydantic(exc, where, model)
        return
    normalized = DefenseChoice(name=choice.name, **params.model_dump(mode="json"))
    m.train = m.train.model_copy(update={"defense": normalized})


def _check_splits(spec: StudyFile, problems: _Problems) -> None:
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


def _check_arch(spec: StudyFile, m: ModelEntry, loc: tuple, problems: _Problems) -> None:
    if models.is_import_path(m.arch):
        _check_factory(spec, m, loc, problems)
    elif m.arch not in MODELS:
        problems.add(loc + ("arch",), MODELS.unknown_message(m.arch))
    else:
        try:
            MODELS.params_of(m.arch, m.params)
        except ValidationError as exc:
            problems.add_pydantic(exc, loc + ("params",), MODELS.get(m.arch).params)


def _check_factory(spec: StudyFile, m: ModelEntry, loc: tuple, problems: _Problems) -> None:
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
    study: Study, m: ModelEntry, base: Path, loc: tuple, problems: _Problems
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

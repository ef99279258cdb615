"""The study file's types: its YAML structure as pydantic models (unknown keys are errors)
and the validated :class:`Study` that :func:`orchestrator.study.loader.parse` returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from tasks.cells import CELL_KINDS
from tasks.datasets import Info
from tasks.training import TrainParams

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


class Normalization(_Strict):
    """Per-channel constants a checkpoint's network expects its inputs normalized by."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("every std must be > 0")
        return value


class ModelEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainParams | None = None
    checkpoint: str | None = None
    # a checkpoint's input normalization: the dataset's statistics (the default, as a model
    # trained here), none (`inside`: the network takes [0, 1] inputs or normalizes itself,
    # as RobustBench's do), or the constants its code applies
    normalization: Literal["dataset", "inside"] | Normalization | None = None
    # a checkpoint's clean accuracy on the evaluation slice, as published: attack cells on it
    # fail before attacking when it is further off than the tolerance (a wrong file or
    # normalization)
    expected_clean_accuracy: float | None = Field(None, ge=0, le=1)
    accuracy_tolerance: float = Field(0.02, ge=0, le=1)
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
    # DataLoader processes per train cell gathering minibatches (worth it for images decoded
    # from files, such as an ImageFolder); 0: the cell's own process
    data_workers: int = Field(0, ge=0, le=64)
    # a train cell saves its whole state (weights, optimizer, random streams) after every
    # this many epochs, an attack cell its finished batches after every this many batches,
    # and both when this many minutes have passed since their last save, so that their next
    # run continues from there (tasks.cells.saved_state, attack_state); neither enters a key
    checkpoint_every: int | None = Field(None, ge=1)
    checkpoint_minutes: float | None = Field(10.0, gt=0)
    resources: dict[str, Resources] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _known_kinds(cls, value: dict[str, Resources]) -> dict[str, Resources]:
        unknown = [k for k in value if k not in CELL_KINDS]
        if unknown:
            kinds = ", ".join(f"'{k}'" for k in CELL_KINDS)
            raise ValueError(f"unknown cell kind {unknown[0]!r}; the kinds are {kinds}")
        return value

    def resources_for(self, kind: str) -> Resources:
        return self.resources.get(kind, Resources())


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
    ``models_from`` (datasets only) names the dataset whose models a dataset evaluates out
    of domain (:mod:`orchestrator.study.domain_rules`); None: models trained on it.
    """

    name: str
    label: str
    params: dict[str, Any]
    adaptive: str = "none"
    eot_samples: int | None = None
    adaptive_given: bool = False
    models: tuple[str, ...] | None = None
    models_from: str | None = None


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
    # dataset label -> what planning reads of it (sizes, official split, digest of its files)
    data_info: dict[str, Info] = field(default_factory=dict)
    # sha256 -> orchestrator.study.generator_files.GeneratorFile: generators read from files
    generator_files: dict[str, Any] = field(default_factory=dict)
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

    def home(self, dataset: Resolved) -> Resolved:
        """The dataset whose models, defenses' artifacts and checkpoints' statistics a cell
        on ``dataset`` uses: itself, or the one its ``models_from:`` names (out of domain)."""
        if dataset.models_from is None:
            return dataset
        return next(d for d in self.datasets if d.label == dataset.models_from)

    def home_datasets(self) -> list[Resolved]:
        """The datasets models train on: all but those evaluated out of domain."""
        return [d for d in self.datasets if d.models_from is None]

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

"""Typed cell specs: the normalized spec of each kind of cell, as the planner writes it.

A spec is the data a cell's key hashes (:func:`orchestrator.study.plan.cell_key`), so these
models describe it exactly and change nothing about it: every model is frozen with
``extra="forbid"``, and a key the planner writes only when it is set (``train_split``,
``precision``, a checkpoint file's hash, ``defense.adaptive``, ``defense.eot_samples``) is
absent from :meth:`SpecModel.dump` unless it was given. ``dump(parse(d)) == d`` for every
planned spec ``d``; ``tests/orchestrator/test_cell_specs.py`` checks it on the example
studies.

A component's ``params`` stay plain JSON data here: the component's own params model in its
registry validates them on the worker, where the name is resolved.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag, TypeAdapter, model_validator

from tasks import defenses

Adaptive = Literal["none", "bpda", "eot", "bpda+eot"]  # tasks.defenses.adaptive.ADAPTIVE
Precision = Literal["fp32", "bf16"]


class SpecModel(BaseModel):
    """A frozen part of a cell spec that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def dump(self) -> dict[str, Any]:
        """The plain spec: the keys it was given, none of the defaults it was not."""
        return self.model_dump(mode="json", exclude_unset=True)


class KindSpec(SpecModel):
    """The base of a spec model for a kind beyond the three built-in ones: a ``kind`` and the
    ``precision`` the planner adds to every spec of a study that runs in bf16."""

    kind: str
    precision: Precision = "fp32"


class Component(SpecModel):
    """A registry component with the label the study gave it (a dataset, a defense)."""

    name: str
    label: str
    params: dict[str, Any]


class DatasetRef(Component):
    """A cell's dataset: the component, and for a dataset read from files the SHA-256 over
    its files (:func:`tasks.datasets.files.digest`); absent for generated data."""

    digest: str | None = None


class Constants(SpecModel):
    """Per-channel normalization constants."""

    mean: list[float]
    std: list[float]


# how a checkpoint file's network normalizes its inputs, when not by the dataset's statistics
Normalization = Literal["inside"] | Constants


class ExpectedAccuracy(SpecModel):
    """A checkpoint's published clean accuracy on the evaluation slice and how far off it may
    be before its attack cells fail (a wrong file or normalization)."""

    accuracy: float
    tolerance: float


class SourceDefense(Component):
    """An attack cell's defense, with how the attack adapts to it when it does.

    Attributes:
        adaptive: ``bpda``, ``eot`` or ``bpda+eot``; absent (``none``) when the attack
            does not adapt, so non-adaptive keys stay as they were.
        eot_samples: Draws per EOT gradient; absent unless the study set it.
    """

    adaptive: Adaptive = "none"
    eot_samples: int | None = None


class AttackRef(SpecModel):
    """An attack configuration: its registry name and normalized params (no label)."""

    name: str
    params: dict[str, Any]


class ModelRef(SpecModel):
    """A model: its name in the study, its architecture and normalized params."""

    name: str
    arch: str
    params: dict[str, Any]


class TrainSplit(SpecModel):
    """Part ``index`` of ``of`` of the training indices (a model entry with ``splits``)."""

    index: int
    of: int


class TrainSpec(SpecModel):
    """A train cell that fits a study's model on its dataset.

    Attributes:
        train: The recipe, :class:`tasks.training.TrainParams` dumped (``defense`` only
            when set).
        train_split: The part of the training indices it fits; absent for whole-part models.
        precision: ``bf16`` when the study asks; absent for ``fp32``.
    """

    kind: Literal["train"]
    dataset: DatasetRef
    model: ModelRef
    train: dict[str, Any]
    train_split: TrainSplit | None = None
    precision: Precision = "fp32"


class NamedRef(SpecModel):
    """A component named without params."""

    name: str


class TrainedFor(SpecModel):
    """The ``train`` head of a defense's own model: which defense it is trained for."""

    defense: NamedRef


class DefenseModelSpec(SpecModel):
    """A train cell that fits a defense's own model, such as ``autoencoder_purify``'s
    autoencoder (:meth:`tasks.defenses.Requirement.train_spec` writes it).

    ``model`` and ``train`` are what results rows and checkpoint listings show for it. The
    recipe sits under the key of its *role*, which only the defense names, so that one key
    is the only one this model takes beyond its fields: it must be a role the defense in
    ``train.defense`` declares, and it is what tells this spec from a :class:`TrainSpec`.
    An artifact fit for one classifier (``mlvgm_purify``'s learned α) names it in
    ``for_model``, with the hash of its checkpoint file when it is loaded from one (a
    trained one enters the key as a dependency); both are absent for the others.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["train"]
    dataset: DatasetRef
    model: ModelRef
    train: TrainedFor
    for_model: str | None = None
    for_model_checkpoint_sha256: str | None = None
    precision: Precision = "fp32"

    @model_validator(mode="after")
    def _one_role(self) -> DefenseModelSpec:
        extra = dict(self.__pydantic_extra__ or {})
        found = defenses.requirement_of(self.model_dump(mode="json"))
        role = found[0] if found else None
        if role is None or set(extra) != {role} or not isinstance(extra[role], dict):
            raise ValueError(
                f"a defense's model takes one recipe, under a role of {self.train.defense.name!r}"
                f" (got extra keys {sorted(extra)})"
            )
        return self

    @property
    def role(self) -> str:
        """The input role of the cells that use this model (the recipe's key)."""
        return next(iter(self.__pydantic_extra__ or {}))


class _Evaluated(SpecModel):
    """What attack and transfer cells share: the adversarial examples' origin."""

    dataset: DatasetRef
    eval_hash: str
    source: str
    defense: SourceDefense
    attack: AttackRef
    source_checkpoint_sha256: str | None = None
    source_normalization: Normalization | None = None
    source_expected_accuracy: ExpectedAccuracy | None = None
    precision: Precision = "fp32"


class AttackSpec(_Evaluated):
    """An attack cell: ``attack`` on ``source`` behind ``defense`` over the eval slice.

    Attributes:
        eval_hash: The hash of the evaluation slice's sample indices.
        source_checkpoint_sha256: The SHA-256 of the source's checkpoint file; absent for
            a source trained by the study.
        source_normalization: How the checkpoint's network normalizes its inputs; absent
            when by the dataset's statistics (the default).
        source_expected_accuracy: The checkpoint's published clean accuracy, checked before
            the attack; absent unless the study gave it.
    """

    kind: Literal["attack"]


class TransferSpec(_Evaluated):
    """A transfer cell: an attack cell's examples evaluated on ``target`` behind
    ``target_defense`` (which never says how an attacker adapted).

    Attributes:
        target_checkpoint_sha256: The SHA-256 of the target's checkpoint file; absent for
            a target trained by the study.
        target_normalization: As ``source_normalization``, for the target.
    """

    kind: Literal["transfer"]
    target: str
    target_defense: Component
    target_checkpoint_sha256: str | None = None
    target_normalization: Normalization | None = None


def _tag(value: Any) -> str | None:
    """Which model a spec is: its ``kind``, except that a train spec holding the recipe of
    a role its ``train.defense`` declares is a defense's own model."""
    if isinstance(value, dict):
        kind, own = value.get("kind"), defenses.requirement_of(value) is not None
    else:
        kind, own = getattr(value, "kind", None), isinstance(value, DefenseModelSpec)
    return "defense_model" if kind == "train" and own else kind


CellSpec = Annotated[
    Annotated[TrainSpec, Tag("train")]
    | Annotated[DefenseModelSpec, Tag("defense_model")]
    | Annotated[AttackSpec, Tag("attack")]
    | Annotated[TransferSpec, Tag("transfer")],
    Discriminator(_tag),
]
"""Any cell spec, told apart by :func:`_tag`."""

_ADAPTER: TypeAdapter[CellSpec] = TypeAdapter(CellSpec)


def parse(spec: dict[str, Any]) -> TrainSpec | DefenseModelSpec | AttackSpec | TransferSpec:
    """The typed model of a plain spec; raises :class:`pydantic.ValidationError`."""
    return _ADAPTER.validate_python(spec)

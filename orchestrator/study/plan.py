"""Grid expansion: a validated study becomes cells with content keys.

A cell key is the SHA-256 of the canonical JSON (sorted keys, no whitespace) of
``{"schema": SCHEMA_VERSION, "spec": <normalized spec>, "deps": <sorted dependency keys>}``.
Specs hold normalized params (defaults filled in), the evaluation slice by the hash of its
sample indices, a checkpoint file by its content hash and a dataset read from files by the
digest of its files (its ``root`` is left out of the key: where the files are does not change
what they hold), so the same work always gets the same key and extending a study adds only
new keys. Labels (model and dataset names) are part
of the spec: renaming a model is a new model. A model factory named by import path enters by
that path and its params as written; ``allow_imports`` does not enter keys (it permits
work, it does not change results). A model entry with ``splits: K`` is K models (``cnn_A``,
``cnn_B``, …), each with its own train cell whose spec says which part of the training
indices it fits (``"train_split": {"index": i, "of": K}``); other train specs have no such key.
How an attack adapts to a defense (``adaptive``, ``eot_samples``) is part of the attack cell's
``defense`` only when it does adapt, so non-adaptive keys are as they were; a transfer cell's
``target_defense`` never carries it (a forward pass does not depend on how an attacker adapted).
Every attack cell on an adapted defense has a non-adaptive twin, the same attack on the same
defended model without BPDA/EOT (for gradient attacks, and for any attack under EOT): its
key is the defense without ``adaptive``, it has no transfer cells, and ``advgrid defenses``
shows its number beside the adaptive one (:mod:`storage.defense_queries`).
A dataset with ``models_from:`` trains nothing: its attack and transfer cells take the named
dataset's checkpoints and defense artifacts (:mod:`orchestrator.study.domain_rules`), and a
checkpoint file's published accuracy is not checked there.
A defense entry with ``models:`` wraps only those models: attack cells on them as sources,
transfer cells onto them as targets. A defense whose class ``requires`` a trained artifact
(``autoencoder_purify``) adds, per dataset and recipe, the train cell that produces it, and
every attack and transfer cell that builds the defense gets that artifact as an input of the
role's name (a dependency); keys of other cells are unchanged. An artifact fit per model
(``mlvgm_purify``'s learned α) gets one train cell per wrapped model, whose inputs are that
model's checkpoint and the defense's other artifacts; a generator read from a file is a
``("file", "sha256:…")`` input instead of a train cell (its hash is in the params, so in
the keys).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.study import adaptive_rules, defense_rules
from orchestrator.study.schema import Resolved, Study
from tasks import datasets
from tasks.cells import CELL_KINDS, SpecModel
from tasks.train_defenses import TRAINING_DEFENSES

SCHEMA_VERSION = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cell_key(spec: dict, deps: list[str] | tuple[str, ...]) -> str:
    payload = {"schema": SCHEMA_VERSION, "spec": identity(spec), "deps": sorted(deps)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def identity(spec: dict) -> dict:
    """What of ``spec`` a key hashes: all of it but a dataset's ``root``, which says where
    its files are on this machine, not what they hold (the ``digest`` beside it does)."""
    dataset = spec.get("dataset")
    if not isinstance(dataset, dict) or "root" not in dataset.get("params", {}):
        return spec
    params = {k: v for k, v in dataset["params"].items() if k != "root"}
    return {**spec, "dataset": {**dataset, "params": params}}


@dataclass(frozen=True)
class PlannedCell:
    """One unit of work. ``inputs`` maps an input role to where it comes from:
    ``("cell", key, role)`` — an artifact of another cell — or ``("file", model_name)``.
    ``typed`` is ``spec`` as its kind's model (the driver sends it without parsing again)."""

    key: str
    kind: str
    spec: dict
    depends_on: tuple[str, ...]
    inputs: dict[str, tuple[str, ...]]
    typed: SpecModel = field(compare=False, repr=False)


@dataclass
class Plan:
    study: Study
    cells: list[PlannedCell] = field(default_factory=list)
    _keys: dict[str, PlannedCell] = field(default_factory=dict, repr=False)

    def add(
        self, kind: str, spec: dict, inputs: dict[str, tuple[str, ...]], *, once: bool = False
    ) -> PlannedCell:
        """Add a cell; with ``once``, return the planned cell of the same key if there is one
        (a cell several others share, such as a defense's autoencoder).

        The spec is checked against its kind's typed model (:mod:`tasks.cells.specs`) and
        what enters the key is that model's dump, so a spec no worker could read is a bug
        here, at planning, not in every cell of a run.
        """
        precision = self.study.file.execution.precision
        if precision != "fp32":  # it changes the numbers, so it is part of the key
            spec = {**spec, "precision": precision}
        typed = CELL_KINDS[kind].parse(spec)
        spec = typed.dump()
        deps = tuple(sorted({src[1] for src in inputs.values() if src[0] == "cell"}))
        cell = PlannedCell(cell_key(spec, deps), kind, spec, deps, inputs, typed)
        if once and cell.key in self._keys:
            return self._keys[cell.key]
        self.cells.append(cell)
        self._keys.setdefault(cell.key, cell)
        return cell

    def by_key(self) -> dict[str, PlannedCell]:
        return {c.key: c for c in self.cells}

    def counts(self) -> dict[str, int]:
        return dict(Counter(c.kind for c in self.cells))


def _component(r: Resolved) -> dict:
    return {"name": r.name, "label": r.label, "params": r.params}


def _source_defense(d: Resolved) -> dict:
    """An attack cell's defense: the component, plus how the attack adapts to it when it
    does (absent otherwise, so the keys of non-adaptive cells stay as they were)."""
    out = _component(d)
    if d.adaptive != "none":
        out["adaptive"] = d.adaptive
    if d.eot_samples is not None:
        out["eot_samples"] = d.eot_samples
    return out


def _eval_hash(study: Study, d: Resolved) -> str:
    """The evaluation slice's hash, from the dataset's sizes (no image is read)."""
    info = study.data_info[d.label]
    return datasets.split(info.size, datasets.params_of(d.name, d.params), info.n_train).eval_hash


def _dataset(study: Study, d: Resolved) -> dict:
    """A cell spec's dataset: the component, and the digest of its files when it is read
    from files (absent otherwise, so the keys of generated datasets stay as they were)."""
    out = _component(d)
    digest = study.data_info[d.label].digest
    if digest is not None:
        out["digest"] = digest
    return out


def expand(study: Study) -> Plan:
    """All cells of ``study``: train, then attack, then transfer, in a stable order; then
    the cells of any other registered kind, which its ``plan`` hook adds
    (:class:`tasks.cells.CellKindInfo`)."""
    plan = Plan(study)
    sources, targets = study.selected("sources"), study.selected("targets")
    trained: dict[str, dict[str, tuple[str, ...]]] = {}  # home dataset label -> its refs
    for d in study.datasets:
        home = study.home(d)  # d itself, or the dataset whose models d evaluates
        ds, ds_home = _dataset(study, d), _dataset(study, home)
        if home.label not in trained:
            trained[home.label] = _model_refs(plan, study, ds_home, home.label)
        refs = trained[home.label]
        ds_eval = {"dataset": ds, "eval_hash": _eval_hash(study, d)}
        check = home is d  # a checkpoint's published accuracy is on its own data
        placed = [  # (source, defense index): the defended models attacked here
            (src, i)
            for src in sources
            if src in refs
            for i, defense in enumerate(study.defenses)
            if defense_rules.wraps(study, defense, src)
        ]
        wrapped = [*sources, *targets]  # a defense no cell here builds needs no artifact
        used = {
            i
            for i, d in enumerate(study.defenses)
            if placed and any(m in refs and defense_rules.wraps(study, d, m) for m in wrapped)
        }
        extra = _Artifacts(plan, ds_home, refs, used)  # a defense's parts are home-trained
        for i in sorted(used):  # the artifacts' train cells first, in the defenses' order
            for m in dict.fromkeys(wrapped):
                if m in refs and defense_rules.wraps(study, study.defenses[i], m):
                    extra(i, m)
        attacks = [
            _attack(
                plan,
                ds_eval,
                src,
                {"checkpoint": refs[src], **extra(i, src)},
                defense,
                attack,
                check=check,
            )
            for src, i in placed
            for defense in [study.defenses[i]]
            for attack in study.attacks
            if defense_rules.applies(defense, attack)
        ]
        _transfers(plan, attacks, [t for t in targets if t in refs], refs, extra)
        for src, i in placed:
            defense = study.defenses[i]
            for attack in study.attacks:
                if _has_twin(defense, attack) and defense_rules.applies(defense, attack):
                    inputs = {"checkpoint": refs[src], **extra(i, src)}
                    twin = _unadapted(defense)
                    _attack(plan, ds_eval, src, inputs, twin, attack, once=True, check=check)
    for kind in CELL_KINDS.values():  # kinds beyond the three plan their own cells
        if kind.plan is not None:
            kind.plan(plan)
    return plan


def _has_twin(defense: Resolved, attack: Resolved) -> bool:
    """Whether an attack cell on an adapted defense gets a non-adaptive twin: for gradient
    attacks (which BPDA and EOT change), and for any attack under EOT (which changes what
    a gradient-free attack sees of a randomized defense)."""
    if defense.adaptive == "none" or not adaptive_rules.sees_defense(attack.name):
        return False
    return "eot" in defense.adaptive or adaptive_rules.is_gradient(attack.name)


def _unadapted(defense: Resolved) -> Resolved:
    return dataclasses.replace(defense, adaptive="none", eot_samples=None, adaptive_given=True)


def _transfers(
    plan: Plan,
    attacks: list[PlannedCell],
    targets: list[str],
    refs: dict[str, tuple[str, ...]],
    extra: _Artifacts,
) -> None:
    """A transfer cell per attack cell × target × defense that wraps the target."""
    study = plan.study
    for cell, tgt, (j, tdef) in (
        (a, t, (j, td))
        for a in attacks
        for t in targets
        for j, td in enumerate(study.defenses)
        if defense_rules.wraps(study, td, t)
    ):
        tspec = {**cell.spec, "kind": "transfer", "target": tgt, "target_defense": _component(tdef)}
        if refs[tgt][0] == "file":
            tspec.update(checkpoint_fields(study, tgt, "target", check=False))
        inputs = {"adversarial": ("cell", cell.key, "adversarial"), "checkpoint": refs[tgt]}
        # once: the defended models of an eot_samples list are one target (a forward pass)
        plan.add("transfer", tspec, {**inputs, **extra(j, tgt)}, once=True)


class _Artifacts:
    """The extra inputs of a cell that builds defense ``i`` of the study around model ``m``:
    one per role its class ``requires`` (and its params need), each the artifact of the
    train cell its requirement specs, added on first use: once per dataset and recipe, or
    once per model for a per-model requirement (whose cell takes the model's checkpoint and
    the defense's other artifacts). Empty for defenses that need nothing and for the defenses
    no cell here builds (not in ``used``)."""

    def __init__(
        self, plan: Plan, ds: dict, refs: dict[str, tuple[str, ...]], used: set[int]
    ) -> None:
        self.plan, self.ds, self.refs, self.used = plan, ds, refs, used
        self._made: dict[tuple[int, str], dict[str, tuple[str, ...]]] = {}

    def __call__(self, i: int, model: str) -> dict[str, tuple[str, ...]]:
        if i not in self.used:
            return {}
        if (i, model) not in self._made:
            self._made[i, model] = self._inputs(i, model)
        return self._made[i, model]

    def _inputs(self, i: int, model: str) -> dict[str, tuple[str, ...]]:
        defense = self.plan.study.defenses[i]
        needs = {
            role: r
            for role, r in defense_rules.requires(defense.name).items()
            if r.needed(defense.params)
        }
        inputs: dict[str, tuple[str, ...]] = {}
        for role, needed in needs.items():  # validation gives each of them a recipe
            if needed.per_model:
                continue
            named = _file_input(needed, defense.params)
            if named is not None:
                inputs[role] = named
                continue
            train = needed.train_spec(role, self.ds, defense.name, defense.params)
            inputs[role] = ("cell", self.plan.add("train", train, {}, once=True).key, "checkpoint")
        shared = dict(inputs)
        for role, needed in needs.items():
            if not needed.per_model:
                continue
            ref = self.refs[model]
            train = needed.train_spec(role, self.ds, defense.name, defense.params, model)
            if ref[0] == "file":
                train["for_model_checkpoint_sha256"] = ref[2]
            cell = self.plan.add("train", train, {"checkpoint": ref, **shared}, once=True)
            inputs[role] = ("cell", cell.key, "checkpoint")
        return inputs


def _file_input(needed: Any, params: dict) -> tuple[str, ...] | None:
    """The input of a requirement whose params name a file instead of a recipe (a generator
    read from a file: ``sha256:<hex>`` once the study is loaded); None: a cell trains it."""
    named = needed.checkpoint(params)
    return None if named is None else ("file", named, named.removeprefix("sha256:"))


def _training_artifacts(plan: Plan, ds: dict, choice: Any) -> dict[str, tuple[str, ...]]:
    """The inputs of a train cell whose training defense ``requires`` trained artifacts
    (``gat``'s generator): one per role, each the artifact of the train cell its
    requirement specs (added here once per dataset and recipe, shared with the purifiers of
    the same recipe); empty for plain training and for the other defenses."""
    if choice is None:
        return {}
    requires = getattr(TRAINING_DEFENSES.get(choice.name).obj, "requires", {})
    inputs: dict[str, tuple[str, ...]] = {}
    for role, needed in requires.items():
        named = _file_input(needed, choice.values)
        if named is not None:
            inputs[role] = named
            continue
        train = needed.train_spec(role, ds, choice.name, choice.values)
        cell = plan.add("train", train, {}, once=True)
        inputs[role] = ("cell", cell.key, "checkpoint")
    return inputs


def _model_refs(plan: Plan, study: Study, ds: dict, label: str) -> dict[str, tuple[str, ...]]:
    """Where each model's checkpoint on this dataset comes from; adds the train cells."""
    refs: dict[str, tuple[str, ...]] = {}
    for part in study.model_parts():
        m = part.entry
        if m.datasets is not None and label not in m.datasets:
            continue
        model = {"name": part.name, "arch": m.arch, "params": _arch_params(m.arch, m.params)}
        if m.train is not None:
            spec = {
                "kind": "train",
                "dataset": ds,
                "model": model,
                "train": m.train.model_dump(mode="json"),
            }
            if part.index is not None:  # absent otherwise, so existing keys stay as they were
                spec["train_split"] = {"index": part.index, "of": m.splits}
            inputs = _training_artifacts(plan, ds, m.train.defense)
            refs[part.name] = ("cell", plan.add("train", spec, inputs).key, "checkpoint")
        else:
            refs[part.name] = ("file", m.name, study.checkpoints[m.name][1])
    return refs


def _arch_params(arch: str, params: dict) -> dict:
    from tasks import models

    return models.dump_params(models.params_of(arch, params))


def _attack(
    plan: Plan,
    ds_eval: dict,
    src: str,
    inputs: dict[str, tuple[str, ...]],
    defense: Resolved,
    attack: Resolved,
    *,
    once: bool = False,
    check: bool = True,
) -> PlannedCell:
    ref = inputs["checkpoint"]
    spec = {
        "kind": "attack",
        **ds_eval,
        "source": src,
        "defense": _source_defense(defense),
        "attack": {"name": attack.name, "params": attack.params},
    }
    if ref[0] == "file":
        spec.update(checkpoint_fields(plan.study, src, "source", check=check))
    return plan.add("attack", spec, inputs, once=once)


def checkpoint_fields(study: Study, name: str, role: str, *, check: bool = True) -> dict:
    """What a cell spec says of model ``name`` loaded from a checkpoint file, as ``role``
    (``source``, ``target``): the file's hash; its normalization unless it is the dataset's
    (the default, so the keys of existing studies stay as they were); with ``check``, the
    clean accuracy it must show."""
    entry = next(m for m in study.file.models if m.name == name)
    out: dict[str, Any] = {f"{role}_checkpoint_sha256": study.checkpoints[name][1]}
    norm = entry.normalization
    if norm is not None and norm != "dataset":
        out[f"{role}_normalization"] = norm if isinstance(norm, str) else norm.model_dump()
    if check and entry.expected_clean_accuracy is not None:
        out[f"{role}_expected_accuracy"] = {
            "accuracy": entry.expected_clean_accuracy,
            "tolerance": entry.accuracy_tolerance,
        }
    return out

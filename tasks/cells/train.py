"""Train cells: fit a study's model, or a defense's own model, and store the checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from storage import ArtifactStore
from tasks import datasets, defenses, models, progress, resume, train_defenses, training
from tasks.cells import saved_state
from tasks.cells.payload import CellOutput, CellPayload
from tasks.cells.progress_files import drop_progress, progress_sink
from tasks.cells.specs import DefenseModelSpec, TrainSpec
from tasks.cells.worker import (
    CODE_VERSION,
    allow_imports_of,
    device,
    load_dataset,
    load_model,
    memory_layout,
    worker_name,
)

# what ``advgrid results`` shows of a train cell
SUMMARY_METRICS = ("train_accuracy", "eval_accuracy")
SPECS = (TrainSpec, DefenseModelSpec)


def row_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """A results row's params (architecture, its params and the recipe) and defense (a
    training-time defense, adversarial training, is the train cell's defense)."""
    model = spec["model"]
    params = {"arch": model["arch"], **model["params"], **spec["train"]}
    if "for_model" in spec:  # a defense's artifact fit for one classifier
        params["for_model"] = spec["for_model"]
    return {"params": params, "defense": (spec["train"].get("defense") or {}).get("name")}


def _train_indices(spec: TrainSpec, split: datasets.Split) -> torch.Tensor:
    """The training part, or the one part of it the spec's ``train_split`` names."""
    part = spec.train_split
    if part is None:
        return split.train
    params = datasets.params_of(spec.dataset.name, spec.dataset.params)
    return datasets.train_part(split, part.index, part.of, seed=params.split_seed)


def run_train(cell: CellPayload, store: ArtifactStore) -> CellOutput:
    """Fit one model on the training part of its dataset (or on the part of it that the
    spec's ``train_split`` names); store the checkpoint."""
    payload = cell.wire()
    spec = payload["spec"]
    artifact = defenses.requirement_of(spec)
    if artifact is not None:
        return CellOutput(**_train_artifact(payload, store, *artifact))
    return _fit_model(cell, payload, store)


def _fit_model(cell: CellPayload, payload: dict, store: ArtifactStore) -> CellOutput:
    """:func:`run_train` for a study's model (``payload`` is ``cell`` as plain data)."""
    spec = cell.spec
    assert isinstance(spec, TrainSpec), spec  # the payload's kind chose this runner
    data, split = load_dataset(spec.dataset.dump())
    train = _train_indices(spec, split)
    recipe, arch = training.TrainParams(**spec.train), spec.model.arch
    net = models.build(
        arch,
        models.params_of(arch, spec.model.params),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        seed=recipe.seed,
        allow_imports=allow_imports_of(payload),
    )
    dev = device()
    net = memory_layout(net.to(dev), payload)
    artifacts = {role: load_model(payload, role, store, dev) for role in _requires(recipe)}
    expected = {
        "kind": resume.KIND,
        "cell_key": cell.key,
        "code_version": CODE_VERSION,
        "device": dev.type,
        "epochs": recipe.epochs,
    }
    start, notes = saved_state.load(store, cell.key, expected, net)
    history: list[dict[str, float]] = []
    checkpoints = None
    if cell.checkpoint_every is not None or cell.checkpoint_minutes is not None:
        checkpoints = saved_state.StoreCheckpoints(
            store,
            cell.key,
            expected,
            every=cell.checkpoint_every,
            minutes=cell.checkpoint_minutes,
            worker=worker_name(),
        )
    metrics = training.fit(
        net,
        data.x,
        data.y,
        recipe,
        indices=train,
        workers=cell.data_workers,
        artifacts=artifacts,
        checkpoints=checkpoints,
        start=start,
        report=progress_sink(store, cell.key, "train", spec.model.name),
        history=history,
        holdout=(data.x[split.eval], data.y[split.eval]),
    )
    batch_size = 1024 if cell.batch_size is None else cell.batch_size
    pred = training.predict(net, data.x[split.eval], batch_size)
    metrics["eval_accuracy"] = float((pred.cpu() == data.y[split.eval]).float().mean())
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    record = store.put(state, {**_checkpoint_meta(spec.dump(), data), "history": history})
    if start is not None or (checkpoints is not None and checkpoints.saved):
        store.drop_partial(cell.key)  # done: no attempt continues from it again
    drop_progress(store, cell.key)
    return CellOutput(
        metrics=metrics, artifacts={"checkpoint": dataclasses.asdict(record)}, notes=tuple(notes)
    )


def _requires(recipe: training.TrainParams) -> tuple[str, ...]:
    """The roles of the trained artifacts the recipe's training defense takes (``gat``'s
    generator); none for plain training and the other defenses."""
    if recipe.defense is None:
        return ()
    entry = train_defenses.TRAINING_DEFENSES.get(recipe.defense.name)
    return tuple(getattr(entry.obj, "requires", ()))


def _train_artifact(
    payload: dict, store: ArtifactStore, role: str, requirement: defenses.Requirement
) -> dict:
    """Fit a defense's trained artifact (the input ``role`` of the cells that build the
    defense) by its requirement's recipe; store it like a classifier's checkpoint, so that
    :func:`~tasks.cells.worker.load_model` loads it."""
    spec, dev = payload["spec"], device()
    data, split = load_dataset(spec["dataset"])
    artifacts = {}
    if requirement.per_model:  # the classifier it is fit for, and the defense's other parts
        artifacts = {r: load_model(payload, r, store, dev) for r in payload["inputs"]}
    what = f"{role} of {spec['train']['defense']['name']}"
    with progress.reporting(progress_sink(store, payload["key"], "train", what)):
        net, metrics = requirement.fit(spec[role], data, split, dev, artifacts)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    record = store.put(state, _checkpoint_meta(spec, data, role))
    drop_progress(store, payload["key"])
    return {"metrics": metrics, "artifacts": {"checkpoint": dataclasses.asdict(record)}}


def _checkpoint_meta(spec: dict, data: datasets.Data, role: str | None = None) -> dict:
    """What a trained checkpoint records: enough to rebuild the model and trace its data;
    for a defense's artifact, also the recipe under its ``role``."""
    model_spec = spec["model"]
    meta = {
        "kind": "checkpoint",
        "arch": model_spec["arch"],
        "params": model_spec["params"],
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "mean": list(data.mean),
        "std": list(data.std),
        "model": model_spec["name"],
        "dataset": spec["dataset"],
        "train": spec["train"],
        "code_version": CODE_VERSION,
    }
    if "train_split" in spec:  # only then: other checkpoints keep their meta and digests
        meta["train_split"] = spec["train_split"]
    if role is not None:  # a defense's artifact: its recipe (and the classifier it is for)
        meta[role] = spec[role]
        if "for_model" in spec:
            meta["for_model"] = spec["for_model"]
    return meta

"""``run_cell(payload) -> result``: what a worker does for one cell.

The payload is plain data: the cell's normalized ``spec``, its ``kind``, the digests of the
artifacts it reads (``inputs``), the artifact-store root, the batch size and
``allow_imports`` (whether the study trusts model factories named by import path: without
it, such a model is refused before its module is imported). Names are resolved here, on
the worker. The result is small: metrics and the records of the artifacts
the cell wrote. Tensors never travel back to the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import time
from collections import OrderedDict
from typing import Any, TypeVar

import torch
from torch import nn

from storage import ArtifactStore
from tasks import adaptive, datasets, defenses, models, purify, training
from tasks.attacks import ATTACKS, MinNormAttack
from tasks.defense_metrics import defense_metrics
from tasks.metrics import attack_metrics, budget_metrics, transfer_metrics

log = logging.getLogger(__name__)

CODE_VERSION = "0.1.0"

# Per-process caches keyed by content: Ray reuses worker processes between tasks, so a
# model or dataset is loaded once per worker, not once per cell.
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 32


def _cached(key: tuple, load: Any) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = load()
    _CACHE[key] = value
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def device() -> torch.device:
    """The GPU Ray assigned (or the first visible one), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def worker_name() -> str:
    """``host:pid``, or ``host:pid:node`` on a Ray worker (the first 8 characters of the Ray
    node id): several nodes can share a host, and the node is what a failure is traced to."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    node = _ray_node_id()
    return f"{name}:{node[:8]}" if node else name


def _ray_node_id() -> str | None:
    """The id of the Ray node this process belongs to, or None outside Ray."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def _dataset(spec: dict) -> tuple[datasets.Data, datasets.Split]:
    name, values = spec["name"], spec["params"]
    params = datasets.params_of(name, values)

    def load() -> tuple[datasets.Data, datasets.Split]:
        data = datasets.load(name, params)
        return data, datasets.split(len(data.y), params)

    return _cached(("dataset", name, repr(sorted(values.items()))), load)


def _allow_imports(payload: dict) -> bool:
    """Whether the payload says its study trusts model factories named by import path."""
    return payload.get("allow_imports") is True


def _model(payload: dict, role: str, store: ArtifactStore, dev: torch.device) -> nn.Module:
    digest, allow = payload["inputs"][role], _allow_imports(payload)

    def load() -> nn.Module:
        tensors, meta = store.get(digest)
        arch = meta["arch"]
        net = models.build(
            arch,
            models.params_of(arch, meta["params"]),
            input_shape=meta["input_shape"],
            num_classes=meta["num_classes"],
            mean=meta["mean"],
            std=meta["std"],
            allow_imports=allow,
        )
        net.load_state_dict(tensors)
        return _layout(net.to(dev), payload).eval()

    # the flag is part of the cache key: a payload without it never gets a model that one
    # with it built from an import path
    layout = bool(payload.get("channels_last"))
    return _cached(("model", digest, str(dev), allow, layout), load)


def _layout(net: ModuleT, payload: dict) -> ModuleT:
    """``channels_last`` memory format when the study asks (faster convolutions on GPUs)."""
    if payload.get("channels_last"):
        return net.to(memory_format=torch.channels_last)
    return net


def _precision(payload: dict) -> contextlib.AbstractContextManager:
    """Autocast to bfloat16 when the cell's spec says ``precision: bf16``.

    Weights, inputs, gradients with respect to the inputs and the stored examples stay
    float32; matrix products and convolutions run in bfloat16. float16 is not offered: its
    training needs loss scaling and its input gradients underflow.
    """
    if payload["spec"].get("precision", "fp32") == "bf16":
        # no weight-cast cache: it lives as long as the context, which here spans every
        # optimizer step of a training run, and would keep casting the initial weights
        return torch.autocast(device_type=device().type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def _defended(
    model: nn.Module, spec: dict, payload: dict, store: ArtifactStore, dev: torch.device
) -> nn.Module:
    """``model`` behind the defense component ``spec``; a defense whose class ``requires``
    trained artifacts (``autoencoder_purify``) gets each from the cell's input of that role."""
    name = spec["name"]
    entry = defenses.DEFENSES.get(name)
    given = {role: _model(payload, role, store, dev) for role in getattr(entry.obj, "requires", ())}
    return entry.obj(defenses.DEFENSES.params_of(name, spec["params"]), **given).wrap(model)


def _train_indices(spec: dict, split: datasets.Split) -> torch.Tensor:
    """The training part, or the one part of it the spec's ``train_split`` names."""
    part = spec.get("train_split")
    if part is None:
        return split.train
    params = datasets.params_of(spec["dataset"]["name"], spec["dataset"]["params"])
    return datasets.train_part(split, part["index"], part["of"], seed=params.split_seed)


def run_train(payload: dict, store: ArtifactStore) -> dict:
    """Fit one model on the training part of its dataset (or on the part of it that the
    spec's ``train_split`` names); store the checkpoint."""
    spec = payload["spec"]
    if "autoencoder" in spec:
        return _train_autoencoder(payload, store)
    data, split = _dataset(spec["dataset"])
    train = _train_indices(spec, split)
    model_spec, recipe = spec["model"], training.TrainParams(**spec["train"])
    arch = model_spec["arch"]
    net = models.build(
        arch,
        models.params_of(arch, model_spec["params"]),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        seed=recipe.seed,
        allow_imports=_allow_imports(payload),
    )
    dev = device()
    net = _layout(net.to(dev), payload)
    metrics = training.fit(net, data.x[train].to(dev), data.y[train].to(dev), recipe)
    pred = training.predict(net, data.x[split.eval].to(dev), payload.get("batch_size", 1024))
    metrics["eval_accuracy"] = float((pred.cpu() == data.y[split.eval]).float().mean())
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    record = store.put(state, _checkpoint_meta(spec, data))
    return {"metrics": metrics, "artifacts": {"checkpoint": dataclasses.asdict(record)}}


def _train_autoencoder(payload: dict, store: ArtifactStore) -> dict:
    """Fit an ``autoencoder_purify`` defense's autoencoder (:mod:`tasks.purify`) on the clean
    training part; store it like a classifier's checkpoint (``arch: dae``), so that
    :func:`_model` loads it. ``eval_mse``: its reconstruction error on the clean eval slice."""
    spec, dev = payload["spec"], device()
    data, split = _dataset(spec["dataset"])
    params = purify.PurifyParams(**spec["autoencoder"])
    dae = purify.build_autoencoder(
        params, input_shape=data.input_shape, mean=data.mean, std=data.std
    ).to(dev)
    metrics = purify.fit_autoencoder(dae, data.x[split.train].to(dev), params)
    with torch.no_grad():
        x_eval = data.x[split.eval].to(dev)
        metrics["eval_mse"] = float(torch.nn.functional.mse_loss(dae(x_eval), x_eval))
    state = {k: v.detach().cpu() for k, v in dae.state_dict().items()}
    record = store.put(state, _checkpoint_meta(spec, data))
    return {"metrics": metrics, "artifacts": {"checkpoint": dataclasses.asdict(record)}}


def _checkpoint_meta(spec: dict, data: datasets.Data) -> dict:
    """What a trained checkpoint records: enough to rebuild the model and trace its data."""
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
    if "autoencoder" in spec:  # a defense's autoencoder: its recipe
        meta["autoencoder"] = spec["autoencoder"]
    return meta


def run_attack(payload: dict, store: ArtifactStore) -> dict:
    """Attack the source model over the evaluation slice; store the adversarial examples."""
    spec, dev = payload["spec"], device()
    data, split = _dataset(spec["dataset"])
    model = _defended(
        _model(payload, "checkpoint", store, dev), spec["defense"], payload, store, dev
    )
    # BPDA/EOT: the attack runs on a surrogate that makes `passes` model passes per call
    attacked, passes = adaptive.surrogate(model, spec["defense"])
    # the attack's own predictions are the defended model's where its forward is that
    own = attacked is model or isinstance(attacked, adaptive.Naive)
    name = spec["attack"]["name"]
    attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, spec["attack"]["params"]))
    x_all, y_all = data.x[split.eval], data.y[split.eval]
    gen = torch.Generator(device=dev).manual_seed(attack.params.seed)
    start = time.perf_counter()
    fit_metrics, fit_indices = {}, None
    if attack.universal:  # one perturbation, fit on training samples
        fit_indices = _fit_indices(split.train, attack.params.fit_size, attack.params.seed)
        fit_metrics = attack.fit(attacked, data.x[fit_indices].to(dev), generator=gen)
    outs = []
    bs = payload["batch_size"]
    for xb, yb in zip(x_all.split(bs), y_all.split(bs), strict=True):
        outs.append(attack(attacked, xb.to(dev), yb.to(dev), generator=gen))
    wall = time.perf_counter() - start
    x_adv = torch.cat([o.x_adv for o in outs]).cpu()
    if own:
        pred_clean = training.predict(model, x_all.to(dev)).cpu()
        pred_adv = torch.cat([o.pred for o in outs]).cpu()  # x_adv is stored exactly (float32)
    else:  # scored by the real defended model, not the surrogate the attack saw
        seed = attack.params.seed
        preds = adaptive.evaluate(model, x_adv.to(dev), x_all.to(dev), bs, seed=seed)
        pred_adv, pred_clean = (p.cpu() for p in preds)
    targets = [o.target for o in outs]
    target = torch.cat(targets).cpu() if all(t is not None for t in targets) else None
    success = (pred_adv == target) if target is not None else (pred_adv != y_all)
    tensors = {
        "x_adv": x_adv.contiguous(),
        "indices": split.eval.clone(),
        "labels": y_all.clone(),
        "pred_clean": pred_clean,
        "pred_adv": pred_adv,
        "success": success,
    }
    if target is not None:
        tensors["target"] = target
    metrics = attack_metrics(x_all, tensors, wall_s=wall)
    metrics.update(_pass_counts(outs, passes, scored=not own))
    for name in {k for o in outs for k in o.counts}:
        metrics[name] = sum(o.counts.get(name, 0) for o in outs) / len(y_all)
    if isinstance(attack, MinNormAttack):
        metrics.update(budget_metrics(x_all, tensors, attack.norm, list(attack.params.eps)))
    if attack.black_box:  # score-based: every forward pass is a query
        metrics["queries_mean"] = metrics["forward"] / len(y_all)
    for key, value in fit_metrics.items():
        metrics[f"fit_{key}"] = value
    # last: a randomized defense's draws here change nothing stored above
    metrics.update(_masking_metrics(spec["defense"], model, attacked, x_all, y_all, bs, dev))
    metrics.update(defense_metrics(spec["defense"], model, data, split, tensors))
    meta = {
        "kind": "adversarial",
        "source": spec["source"],
        "defense": spec["defense"],
        "attack": spec["attack"],
        "dataset": spec["dataset"],
        "checkpoint": payload["inputs"]["checkpoint"],
        "eval_hash": spec["eval_hash"],
        "code_version": CODE_VERSION,
    }
    record = store.put(tensors, meta)
    artifacts = {"adversarial": dataclasses.asdict(record)}
    if fit_indices is not None:
        universal = {"perturbation": attack.perturbation.cpu(), "fit_indices": fit_indices}
        kept = store.put(universal, {**meta, "kind": "perturbation"})
        artifacts["perturbation"] = dataclasses.asdict(kept)
    return {"metrics": metrics, "artifacts": artifacts}


def _pass_counts(outs: list, passes: int, *, scored: bool) -> dict[str, float]:
    """Forward and backward passes through the undefended model, per sample summed: each call
    of an EOT surrogate is ``passes`` of them, and scoring on the real defended model one."""
    n = sum(len(o.pred) for o in outs)
    forward = sum(o.forward for o in outs) * passes + (n if scored else 0)
    return {"forward": float(forward), "backward": float(sum(o.backward for o in outs) * passes)}


def _masking_metrics(
    defense: dict,
    model: nn.Module,
    attacked: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    bs: int,
    dev: torch.device,
) -> dict[str, float]:
    """Which adaptation the cell used, and the gradient-masking diagnostics
    (:func:`tasks.adaptive.masking_metrics`); the latter are not counted as passes."""
    bpda, eot = adaptive.uses(defense.get("adaptive", "none"))
    metrics = {"adaptive_bpda": float(bpda), "adaptive_eot": float(eot)}
    if eot:
        metrics["eot_samples"] = float(defense.get("eot_samples", adaptive.DEFAULT_EOT_SAMPLES))
    randomized = defenses.DEFENSES.get(defense["name"]).obj.randomized
    x, y = x.to(dev), y.to(dev)
    metrics.update(adaptive.masking_metrics(model, attacked, x, y, bs, randomized=randomized))
    return metrics


def _fit_indices(train: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """``size`` training indices drawn by ``seed`` (all of them when there are fewer)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train[order[:size]].clone()


def run_transfer(payload: dict, store: ArtifactStore) -> dict:
    """Evaluate one stored adversarial set on one (defended) target model."""
    spec, dev = payload["spec"], device()
    data, _ = _dataset(spec["dataset"])
    adv, _meta = _cached(
        ("artifact", payload["inputs"]["adversarial"]),
        lambda: store.get(payload["inputs"]["adversarial"]),
    )
    net = _model(payload, "checkpoint", store, dev)
    model = _defended(net, spec["target_defense"], payload, store, dev)
    bs = payload["batch_size"]
    pred_adv = training.predict(model, adv["x_adv"].to(dev), bs).cpu()
    pred_clean = training.predict(model, data.x[adv["indices"]].to(dev), bs).cpu()
    # per-sample outcomes, for joins across targets (how many targets each example fools)
    predictions = {
        "indices": adv["indices"].clone(),
        "pred_clean": pred_clean,
        "pred_adv": pred_adv,
        "fooled": pred_adv != adv["labels"],
    }
    meta = {
        "kind": "predictions",
        "source": spec["source"],
        "target": spec["target"],
        "target_defense": spec["target_defense"],
        "attack": spec["attack"],
        "dataset": spec["dataset"],
        "adversarial": payload["inputs"]["adversarial"],
        "checkpoint": payload["inputs"]["checkpoint"],
        "code_version": CODE_VERSION,
    }
    record = store.put(predictions, meta)
    return {
        "metrics": transfer_metrics(adv, pred_clean, pred_adv),
        "artifacts": {"predictions": dataclasses.asdict(record)},
    }


RUNNERS = {"train": run_train, "attack": run_attack, "transfer": run_transfer}


def run_cell(payload: dict) -> dict:
    """Run one cell; returns ``{"metrics", "artifacts", "worker", "duration_s", "started_at",
    "ended_at"}``.

    ``started_at`` and ``ended_at`` are this worker's wall clock (epoch seconds) around the
    cell, which show how cells overlapped; the index keeps its own times on the database
    clock and does not store them.
    """
    started_at, start = time.time(), time.perf_counter()
    store = ArtifactStore(payload["store"])
    threads = torch.get_num_threads()
    # the thread count changes float reduction order: pin it to the cell's CPU share so the
    # same cell gives the same numbers in-process and on any Ray worker
    torch.set_num_threads(max(1, int(payload.get("num_cpus", 1))))
    try:
        with _precision(payload):
            result = RUNNERS[payload["kind"]](payload, store)
    finally:
        torch.set_num_threads(threads)
    result["worker"] = worker_name()
    result["duration_s"] = time.perf_counter() - start
    result["started_at"], result["ended_at"] = started_at, time.time()
    return result

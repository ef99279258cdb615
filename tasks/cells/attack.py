"""Attack cells: attack the (defended) source over the evaluation slice and store the
adversarial examples, with the metrics of :mod:`tasks.metrics` and the masking diagnostics."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from storage import ArtifactStore
from tasks import datasets, defenses, progress, training
from tasks.attacks import ATTACKS, AttackOutput, MinNormAttack
from tasks.cells import attack_state
from tasks.cells.payload import CellOutput, CellPayload
from tasks.cells.progress_files import drop_progress, progress_sink
from tasks.cells.specs import AttackSpec
from tasks.cells.worker import CODE_VERSION, behind_defense, device, load_dataset, load_model
from tasks.defenses import adaptive
from tasks.errors import InputError
from tasks.metrics import attack_metrics, budget_metrics

# what ``advgrid results`` shows of an attack cell
SUMMARY_METRICS = ("clean_accuracy", "robust_accuracy", "success_rate_on_correct")
SPECS = (AttackSpec,)


@dataclasses.dataclass(frozen=True)
class _Attacked:
    """The attack's outputs per batch, how long they took, and a universal attack's fit."""

    outs: list
    wall: float
    fit_metrics: dict[str, float]
    fit_indices: torch.Tensor | None
    notes: list[str] = dataclasses.field(default_factory=list)


def run_attack(cell: CellPayload, store: ArtifactStore) -> CellOutput:
    """Attack the source model over the evaluation slice; store the adversarial examples."""
    payload, spec, dev = cell.wire(), cell.spec, device()
    assert isinstance(spec, AttackSpec), spec  # the payload's kind chose this runner
    assert cell.batch_size is not None, "an attack cell's payload names its batch size"
    data, split = load_dataset(spec.dataset.dump())
    defense = spec.defense.dump()
    source = load_model(payload, "checkpoint", store, dev)
    checked = _checked_source(spec, source, data, split, cell.batch_size)
    model = behind_defense(source, defense, payload, store, dev)
    # BPDA/EOT: the attack runs on a surrogate that makes `passes` model passes per call
    attacked, passes = adaptive.surrogate(model, defense)
    # the attack's own predictions are the defended model's where its forward is that
    own = attacked is model or isinstance(attacked, adaptive.Naive)
    name, bs = spec.attack.name, cell.batch_size
    attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, spec.attack.params))
    x_all, y_all = data.images(split.eval), data.y[split.eval]
    expected = {
        "kind": attack_state.KIND,
        "cell_key": cell.key,
        "code_version": CODE_VERSION,
        "device": dev.type,
        "batch_size": bs,
        "of": -(-len(y_all) // bs),
    }
    saved = attack_state.Batches(
        store, cell.key, expected, every=cell.checkpoint_every, minutes=cell.checkpoint_minutes
    )
    what = f"{name} on {spec.source}+{defense['label']}"
    report = progress_sink(store, cell.key, "attack", what)
    run = _perturb(attack, attacked, data, split, bs=bs, dev=dev, saved=saved, report=report)
    seed = attack.params.seed
    tensors = _scored(run.outs, model, x_all, y_all, split, own=own, seed=seed, bs=bs, dev=dev)
    metrics = _metrics(attack, run, x_all, tensors, passes=passes, own=own)
    # last: a randomized defense's draws here change nothing stored above
    metrics.update(_masking_metrics(defense, model, attacked, x_all, y_all, bs, dev))
    if defenses.DEFENSES.get(defense["name"]).obj.randomized:
        x_adv = tensors["x_adv"].to(dev)
        metrics.update(adaptive.resubmitted(model, x_adv, y_all, bs, seed=seed))
    metrics.update(defenses.extra_metrics(defense, model, data, split, tensors))
    metrics.update(checked)
    meta = {
        "kind": "adversarial",
        "source": spec.source,
        "defense": defense,
        "attack": spec.attack.dump(),
        "dataset": spec.dataset.dump(),
        "checkpoint": cell.inputs["checkpoint"],
        "eval_hash": spec.eval_hash,
        "code_version": CODE_VERSION,
    }
    artifacts = _stored(store, tensors, meta, attack, run)
    if run.notes or saved.saved:
        store.drop_partial(cell.key)  # done: no attempt continues from it again
    drop_progress(store, cell.key)
    return CellOutput(metrics=metrics, artifacts=artifacts, notes=tuple(run.notes))


def _checked_source(
    spec: AttackSpec, source: nn.Module, data: datasets.Data, split: datasets.Split, bs: int
) -> dict[str, float]:
    """A source loaded from a checkpoint file: its clean accuracy on the evaluation slice
    (undefended), checked against the one the study expects before any attack runs."""
    if spec.source_checkpoint_sha256 is None:
        return {}
    pred = training.predict(source, data.x[split.eval], bs).cpu()
    accuracy = float((pred == data.y[split.eval]).float().mean())
    expected = spec.source_expected_accuracy
    if expected is not None and abs(accuracy - expected.accuracy) > expected.tolerance:
        hint = (
            "the `normalization:` is the dataset's statistics; zoo checkpoints (RobustBench) "
            "usually take [0, 1] inputs: `normalization: inside`"
            if spec.source_normalization is None
            else "check the file and the model's `normalization:`"
        )
        raise InputError(
            f"source {spec.source!r} (checkpoint file {spec.source_checkpoint_sha256[:12]}…): "
            f"clean accuracy {accuracy:.4f} on the evaluation slice, expected "
            f"{expected.accuracy:.4f} ± {expected.tolerance:.4f}; {hint}"
        )
    return {"checkpoint_clean_accuracy": accuracy}


def _perturb(
    attack: Any,
    attacked: nn.Module,
    data: datasets.Data,
    split: datasets.Split,
    *,
    bs: int,
    dev: torch.device,
    saved: attack_state.Batches | None = None,
    report: progress.Sink | None = None,
) -> _Attacked:
    """Fit a universal attack on training samples, then attack the eval slice batch by
    batch; every random draw comes from one generator seeded by the attack's seed. With
    ``saved``, the batches an earlier run of the cell finished are taken back and the new
    ones saved as it says (not for a universal attack, whose fit comes first)."""
    x_all, y_all = data.images(split.eval), data.y[split.eval]
    gen = torch.Generator(device=dev).manual_seed(attack.params.seed)
    start = time.perf_counter()
    fit_metrics, fit_indices = {}, None
    if attack.universal:  # one perturbation, fit on training samples
        saved = None
        fit_indices = _fit_indices(split.train, attack.params.fit_size, attack.params.seed)
        fit_metrics = attack.fit(attacked, data.images(fit_indices).to(dev), generator=gen)
    streams = attack_state.Streams(
        attack_state.generators(gen, attacked, attack), dev, attack_state.kept_states(attacked)
    )
    outs: list[AttackOutput] = []
    notes: list[str] = []
    before = 0.0
    if saved is not None:
        outs, before, notes = saved.load(streams)
    pairs = list(zip(x_all.split(bs), y_all.split(bs), strict=True))
    reporter = progress.Reporter(report, "batch", len(pairs), len(outs))
    for done, (xb, yb) in enumerate(pairs[len(outs) :], start=len(outs) + 1):
        outs.append(attack(attacked, xb.to(dev), yb.to(dev), generator=gen))
        reporter(done, len(yb), final=done == len(pairs))
        if saved is not None and done < len(pairs) and saved.due(done):
            saved.save(outs, streams, before + time.perf_counter() - start)
    wall = before + time.perf_counter() - start
    return _Attacked(outs, wall, fit_metrics, fit_indices, notes)


def _scored(
    outs: list,
    model: nn.Module,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    split: datasets.Split,
    *,
    own: bool,
    seed: int,
    bs: int,
    dev: torch.device,
) -> dict[str, torch.Tensor]:
    """The tensors an adversarial set stores, predictions by the real defended model."""
    x_adv = torch.cat([o.x_adv for o in outs]).cpu()
    if own:
        pred_clean = training.predict(model, x_all.to(dev)).cpu()
        pred_adv = torch.cat([o.pred for o in outs]).cpu()  # x_adv is stored exactly (float32)
    else:  # scored by the real defended model, not the surrogate the attack saw
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
    for name in outs[0].tensors if outs else ():  # an attack's own per-sample tensors
        tensors[name] = torch.cat([o.tensors[name] for o in outs]).cpu().contiguous()
    return tensors


def _metrics(
    attack: Any,
    run: _Attacked,
    x_all: torch.Tensor,
    tensors: dict[str, torch.Tensor],
    *,
    passes: int,
    own: bool,
) -> dict[str, float]:
    """The attack metrics (:mod:`tasks.metrics`), pass and query counts, the success at
    each budget of a minimum-norm attack, and a universal attack's fit metrics."""
    outs, n = run.outs, len(tensors["labels"])
    metrics = attack_metrics(x_all, tensors, wall_s=run.wall)
    metrics.update(_pass_counts(outs, passes, scored=not own))
    for name in {k for o in outs for k in o.counts}:
        metrics[name] = sum(o.counts.get(name, 0) for o in outs) / n
    if isinstance(attack, MinNormAttack):
        norm = attack.norm
        metrics.update(budget_metrics(x_all, tensors, norm, list(attack.params.eps)))
    if attack.black_box:  # score-based: every forward pass is a query
        metrics["queries_mean"] = metrics["forward"] / n
    for key, value in run.fit_metrics.items():
        metrics[f"fit_{key}"] = value
    return metrics


def _stored(
    store: ArtifactStore, tensors: dict[str, torch.Tensor], meta: dict, attack: Any, run: _Attacked
) -> dict[str, dict[str, Any]]:
    """Store the adversarial set (and a universal attack's perturbation with the indices
    it was fit on); their records by role."""
    record = store.put(tensors, meta)
    artifacts = {"adversarial": dataclasses.asdict(record)}
    if run.fit_indices is not None:
        universal = {"perturbation": attack.perturbation.cpu(), "fit_indices": run.fit_indices}
        kept = store.put(universal, {**meta, "kind": "perturbation"})
        artifacts["perturbation"] = dataclasses.asdict(kept)
    return artifacts


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
    (:func:`tasks.defenses.adaptive.masking_metrics`); the latter are not counted as passes."""
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

"""Transfer cells: evaluate one stored adversarial set on one (defended) target model."""

from __future__ import annotations

import dataclasses
from typing import Any

from storage import ArtifactStore
from tasks import training
from tasks.cells.payload import CellOutput, CellPayload
from tasks.cells.specs import TransferSpec
from tasks.cells.worker import (
    CODE_VERSION,
    behind_defense,
    cached,
    device,
    load_dataset,
    load_model,
)
from tasks.metrics import transfer_metrics

# what ``advgrid results`` shows of a transfer cell
SUMMARY_METRICS = ("transfer_rate_source_success", "target_robust_accuracy")
SPECS = (TransferSpec,)


def row_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """A results row's source and target, each ``model+defense`` when defended."""
    return {
        "source": _label(spec["source"], spec.get("defense")),
        "target": _label(spec["target"], spec.get("target_defense")),
    }


def _label(model: str, defense: dict[str, Any] | None) -> str:
    if not defense or defense.get("name") == "none":
        return model
    return f"{model}+{defense.get('label', defense['name'])}"


# the input role whose artifact transfer cells are grouped by: the cells that read one
# adversarial set run as one task, which reads it once (orchestrator.run.driver._group_key)
GROUP_BY = "adversarial"


def run_transfer(cell: CellPayload, store: ArtifactStore) -> CellOutput:
    """Evaluate one stored adversarial set on one (defended) target model."""
    payload, spec, dev = cell.wire(), cell.spec, device()
    assert isinstance(spec, TransferSpec), spec  # the payload's kind chose this runner
    assert cell.batch_size is not None, "a transfer cell's payload names its batch size"
    data, _ = load_dataset(spec.dataset.dump())
    adversarial = cell.inputs["adversarial"]
    adv, _meta = cached(("artifact", adversarial), lambda: store.get(adversarial))
    net = load_model(payload, "checkpoint", store, dev)
    model = behind_defense(net, spec.target_defense.dump(), payload, store, dev)
    bs = cell.batch_size
    pred_adv = training.predict(model, adv["x_adv"].to(dev), bs).cpu()
    pred_clean = training.predict(model, data.images(adv["indices"]).to(dev), bs).cpu()
    # per-sample outcomes, for joins across targets (how many targets each example fools)
    predictions = {
        "indices": adv["indices"].clone(),
        "pred_clean": pred_clean,
        "pred_adv": pred_adv,
        "fooled": pred_adv != adv["labels"],
    }
    record = store.put(predictions, _predictions_meta(spec, cell.inputs))
    return CellOutput(
        metrics=transfer_metrics(adv, pred_clean, pred_adv),
        artifacts={"predictions": dataclasses.asdict(record)},
    )


def _predictions_meta(spec: TransferSpec, inputs: dict[str, str]) -> dict:
    """What a ``predictions`` artifact records: the cell's heads and the digests it read."""
    return {
        "kind": "predictions",
        "source": spec.source,
        "target": spec.target,
        "target_defense": spec.target_defense.dump(),
        "attack": spec.attack.dump(),
        "dataset": spec.dataset.dump(),
        "adversarial": inputs["adversarial"],
        "checkpoint": inputs["checkpoint"],
        "code_version": CODE_VERSION,
    }

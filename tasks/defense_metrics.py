"""What an attack cell adds for a defense with numbers of its own: a detector, a smoothing.

Accuracy under attack says nothing about a detector (its forward is the model's) and only
half about randomized smoothing (its point is a certificate). An attack cell whose defense is
one of these adds the defense's own metrics through :func:`defense_metrics`, prefixed so that
no name collides with the attack's:

- ``feature_squeezing_detector`` (:func:`tasks.defenses.detectors.detector_metrics`): the
  threshold is fitted on ``fit_size`` clean *training* samples (the first ``fit_size`` of a
  permutation of the training part drawn by the fixed seed :data:`FIT_SEED`, so the subset is
  part of the key through ``fit_size``), the false-positive rate measured on the clean
  evaluation slice and the detection rate on the cell's adversarial examples. Metrics:
  ``detector_threshold``,
  ``detector_false_positive_rate``, ``detector_detection_rate`` (share of the successful
  adversarial examples flagged; absent when none succeeded), ``detector_detection_rate_all``
  and ``detector_n_success``.
- ``randomized_smoothing`` (:func:`tasks.defenses.smoothing.smoothing_metrics`): PREDICT and
  CERTIFY on the clean evaluation slice, certified accuracy at the params' ``radii``. Metrics:
  ``smoothed_accuracy``, ``abstain_rate``, ``certify_abstain_rate``,
  ``average_certified_radius``, ``certified_accuracy_r_<r>`` and ``smoothing_n``.

Both run after everything the cell stores, from generators of their own, so they change no
stored example or prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks import datasets, defenses
from tasks.defenses.detectors import FeatureSqueezingParams, detector_metrics
from tasks.defenses.smoothing import SmoothingParams, smoothing_metrics

FIT_SEED = 0
"""Seed of the permutation of the training part whose head fits a detector's threshold."""


def defense_metrics(
    spec: dict,
    model: nn.Module,
    data: datasets.Data,
    split: datasets.Split,
    tensors: dict[str, torch.Tensor],
) -> dict[str, float]:
    """The defense's own metrics for an attack cell; empty for other defenses.

    Args:
        spec: the attack cell's ``defense`` component (``name``, ``params``).
        model: the defended model the cell evaluated.
        data: the dataset; ``split`` its training part and evaluation slice.
        tensors: the cell's artifact tensors (``x_adv``, ``success``, ``labels``).
    """
    name = spec["name"]
    params = defenses.DEFENSES.params_of(name, spec["params"])
    dev = next(model.parameters(), torch.empty(0)).device
    if isinstance(params, FeatureSqueezingParams):
        return _detector(model, data, split, tensors, params, dev)
    if isinstance(params, SmoothingParams):
        x, y = data.x[split.eval].to(dev), data.y[split.eval]
        metrics = smoothing_metrics(model, x, y, params.radii)
        metrics["smoothing_n"] = metrics.pop("n")
        return metrics
    return {}


def fit_indices(train: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` of a permutation of ``train`` drawn by :data:`FIT_SEED`."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(FIT_SEED))
    return train[order[:size]].clone()


def _detector(
    model: nn.Module,
    data: datasets.Data,
    split: datasets.Split,
    tensors: dict[str, torch.Tensor],
    params: FeatureSqueezingParams,
    dev: torch.device,
) -> dict[str, float]:
    x_fit = data.x[fit_indices(split.train, params.fit_size)].to(dev)
    x_eval, x_adv = data.x[split.eval].to(dev), tensors["x_adv"].to(dev)
    # Xu et al. count the adversarial examples of seeds the model classified correctly
    success = tensors["success"] & (tensors["pred_clean"] == tensors["labels"])
    found = detector_metrics(model, x_fit, x_eval, x_adv, success, params)
    return {f"detector_{k}": v for k, v in found.items()}

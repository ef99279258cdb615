"""Detectors: flag inputs as adversarial without changing the model's predictions.

Feature squeezing (Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep
Neural Networks", NDSS 2018): an input's score is the largest L1 distance between the model's
softmax on it and on a squeezed copy, over the squeezers bit-depth reduction and median
smoothing (the registered ``bit_depth`` and ``median_filter`` transforms of
:mod:`tasks.defenses.transforms`). The threshold is the ``1 − fpr`` quantile of the scores of clean
inputs, so about ``fpr`` of clean inputs are flagged; an input is flagged when its score
exceeds it.

The registered defense ``feature_squeezing_detector`` wraps a model in :class:`Detected`,
whose forward is the model's own (a detector does not change predictions, so accuracy and
attack success are those of the undefended model and an attack on it is the non-adaptive,
detector-unaware one); the wrapper carries the detector (``.detector``, ``.fit(x_clean)``,
``.score(x)``, ``.flag(x)``). An attacker who knows the detector can evade it too (He, Wei,
Chen, Carlini & Song, "Adversarial Example Defense: Ensembles of Weak Defenses are not
Strong", WOOT 2017); that adaptive attack is not written here.

Wiring (:meth:`FeatureSqueezingDetector.extra_metrics`, for attack cells; transfer cells do
not add them yet): the detector is fitted on clean *training* samples inside the cell that
evaluates it (cheap and deterministic: no artifact). An attack cell whose defense is
``feature_squeezing_detector`` adds :func:`detector_metrics` of its adversarial examples,
with ``success`` = the examples that fool the model and whose clean input it classified
correctly (as Xu et al. count them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import Field, model_validator
from torch import nn

from tasks.datasets import Data, Split
from tasks.defenses.base import DEFENSES, Defended, InputTransform, device_of, register
from tasks.errors import InputError
from tasks.registry import Params

FIT_SEED = 0
"""Seed of the permutation of the training part whose head fits a detector's threshold."""


class FeatureSqueezingParams(Params):
    bits: int | None = Field(
        5, ge=1, le=8, description="bit-depth squeezer (Xu: 1 MNIST, 5 colour); null: none"
    )
    median_size: int | None = Field(
        2, ge=2, le=9, description="median squeezer's window (Xu: 2); null: none"
    )
    fpr: float = Field(0.05, gt=0, lt=1, description="target false-positive rate on clean data")
    batch_size: int = Field(1024, ge=1, description="inputs per model call when scoring")
    fit_size: int = Field(
        1000, ge=1, description="clean training samples the threshold is fitted on in a study"
    )

    @model_validator(mode="after")
    def _a_squeezer(self) -> FeatureSqueezingParams:
        if self.bits is None and self.median_size is None:
            raise ValueError("set `bits` or `median_size` (or both): a detector needs a squeezer")
        return self


@register("feature_squeezing_detector")
class FeatureSqueezingDetector(InputTransform):
    """Feature squeezing detector: flags inputs whose prediction moves when squeezed (Xu 2018).

    A wrapper whose forward is the model's; ``transform`` is the identity (nothing to bypass).
    The defaults are Xu et al.'s CIFAR-10 joint detector without its non-local means squeezer
    (5-bit depth, 2×2 median); their MNIST one squeezes to 1 bit. On 8×8 images (digits) a
    median window rewrites the digit itself and its score swamps the other squeezer's: there,
    ``median_size: null`` leaves bit-depth reduction alone.
    """

    Params = FeatureSqueezingParams
    params: FeatureSqueezingParams
    differentiable = True

    def __init__(self, params: FeatureSqueezingParams) -> None:
        super().__init__(params)
        self.squeezers: list[InputTransform] = []
        if params.bits is not None:
            self.squeezers.append(_transform("bit_depth", {"bits": params.bits}))
        if params.median_size is not None:
            self.squeezers.append(_transform("median_filter", {"size": params.median_size}))

    def wrap(self, model: nn.Module) -> Detected:
        return Detected(model, self)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x.clone()

    def score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` scores: max over squeezers of ‖softmax(f(x)) − softmax(f(squeeze(x)))‖₁.

        Computed without a graph, in batches of ``batch_size``, with ``model`` as it is (eval
        mode is the caller's; the cells load models in eval mode).
        """
        if x.dim() != 4 or not torch.is_floating_point(x):
            raise InputError(
                f"defense {self.name!r} scores float images (N, C, H, W), got {x.dtype} of "
                f"shape {tuple(x.shape)}"
            )
        with torch.no_grad():
            return torch.cat([self._score(model, b) for b in x.split(self.params.batch_size)])

    def _score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        p = model(x).softmax(1)
        gaps = [(p - model(s.transform(x, None)).softmax(1)).abs().sum(1) for s in self.squeezers]
        return torch.stack(gaps).amax(0)

    def threshold(self, clean_scores: torch.Tensor) -> float:
        """The ``1 − fpr`` quantile of clean scores: the ``⌈(1 − fpr)·N⌉``-th smallest, so
        ``⌊fpr·N⌋`` of them (ties aside) lie strictly above it and would be flagged."""
        if len(clean_scores) == 0:
            raise InputError(f"defense {self.name!r} needs clean inputs to fit its threshold")
        k = math.ceil(round((1 - self.params.fpr) * len(clean_scores), 9))
        return float(clean_scores.sort().values[max(k, 1) - 1])

    @classmethod
    def extra_metrics(
        cls,
        params: FeatureSqueezingParams,
        defended: nn.Module,
        data: Data,
        split: Split,
        tensors: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """:func:`detector_metrics` of the cell's adversarial examples, names prefixed
        ``detector_`` (see :meth:`tasks.defenses.base.Defense.extra_metrics`).

        The threshold is fitted on ``fit_size`` clean *training* samples (the head of a
        permutation of the training part drawn by :data:`FIT_SEED`, so ``fit_size``, in the
        key, fixes the subset), the false-positive rate measured on the clean evaluation
        slice. Metrics: ``detector_threshold``, ``detector_false_positive_rate``,
        ``detector_detection_rate`` (share of the successful adversarial examples flagged;
        absent when none succeeded), ``detector_detection_rate_all`` and
        ``detector_n_success``.
        """
        dev = device_of(defended)
        x_fit = data.images(fit_indices(split.train, params.fit_size)).to(dev)
        x_eval, x_adv = data.images(split.eval).to(dev), tensors["x_adv"].to(dev)
        # Xu et al. count the adversarial examples of seeds the model classified correctly
        success = tensors["success"] & (tensors["pred_clean"] == tensors["labels"])
        found = detector_metrics(defended, x_fit, x_eval, x_adv, success, params)
        return {f"detector_{k}": v for k, v in found.items()}


def _transform(name: str, values: dict[str, int]) -> InputTransform:
    """The registered input transform ``name`` (the squeezers are those defenses)."""
    squeezer = DEFENSES.get(name).obj(DEFENSES.params_of(name, values))
    assert isinstance(squeezer, InputTransform)
    return squeezer


class Detected(Defended):
    """A model with a feature-squeezing detector attached: ``forward`` is the model's.

    ``threshold`` is None until :meth:`fit` (or set by hand from a stored fit).
    """

    model: nn.Module
    defense: FeatureSqueezingDetector

    def __init__(self, model: nn.Module, defense: FeatureSqueezingDetector) -> None:
        super().__init__(model, defense)
        self.threshold: float | None = None

    @property
    def detector(self) -> FeatureSqueezingDetector:
        return self.defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The detector's score of each input (see :meth:`FeatureSqueezingDetector.score`)."""
        return self.defense.score(self.model, x)

    def fit(self, x_clean: torch.Tensor) -> float:
        """Set and return the threshold fitted on clean inputs ``x_clean``."""
        self.threshold = self.defense.threshold(self.score(x_clean))
        return self.threshold

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: whether each input is flagged as adversarial."""
        if self.threshold is None:
            raise InputError(
                f"defense {self.defense.name!r} has no threshold yet: call `fit(x_clean)` "
                "with clean inputs first"
            )
        return self.score(x) > self.threshold


def fit_indices(train: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` of a permutation of ``train`` drawn by :data:`FIT_SEED`."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(FIT_SEED))
    return train[order[:size]].clone()


def fit_threshold(model: nn.Module, x_clean: torch.Tensor, params: FeatureSqueezingParams) -> float:
    """The threshold of the detector with ``params`` on ``model``, fitted on ``x_clean``."""
    detector = FeatureSqueezingDetector(params)
    return detector.threshold(detector.score(model, x_clean))


def detector_metrics(
    model: nn.Module,
    x_clean_fit: torch.Tensor,
    x_clean_eval: torch.Tensor,
    x_adv: torch.Tensor,
    success: torch.Tensor,
    params: FeatureSqueezingParams,
) -> dict[str, float]:
    """Fit the detector on ``x_clean_fit``, then score held-out clean and adversarial inputs.

    Args:
        model: the classifier (a :class:`Detected` wrapper scores the same: its forward is
            the model's).
        x_clean_fit: clean inputs the threshold is fitted on (training samples).
        x_clean_eval: held-out clean inputs (the evaluation slice) for the false-positive rate.
        x_adv: adversarial examples; ``success`` (bool, one per example) marks those that
            fool the model.

    Returns:
        ``threshold``, ``false_positive_rate`` (flagged share of ``x_clean_eval``),
        ``detection_rate_all`` (flagged share of ``x_adv``), ``n_success`` and, when some
        example succeeded, ``detection_rate`` (flagged share of the successful ones; left out
        otherwise, as a rate over nothing).
    """
    if len(success) != len(x_adv):
        raise InputError(f"{len(success)} success flags for {len(x_adv)} adversarial examples")
    detector = FeatureSqueezingDetector(params)
    threshold = detector.threshold(detector.score(model, x_clean_fit))
    flagged = (detector.score(model, x_adv) > threshold).cpu()
    success = success.bool().cpu()
    metrics = {
        "threshold": threshold,
        "false_positive_rate": float(
            (detector.score(model, x_clean_eval) > threshold).double().mean()
        ),
        "detection_rate_all": float(flagged.double().mean()),
        "n_success": float(success.sum()),
    }
    if success.any():
        metrics["detection_rate"] = float(flagged[success].double().mean())
    return metrics

"""Feature squeezing: scores, the clean-data threshold and detection of FGSM examples."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from pydantic import ValidationError

from tasks import datasets, models, training
from tasks.attacks import ATTACKS
from tasks.defenses import DEFENSES, detectors, wrap
from tasks.defenses.detectors import Detected, FeatureSqueezingParams
from tasks.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

# digits are 8×8: a median window rewrites the digit, so its score would swamp the 1-bit one
DIGITS = FeatureSqueezingParams(bits=1, median_size=None)


@dataclass(frozen=True)
class Digits:
    model: torch.nn.Module
    x_fit: torch.Tensor  # clean training samples: what the threshold is fitted on
    x: torch.Tensor  # the held-out evaluation slice
    y: torch.Tensor


@pytest.fixture(scope="module")
def digits() -> Digits:
    """A tiny MLP trained on digits (≈ 96 % held-out accuracy)."""
    params = datasets.params_of("digits", {"eval_size": 256})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    net = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [64]}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    x, y = data.x[split.train], data.y[split.train]
    training.fit(net, x, y, training.TrainParams(epochs=15, lr=0.005))
    return Digits(net.eval(), x[:500], data.x[split.eval], data.y[split.eval])


def test_inputs_the_squeezers_leave_alone_score_zero(digits: Digits) -> None:
    detector = detectors.FeatureSqueezingDetector(FeatureSqueezingParams(bits=2, median_size=3))
    levels = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])  # 2-bit levels; constant images
    fixed = levels.view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    assert detector.score(digits.model, fixed).tolist() == [0.0] * 4
    scores = detector.score(digits.model, digits.x[:32])
    assert bool((scores > 0).all())  # real digits move under both squeezers
    assert float(scores.max()) <= 2.0  # an L1 distance between two distributions


@pytest.mark.parametrize("fpr", [0.05, 0.1])
def test_the_threshold_flags_fpr_of_the_clean_data_it_was_fitted_on(
    digits: Digits, fpr: float
) -> None:
    params = DIGITS.model_copy(update={"fpr": fpr})
    threshold = detectors.fit_threshold(digits.model, digits.x_fit, params)
    scores = detectors.FeatureSqueezingDetector(params).score(digits.model, digits.x_fit)
    flagged = int((scores > threshold).sum())
    assert flagged == int(fpr * len(digits.x_fit))  # ⌊fpr·N⌋: 25 and 50 of 500


def test_fgsm_examples_are_flagged_far_more_often_than_clean_ones(digits: Digits) -> None:
    fgsm = ATTACKS.get("fgsm")
    out = fgsm.obj(fgsm.params.model_validate({"eps": 0.2}))(digits.model, digits.x, digits.y)
    metrics = detectors.detector_metrics(
        digits.model, digits.x_fit, digits.x, out.x_adv, out.success, DIGITS
    )
    # measured: detection 0.46 of 238 successful examples, false positives 0.047
    assert metrics["n_success"] > 200
    assert metrics["false_positive_rate"] <= 0.1
    assert metrics["detection_rate"] >= 0.3
    assert metrics["detection_rate"] >= metrics["false_positive_rate"] + 0.2
    assert 0 < metrics["detection_rate_all"] <= 1
    none = detectors.detector_metrics(
        digits.model, digits.x_fit, digits.x, out.x_adv, torch.zeros(len(out.x_adv)), DIGITS
    )
    assert "detection_rate" not in none  # a rate over no successful example is left out
    assert none["n_success"] == 0


def test_the_wrapper_predicts_like_the_model_and_carries_the_detector(digits: Digits) -> None:
    defended = wrap(digits.model, "feature_squeezing_detector", DIGITS)
    assert isinstance(defended, Detected)
    with torch.no_grad():
        assert torch.equal(defended(digits.x), digits.model(digits.x))
    with pytest.raises(InputError, match=r"call `fit\(x_clean\)`"):
        defended.flag(digits.x)
    threshold = defended.fit(digits.x_fit)
    assert threshold == detectors.fit_threshold(digits.model, digits.x_fit, DIGITS)
    assert defended.threshold == threshold
    scores = defended.detector.score(digits.model, digits.x)
    assert torch.equal(defended.flag(digits.x), scores > threshold)


def test_params_need_a_squeezer_and_defaults_follow_xu() -> None:
    with pytest.raises(ValidationError, match="needs a squeezer"):
        DEFENSES.params_of("feature_squeezing_detector", {"bits": None, "median_size": None})
    default = DEFENSES.params_of("feature_squeezing_detector", {})
    assert (default.bits, default.median_size, default.fpr) == (5, 2, 0.05)
    squeezers = detectors.FeatureSqueezingDetector(default).squeezers
    assert [s.name for s in squeezers] == ["bit_depth", "median_filter"]
    with pytest.raises(InputError, match="clean inputs"):
        detectors.FeatureSqueezingDetector(default).threshold(torch.zeros(0))

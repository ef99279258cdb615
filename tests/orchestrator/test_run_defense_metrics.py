"""An attack cell on a detector or a smoothed model adds the defense's own metrics:
detection and false-positive rates, certified accuracy at the study's radii."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli, RunStudy

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: measured
datasets:
  - name: digits
    eval_size: 64
models:
  - name: mlp
    arch: mlp
    params: {hidden: [64]}
    train: {epochs: 15, lr: 0.005, seed: 0}
defenses:
  - name: none
  - {name: feature_squeezing_detector, median_size: null, bits: 1, fit_size: 300}
  - name: randomized_smoothing
    sigma: 0.25
    n: 20
    n0: 20
    n_certify: 200
    radii: [0.25, 0.5]
    adaptive: bpda+eot
    eot_samples: 2
attacks:
  - name: fgsm
    eps: 0.2
targets: []
execution:
  batch_size: 64
"""

DETECTOR = ("detector_threshold", "detector_false_positive_rate", "detector_detection_rate")
SMOOTHING = (
    "smoothed_accuracy",
    "abstain_rate",
    "certify_abstain_rate",
    "certified_accuracy_r_0.25",
    "certified_accuracy_r_0.5",
)


@pytest.fixture(scope="module")
def attacks(run_study: RunStudy) -> dict[str, dict[str, float]]:
    env = run_study(STUDY, "-q", file="measured.yaml").env
    cli = Cli()
    out = cli("results", "measured", "--kind", "attack", "--format", "json", env=env)
    assert out.exit_code == 0, out.output
    return {r["defense"]: r["metrics"] for r in json.loads(out.output)}


def test_the_detector_flags_adversarial_examples_more_often_than_clean_ones(attacks) -> None:
    metrics = attacks["feature_squeezing_detector"]
    assert all(0 <= metrics[name] <= 1 for name in DETECTOR[1:])
    assert metrics["detector_n_success"] > 0
    assert metrics["detector_detection_rate"] > metrics["detector_false_positive_rate"]
    assert not any(name.startswith("detector_") for name in attacks["none"])


def test_the_smoothed_model_reports_certified_accuracy_at_its_radii(attacks) -> None:
    metrics = attacks["randomized_smoothing"]
    assert all(0 <= metrics[name] <= 1 for name in SMOOTHING)
    assert metrics["smoothing_n"] == 64
    # a larger radius certifies no more inputs
    assert metrics["certified_accuracy_r_0.5"] <= metrics["certified_accuracy_r_0.25"]
    assert metrics["smoothed_accuracy"] > 0.5
    assert "certified_accuracy_r_0.25" not in attacks["none"]

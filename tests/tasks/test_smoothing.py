"""Randomized smoothing: Cohen et al.'s PREDICT and CERTIFY, the bound behind them, the
certified accuracy they give, and the wrapper's vote."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from tasks import datasets, models
from tasks.defenses import smoothing, wrap
from tasks.defenses.smoothing import ABSTAIN, SmoothingParams
from tasks.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


class Constant(nn.Module):
    """Always class ``c`` of ``k``."""

    def __init__(self, c: int, k: int = 10) -> None:
        super().__init__()
        self.logits = torch.zeros(k)
        self.logits[c] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class Brighter(nn.Module):
    """Class 0 when the mean pixel exceeds 1/2, else 1: at a constant-1/2 image the noise
    (symmetric, and clipped symmetrically) splits the votes evenly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = (x.flatten(1).mean(1) > 0.5).to(x.dtype)
        return torch.stack([up, 1 - up, torch.zeros_like(up)], 1)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """64 digits, their labels and a random (untrained) MLP over them."""
    params = datasets.params_of("digits", {})
    data = datasets.load("digits", params)
    net = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [32]}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    return data.x[:64], data.y[:64], net.eval()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (7, 10), (10, 10), (993, 1000), (50, 100)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_and_binomial_test_match_scipy(k: int, n: int, alpha: float) -> None:
    # the one-sided 1 − α lower bound is the lower end of the two-sided 1 − 2α exact interval
    expected = stats.binomtest(k, n).proportion_ci(1 - 2 * alpha, method="exact").low
    assert smoothing.lower_confidence_bound(np.array([k]), n, alpha)[0] == pytest.approx(
        expected, rel=1e-9, abs=1e-12
    )
    p_value = smoothing.binomial_p_value(np.array([k]), np.array([n]))[0]
    assert p_value == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_a_constant_classifier_is_certified_at_sigma_times_the_bounds_quantile() -> None:
    x = torch.rand(5, 1, 8, 8, generator=gen())
    for sigma, n in ((0.25, 1000), (0.5, 20_000)):
        params = SmoothingParams(sigma=sigma, n_certify=n)
        cert = smoothing.certify(Constant(3), x, params, gen())
        # all n draws vote 3: pA = α^(1/n), the α quantile of Beta(n, 1)
        radius = sigma * stats.norm.ppf(params.alpha ** (1 / n))
        assert cert.pred.tolist() == [3] * 5
        assert torch.allclose(cert.radius, torch.full((5,), radius, dtype=torch.float64))
        assert smoothing.predict(Constant(3), x, params, gen()).tolist() == [3] * 5


def test_with_a_tiny_sigma_the_smoothed_classifier_is_the_base_one(digits) -> None:
    x, _, net = digits
    params = SmoothingParams(sigma=1e-6, n=50, n_certify=200)
    with torch.no_grad():
        base = net(x).argmax(1)
    assert torch.equal(smoothing.predict(net, x, params, gen()), base)
    assert torch.equal(smoothing.certify(net, x, params, gen()).pred, base)
    smoothed = wrap(net, "randomized_smoothing", params)
    with torch.no_grad():
        assert torch.equal(smoothed(x).argmax(1), base)


def test_a_classifier_that_splits_the_votes_makes_it_abstain() -> None:
    x = torch.full((20, 1, 8, 8), 0.5)
    params = SmoothingParams(sigma=0.25, n=200, n_certify=2000)
    pred = smoothing.predict(Brighter(), x, params, gen())
    cert = smoothing.certify(Brighter(), x, params, gen())
    assert pred.tolist() == [ABSTAIN] * 20
    assert cert.pred.tolist() == [ABSTAIN] * 20
    assert cert.radius.tolist() == [0.0] * 20
    assert float(cert.p_lower.max()) < 0.5
    # the same classifier far from the boundary: no abstention
    assert smoothing.predict(Brighter(), x + 0.3, params, gen()).tolist() == [0] * 20
    metrics = smoothing.smoothing_metrics(Brighter(), x, torch.zeros(20), [0.0], params=params)
    assert metrics["abstain_rate"] == metrics["certify_abstain_rate"] == 1.0
    assert metrics["smoothed_accuracy"] == metrics["certified_accuracy_r_0"] == 0.0


def test_certified_accuracy_counts_correct_and_far_enough() -> None:
    radii = torch.tensor([0.0, 0.3, 0.6, 0.6, 1.2], dtype=torch.float64)
    labels = torch.tensor([1, 2, 3, 4, 5])
    preds = torch.tensor([ABSTAIN, 2, 3, 0, 5])
    got = smoothing.certified_accuracy(radii, labels, preds, [0, 0.3, 0.5, 1.0, 2.0])
    assert got == {0.0: 0.6, 0.3: 0.6, 0.5: 0.4, 1.0: 0.2, 2.0: 0.0}


def test_certified_accuracy_does_not_grow_with_the_radius(trained) -> None:
    params = SmoothingParams(sigma=0.25, n_certify=1000)
    x, y = trained.x[:48], trained.y[:48]
    radius = [i / 20 for i in range(16)]
    metrics = smoothing.smoothing_metrics(trained.model, x, y, radius, params=params)
    curve = [metrics[f"certified_accuracy_r_{r:g}"] for r in radius]
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))
    assert curve[0] > 0.5  # a trained model: the curve starts high
    assert curve[0] > curve[-1]  # and falls: the test could fail
    assert 0 < metrics["average_certified_radius"] <= max(radius) * 2


def test_deterministic_under_a_seed(digits) -> None:
    x, y, net = digits
    params = SmoothingParams(sigma=0.5, n=50, n_certify=300)
    once = smoothing.smoothing_metrics(net, x, y, [0.1, 0.2], gen(1), params=params)
    again = smoothing.smoothing_metrics(net, x, y, [0.1, 0.2], gen(1), params=params)
    assert once == again
    a, b = (smoothing.certify(net, x, params, gen(s)).p_lower for s in (1, 2))
    assert torch.equal(a, smoothing.certify(net, x, params, gen(1)).p_lower)
    assert not torch.equal(a, b)
    streams = [
        wrap(net, "randomized_smoothing", params.model_copy(update={"seed": s})) for s in (1, 1, 2)
    ]
    with torch.no_grad():
        first, second, other = (s(x) for s in streams)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_the_wrapper_scores_log_vote_frequencies() -> None:
    params = SmoothingParams(n=40)
    smoothed = wrap(Constant(2, k=4), "randomized_smoothing", params)
    with torch.no_grad():
        scores = smoothed(torch.rand(3, 1, 8, 8, generator=gen()))
    unvoted = math.log(0.5 / 40)  # half a vote: finite, below any class that got one
    assert scores.tolist() == [pytest.approx([unvoted, unvoted, 0.0, unvoted])] * 3
    one = smoothed.transform(torch.full((2, 1, 8, 8), 0.5))  # one noise draw
    assert 0.15 < float(one.std()) < 0.35


def test_bad_calls_explain_themselves(digits) -> None:
    x, y, net = digits
    with pytest.raises(InputError, match="needs `params`"):
        smoothing.smoothing_metrics(net, x, y, [0.5])
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        smoothing.predict(net, x.flatten(1), SmoothingParams(), gen())
    smoothed = wrap(net, "randomized_smoothing", SmoothingParams(n=10, n_certify=20))
    metrics = smoothing.smoothing_metrics(smoothed, x[:4], y[:4], [0.25])
    assert set(metrics) == {
        "n",
        "smoothed_accuracy",
        "abstain_rate",
        "certify_abstain_rate",
        "average_certified_radius",
        "certified_accuracy_r_0.25",
    }


def test_vote_counts_never_sends_more_than_batch_size_inputs_at_once() -> None:
    """More inputs than ``batch_size`` are counted in chunks, not as one batch per draw."""
    from tasks.defenses.smoothing import vote_counts

    seen: list[int] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(len(x))
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()

    x = torch.rand(25, 1, 4, 4)
    counts = vote_counts(Spy(), x, 7, 0.1, torch.Generator().manual_seed(0), batch_size=10)
    assert max(seen) <= 10
    assert counts.shape == (25, 3)
    assert counts[:, 0].tolist() == [7] * 25

"""BPDA and EOT surrogates, the evaluation of the real defended model, and the masking
diagnostics (tasks.defenses.adaptive), on small random models: no training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tasks.defenses import adaptive
from tasks.errors import InputError, NotDifferentiableError
from tests.tasks.test_defense_contract import build, defend, images

SHAPE = (1, 8, 8)


def _grad(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    return g


def _loss(model, y: torch.Tensor):
    return lambda x: F.cross_entropy(model(x), y, reduction="sum")


@pytest.mark.parametrize(("name", "params"), [("jpeg", {}), ("bit_depth", {"bits": 2})])
def test_bpda_forward_is_the_defended_model_and_its_gradient_the_models_at_the_transform(
    name: str, params: dict
) -> None:
    model = build(SHAPE)
    defended = defend(name, model, **params)
    x, y = images(SHAPE, n=8), torch.arange(8) % 10
    surrogate, passes = adaptive.surrogate(defended, {"adaptive": "bpda"})
    assert isinstance(surrogate, adaptive.BPDA)
    assert passes == 1
    with torch.no_grad():
        assert torch.equal(surrogate(x), defended(x))  # bit for bit, not one rounding away
    x_t = defended.transform(x)
    expected = _grad(_loss(model, y), x_t)  # the undefended model's gradient at transform(x)
    got = _grad(_loss(surrogate, y), x)
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with pytest.raises(NotDifferentiableError):  # without BPDA the defense still refuses
        _grad(_loss(defended, y), x)


def test_eot_averages_the_probabilities_and_the_gradient_over_seeded_draws() -> None:
    model, k = build(SHAPE), 5
    x, c = images(SHAPE, n=4), 3
    defended = defend("random_resize_pad", model, max_scale=1.5, seed=7)
    surrogate, passes = adaptive.surrogate(defended, {"adaptive": "eot", "eot_samples": k})
    assert isinstance(surrogate, adaptive.EOT)
    assert passes == k
    got_value = surrogate(x)
    surrogate, _ = adaptive.surrogate(  # from the first draw again
        defend("random_resize_pad", model, max_scale=1.5, seed=7),
        {"adaptive": "eot", "eot_samples": k},
    )
    got_grad = _grad(lambda v: surrogate(v).exp()[:, c].sum(), x)
    # the same draws again: a fresh wrapper with the same seed, one draw per call
    replay = defend("random_resize_pad", model, max_scale=1.5, seed=7)
    probs = [F.softmax(replay(x), 1) for _ in range(k)]
    replay = defend("random_resize_pad", model, max_scale=1.5, seed=7)
    grads = [_grad(lambda v: F.softmax(replay(v), 1)[:, c].sum(), x) for _ in range(k)]
    torch.testing.assert_close(got_value, torch.stack(probs).mean(0).log(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, torch.stack(grads).mean(0), rtol=1e-4, atol=1e-7)
    assert not torch.allclose(grads[0], grads[1])  # the draws do differ


def test_bpda_eot_averages_bpda_surrogates_over_draws() -> None:
    model, k = build(SHAPE), 3
    x, c = images(SHAPE, n=4), 1
    defended = defend("random_resize_pad", model, max_scale=1.5, seed=1)
    surrogate, passes = adaptive.surrogate(defended, {"adaptive": "bpda+eot", "eot_samples": k})
    assert passes == k
    assert isinstance(surrogate.inner, adaptive.BPDA)
    got = _grad(lambda v: surrogate(v).exp()[:, c].sum(), x)
    replay = defend("random_resize_pad", model, max_scale=1.5, seed=1)
    # BPDA: each draw's gradient is the model's softmax gradient at the transformed input
    grads = [
        _grad(lambda z: F.softmax(model(z), 1)[:, c].sum(), replay.transform(x)) for _ in range(k)
    ]
    torch.testing.assert_close(got, torch.stack(grads).mean(0), rtol=1e-4, atol=1e-7)


def test_surrogate_of_a_non_adaptive_defense_is_the_defended_model() -> None:
    blur = defend("gaussian_blur", build(SHAPE))
    assert adaptive.surrogate(blur, {"name": "gaussian_blur"}) == (blur, 1)
    defended = defend("jpeg", build(SHAPE))
    naive, passes = adaptive.surrogate(defended, {"name": "jpeg"})
    assert isinstance(naive, adaptive.Naive)
    assert (naive.defended, passes) == (defended, 1)
    with pytest.raises(InputError, match="adaptive must be one of"):
        adaptive.surrogate(defended, {"adaptive": "bpda+pgd"})
    with pytest.raises(InputError, match="input transform"):
        adaptive.BPDA(build(SHAPE))  # the undefended model has no transform


@pytest.mark.parametrize(
    ("name", "params"),
    [("jpeg", {}), ("bit_depth", {"bits": 2}), ("randomized_smoothing", {"n": 8})],
)
def test_naive_forward_is_the_defended_model_and_its_gradient_is_masked(
    name: str, params: dict
) -> None:
    """What a gradient attack that ignores the defense follows: the defended model's own
    forward, draw for draw, and a zero input gradient; the defense itself still refuses."""
    x = images(SHAPE, n=6)
    y = torch.arange(6) % 10
    defended, twin = defend(name, build(SHAPE), **params), defend(name, build(SHAPE), **params)
    naive = adaptive.naive(twin)
    with torch.no_grad():
        assert torch.equal(defended(x), naive(x))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(naive(xg), y), xg)
    assert grad.shape == x.shape
    assert torch.count_nonzero(grad) == 0
    with pytest.raises(NotDifferentiableError):
        torch.autograd.grad(F.cross_entropy(defended(xg), y), xg)
    assert adaptive.gradient_stats(naive, x, y, 4)["grad_zero_fraction"] == 1.0


def test_evaluate_scores_the_real_defended_model_with_its_own_seeded_draws() -> None:
    model = build(SHAPE)
    x, x_adv = images(SHAPE, n=12), images(SHAPE, n=12).flip(0)
    jpeg = defend("jpeg", model)
    adv, clean = adaptive.evaluate(jpeg, x_adv, x, 5, seed=0)
    with torch.no_grad():
        assert torch.equal(adv, jpeg(x_adv).argmax(1))
        assert torch.equal(clean, jpeg(x).argmax(1))
    rrp = defend("random_resize_pad", model, max_scale=2.0)
    first = adaptive.evaluate(rrp, x_adv, x, 4, seed=3)
    again = adaptive.evaluate(rrp, x_adv, x, 4, seed=3)  # the defense's stream moved on between
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert rrp.generator is not None
    assert rrp.generator.initial_seed() == 0
    assert adaptive.evaluation_seed(0) != 0  # not the defense's own stream at seed 0


def test_masking_metrics_see_the_zero_gradient_of_a_rounding_and_not_through_bpda() -> None:
    model = build(SHAPE)
    x, y = images(SHAPE, n=10), torch.arange(10) % 10
    bits = defend("bit_depth", model, bits=2)
    naive = adaptive.masking_metrics(bits, bits, x, y, 4, randomized=False)
    assert naive["grad_zero_fraction"] == 1.0
    assert naive["grad_l1_median"] == 0.0
    bpda, _ = adaptive.surrogate(bits, {"adaptive": "bpda"})
    through = adaptive.masking_metrics(bits, bpda, x, y, 4, randomized=False)
    assert through["grad_zero_fraction"] == 0.0
    assert through["grad_l1_median"] > 0
    assert through["forward_random_fraction"] == 0.0
    assert through["defense_randomized"] == 0.0
    jpeg = defend("jpeg", model)  # no autograd path at all: zero too
    assert adaptive.masking_metrics(jpeg, jpeg, x, y, 4, randomized=False)[
        "grad_zero_fraction"
    ] == (1.0)
    rrp = defend("random_resize_pad", model, max_scale=2.0)
    random = adaptive.masking_metrics(rrp, rrp, x, y, 4, randomized=True)
    assert random["forward_random_fraction"] > 0.5
    assert random["defense_randomized"] == 1.0

"""``tv_min`` against its objective: optimality certified by the primal-dual gap and by an
independent solver (scipy's SLSQP on the same problem), the behaviour the paper relies on, and
the randomness of its mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import optimize

from tasks import datasets
from tasks.defenses import DEFENSES, Defended
from tasks.defenses.tv_min import (
    TVMin,
    TVMinParams,
    differences,
    differences_adjoint,
    draw_mask,
    minimize_tv,
)
from tests.tasks.test_defense_contract import build

DEFAULTS = TVMinParams()


def defended(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, **params: float
) -> Defended:
    """A random model behind ``tv_min`` with ``params`` (the rest defaults)."""
    return TVMin(TVMinParams.model_validate(params)).wrap(build(shape, dtype))


def objective(z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, weight: float) -> torch.Tensor:
    """``½‖mask ⊙ (z − x)‖² + weight · TV(z)`` per image (anisotropic TV)."""
    return 0.5 * (mask * (z - x)).pow(2).sum((1, 2, 3)) + weight * tv(z)


def tv(z: torch.Tensor) -> torch.Tensor:
    h, v = differences(z)
    return h.abs().sum((1, 2, 3)) + v.abs().sum((1, 2, 3))


def dual_objective(
    dual_h: torch.Tensor, dual_v: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The Fenchel dual at a feasible ``(dual_h, dual_v)``: ``−G*(−Dᵀp)`` with
    ``G(z) = ½‖mask ⊙ (z − x)‖² + ι_[0,1](z)``; a lower bound on the optimal objective."""
    w = -differences_adjoint(dual_h, dual_v)
    mask = mask.to(x.dtype).expand_as(x)
    # the z in [0, 1] attaining sup_z w·z − ½·mask·(z − x)², pixel by pixel
    z = torch.where(mask > 0, (x + w / mask.clamp_min(1e-12)).clamp(0, 1), (w > 0).to(x.dtype))
    return -(w * z - 0.5 * mask * (z - x) ** 2).sum((1, 2, 3))


def noisy_digits(n: int = 64, sigma: float = 0.1) -> torch.Tensor:
    x = datasets.load("digits", datasets.params_of("digits", {})).x[:n].double()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    return (x + sigma * noise).clamp(0, 1)


def mask_for(x: torch.Tensor, keep: float, seed: int = 0) -> torch.Tensor:
    return draw_mask(tuple(x.shape), keep, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep", [0.5, 1.0])
@pytest.mark.parametrize("weight", [0.01, 0.03, 0.1])
def test_default_steps_are_certified_near_optimal(keep: float, weight: float) -> None:
    x = noisy_digits()
    mask = mask_for(x, keep)
    z, dual_h, dual_v = minimize_tv(x, mask, weight, DEFAULTS.steps)
    assert float(dual_h.abs().max()) <= weight
    assert float(dual_v.abs().max()) <= weight
    primal, lower = objective(z, x, mask, weight), dual_objective(dual_h, dual_v, x, mask)
    assert bool((lower <= primal + 1e-12).all())  # weak duality: else the dual is wrong
    gap = (primal - lower) / primal
    assert float(gap.max()) < 0.02, "the default steps leave more than 2 % on the table"
    assert float(gap.mean()) < 2e-3
    z_long, dual_h, dual_v = minimize_tv(x, mask, weight, 4000)
    primal_long = objective(z_long, x, mask, weight)
    gap_long = (primal_long - dual_objective(dual_h, dual_v, x, mask)) / primal_long
    assert float(gap_long.max()) < 1e-4
    assert bool((primal <= primal_long * 1.02).all())


def test_matches_an_independent_solver_of_the_same_problem() -> None:
    """SLSQP on the problem written as a smooth one: z, and the positive and negative parts
    of its differences as variables, ``D z = u⁺ − u⁻``, ``z ∈ [0, 1]``, ``u± ≥ 0``."""
    x = noisy_digits(n=3, sigma=0.2)[:, :, 2:6, 2:6]  # 4×4: 16 + 2·24 variables
    mask = mask_for(x, 0.5, seed=1)
    weight = 0.05
    ours = objective(minimize_tv(x, mask, weight, 4000).z, x, mask, weight)
    for i in range(len(x)):
        xi, mi = x[i, 0].numpy(), mask[i, 0].double().numpy()
        reference = _slsqp(xi, mi, weight)
        assert float(ours[i]) == pytest.approx(reference, rel=1e-5)


def _slsqp(x: np.ndarray, mask: np.ndarray, weight: float) -> float:
    h, w = x.shape
    n = h * w
    d = torch.eye(n, dtype=torch.float64).view(n, 1, h, w)
    dh, dv = differences(d)
    D = torch.cat([dh.reshape(n, -1), dv.reshape(n, -1)], 1).T.numpy()  # (m, n)
    m = len(D)

    def f(v: np.ndarray) -> float:
        z = v[:n].reshape(h, w)
        return float(0.5 * ((mask * (z - x)) ** 2).sum() + weight * v[n:].sum())

    def grad(v: np.ndarray) -> np.ndarray:
        z = v[:n].reshape(h, w)
        return np.concatenate([(mask**2 * (z - x)).ravel(), np.full(2 * m, weight)])

    a = np.hstack([D, -np.eye(m), np.eye(m)])
    start = np.concatenate([x.ravel(), np.maximum(D @ x.ravel(), 0), np.maximum(-D @ x.ravel(), 0)])
    result = optimize.minimize(
        f,
        start,
        jac=grad,
        method="SLSQP",
        bounds=[(0, 1)] * n + [(0, None)] * (2 * m),
        constraints={"type": "eq", "fun": lambda v: a @ v, "jac": lambda v: a},
        options={"maxiter": 2000, "ftol": 1e-14},
    )
    assert result.success, result.message
    return float(result.fun)


def test_lowers_the_objective_of_noisy_images() -> None:
    x = noisy_digits()
    z = defended((1, 8, 8), torch.float64).transform(x)
    mask = mask_for(x, DEFAULTS.keep, seed=DEFAULTS.seed)  # the wrapper's first draw
    assert torch.equal(z, minimize_tv(x, mask, DEFAULTS.weight, DEFAULTS.steps).z)
    before = objective(x, x, mask, DEFAULTS.weight)  # the input itself: weight · TV(x)
    after = objective(z, x, mask, DEFAULTS.weight)
    assert bool((after < 0.8 * before).all())
    assert float(tv(z).mean()) < 0.7 * float(tv(x).mean())


def test_piecewise_constant_images_are_nearly_fixed_points() -> None:
    flat = torch.full((2, 3, 8, 8), 0.3, dtype=torch.float64)
    assert torch.allclose(minimize_tv(flat, mask_for(flat, 0.5), 0.03, 200).z, flat, atol=1e-12)
    # straight edges only: where edges meet (corners, T-junctions) a dropped pixel's value is
    # a tie of the objective, which any value between its neighbours' solves
    stripes = torch.zeros(4, 1, 16, 16, dtype=torch.float64)
    stripes[:, :, :, 4:8], stripes[:, :, :, 12:] = 0.6, 0.9
    for keep, bound in [(0.5, 0.05), (1.0, 0.02)]:
        out = minimize_tv(stripes, mask_for(stripes, keep), 0.03, 200).z
        # TV lowers a region's contrast by about weight · edge length / kept area: a 4-pixel
        # stripe, half of it kept, by 0.03 · 32 / 32
        assert float((out - stripes).abs().max()) < bound


def test_a_higher_weight_gives_a_lower_total_variation() -> None:
    x, weights = noisy_digits(), [0.003, 0.01, 0.03, 0.1, 0.3]
    mask = mask_for(x, 0.5)
    outs = [minimize_tv(x, mask, w, 400).z for w in weights]
    variations = [float(tv(z).mean()) for z in outs]
    fidelities = [float((mask * (z - x)).pow(2).sum()) for z in outs]
    assert variations == sorted(variations, reverse=True)
    assert len(set(variations)) == len(variations)
    assert fidelities == sorted(fidelities)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 1.0])
def test_the_mask_keeps_a_keep_share_of_locations_shared_by_channels(keep: float) -> None:
    mask = draw_mask((500, 3, 8, 8), keep, torch.Generator().manual_seed(0))
    assert mask.shape == (500, 1, 8, 8)
    assert mask.dtype == torch.bool
    share, n = float(mask.float().mean()), mask.numel()
    assert abs(share - keep) <= 4 * (keep * (1 - keep) / n) ** 0.5 + 1e-12
    per_location = mask.float().mean(0)  # no location favoured
    assert float((per_location - keep).abs().max()) <= 4 * (keep * (1 - keep) / 500) ** 0.5
    # identical channels stay identical: one mask for all of them
    x = noisy_digits(n=16).expand(16, 3, 8, 8).contiguous()
    z = defended((3, 8, 8), torch.float64, keep=keep).transform(x)
    assert torch.equal(z[:, 0], z[:, 1])
    assert torch.equal(z[:, 0], z[:, 2])


def test_draws_are_deterministic_under_a_seed_and_differ_otherwise() -> None:
    x = noisy_digits(n=32).float()
    assert DEFENSES.get("tv_min").obj is TVMin  # what a study's `name: tv_min` builds

    def stream(seed: int) -> list[torch.Tensor]:
        wrapper = defended((1, 8, 8), seed=seed)
        return [wrapper.transform(x) for _ in range(3)]

    first, again, other = stream(0), stream(0), stream(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # each call draws a fresh mask
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_a_batch_of_256_digits_keeps_dtype_range_and_input() -> None:
    x = datasets.load("digits", datasets.params_of("digits", {})).x[:256]
    before = x.clone()
    z = defended((1, 8, 8)).transform(x)
    assert torch.equal(x, before)
    assert z.shape == x.shape
    assert z.dtype == torch.float32
    assert float(z.min()) >= 0.0
    assert float(z.max()) <= 1.0
    assert float((z - x).abs().mean()) > 0.01  # it did something

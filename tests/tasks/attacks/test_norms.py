"""Norm-ball geometry: projections land in the ball and leave inside points alone."""

from __future__ import annotations

import pytest
import torch

from tasks.attacks import ATTACKS
from tasks.attacks.norms import BALLS


@pytest.mark.parametrize("norm", sorted(BALLS))
def test_projection_lands_in_the_ball_and_is_idempotent(norm: str) -> None:
    geo = BALLS[norm]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    eps = {"linf": 0.1, "l2": 1.0, "l1": 3.0}[norm]
    far = x + torch.randn(x.shape, generator=g)
    proj = geo.project(far, x, eps)
    assert float(geo.norm(proj - x).max()) <= eps + 1e-5
    assert float(proj.min()) >= 0
    assert float(proj.max()) <= 1
    assert torch.allclose(geo.project(proj, x, eps), proj, atol=1e-6)
    near = x + 0.1 * geo.random_start(x, eps, g)
    near = near.clamp(0, 1)
    assert torch.allclose(geo.project(near, x, eps), near, atol=1e-6)
    start = geo.random_start(x, eps, g)
    assert float(geo.norm(start).max()) <= eps + 1e-5


def test_l1_projection_is_the_closest_point() -> None:
    """Duchi et al.'s projection beats random points of the ball on Euclidean distance."""
    geo = BALLS["l1"]
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, 1, 4, 4, generator=g) * 2
    x = torch.full_like(v, 0.5)  # far from the box edges: the box clip changes nothing
    proj = geo.project(x + v * 0.1, x, 0.3) - x
    cands = geo.random_start(torch.zeros(2000, 1, 4, 4), 0.3, g)
    d_proj = float((proj - v * 0.1).norm())
    d_cands = (cands - v * 0.1).flatten(1).norm(dim=1)
    assert d_proj <= float(d_cands.min()) + 1e-6


def test_pgd_l1_lowers_accuracy(trained) -> None:
    attack = ATTACKS.get("pgd").obj(
        ATTACKS.params_of("pgd", {"norm": "l1", "eps": 4.0, "steps": 40, "step_size": 0.5})
    )
    out = attack(trained.model, trained.x, trained.y)
    assert float(BALLS["l1"].norm(out.x_adv - trained.x).max()) <= 4.0 + 1e-4
    assert float(out.success.float().mean()) > 0.3

"""Random noise at the attack's budget — the baseline that shows what an attack adds.

Uniform: a point drawn uniformly from the ball (L∞: the cube; L2: the ball, as PGD's random
start). Gaussian: ``N(0, σ²)`` with ``σ = eps`` for L∞ and ``σ = eps / √d`` for L2,
projected onto the ball. No gradients, one scoring forward pass per sample.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import ball
from tasks.attacks.params import FixedBudgetParams


class NoiseParams(FixedBudgetParams):
    norm: Literal["linf", "l2"] = "linf"
    distribution: Literal["uniform", "gaussian"] = "uniform"


@register("noise")
class Noise(FixedBudgetAttack):
    """Baseline: uniform or Gaussian noise of the same budget (no gradients, no queries)."""

    Params = NoiseParams
    params: NoiseParams
    baseline: ClassVar[bool] = True

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, geometry = self.params, ball(self.params.norm)
        if p.distribution == "uniform":
            return x + geometry.random_start(x, p.eps, generator)
        sigma = p.eps if p.norm == "linf" else p.eps / x[0].numel() ** 0.5
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return geometry.project(x + sigma * noise, x, p.eps)

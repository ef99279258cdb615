"""FGSM — the fast gradient sign method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

Threat model: white-box, L∞ ball of radius ``eps`` around ``x``, inputs in [0, 1].
One step: ``x' = clip[0,1](x + eps · sign(∇ₓ CE(f(x), y)))``; targeted:
``x' = clip[0,1](x − eps · sign(∇ₓ CE(f(x), t)))``. Shapes: ``x`` ``(N, C, H, W)``,
``y`` ``(N,)`` int64. Cost: one forward and one backward pass per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.params import FixedBudgetParams


class FGSMParams(FixedBudgetParams):
    norm: Literal["linf"] = "linf"


@register("fgsm")
class FGSM(FixedBudgetAttack):
    """Fast gradient sign method: one L∞ step of size eps (Goodfellow et al. 2015)."""

    Params = FGSMParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        _, grad = self.loss_grad(model, x, y, target)
        return torch.clamp(x + self.params.eps * grad.sign(), min=0, max=1)

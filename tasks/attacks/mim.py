"""MI-FGSM — momentum iterative fast gradient sign method.

Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018.

Threat model: white-box, ``‖x' − x‖∞ ≤ eps``, inputs in [0, 1]. Accumulates a velocity
``g ← decay·g + ∇ / mean|∇|`` (the gradient normalized by its per-sample mean absolute
value) and steps ``x ← Π(x + step_size·sign(g))``. Momentum stabilizes the direction and
makes the examples transfer better than BIM's. Defaults: ``steps=10``, ``decay=1.0``,
``step_size = eps / steps`` (the paper's choice), no random start.
Cost: ``steps`` forward and backward passes per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import LinfBall
from tasks.attacks.params import FixedBudgetParams, StepRule
from tasks.params import Number


class MIMParams(FixedBudgetParams, StepRule):
    norm: Literal["linf"] = "linf"
    steps: int = Field(10, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default: eps / steps")
    decay: float = Field(1.0, ge=0)

    def default_step_size(self) -> float:
        return self.eps / self.steps  # the paper's choice, filled in


@register("mim")
class MIM(FixedBudgetAttack):
    """Momentum iterative FGSM: L∞ sign steps on an accumulated gradient (Dong et al. 2018)."""

    Params = MIMParams
    params: MIMParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, x_adv = self.params, x.clone()
        step = p.resolved_step_size
        velocity = torch.zeros_like(x)
        dims = tuple(range(1, x.dim()))
        for _ in range(p.steps):
            _, grad = self.loss_grad(model, x_adv, y, target)
            grad = grad / grad.abs().mean(dim=dims, keepdim=True)
            velocity = p.decay * velocity + grad
            x_adv = LinfBall.project(x_adv + step * velocity.sign(), x, p.eps)
        return x_adv

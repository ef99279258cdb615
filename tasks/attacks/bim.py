"""BIM / I-FGSM and ILLC — iterative fast gradient sign steps in an L∞ ball.

Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical World", ICLR workshop
2017 (arXiv:1607.02533).

Threat model: white-box, ``‖x' − x‖∞ ≤ eps``, inputs in [0, 1]. From ``x`` (no random
start), ``steps`` sign steps of ``step_size``, each clipped back into the ball and [0, 1].
The paper's defaults: ``step_size = 1/255`` and ``steps = min(eps·255 + 4, 1.25·eps·255)``
(used when ``steps`` is not given). ILLC, the iterative least-likely class method of the
same paper, is BIM targeted at the class the model finds least likely on the clean input.
Cost: ``steps`` forward and backward passes per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import LinfBall
from tasks.attacks.params import FixedBudgetParams
from tasks.params import Number


class BIMParams(FixedBudgetParams):
    norm: Literal["linf"] = "linf"
    steps: int | None = Field(None, ge=1, description="default: min(eps·255 + 4, 1.25·eps·255)")
    step_size: Number = Field(1 / 255, gt=0)

    @model_validator(mode="after")
    def _default_steps(self) -> BIMParams:
        if self.steps is None:
            steps = int(min(self.eps * 255 + 4, 1.25 * self.eps * 255))
            object.__setattr__(self, "steps", max(1, steps))
        return self


@register("bim")
class BIM(FixedBudgetAttack):
    """Basic iterative method (I-FGSM): repeated L∞ sign steps, no random start (Kurakin 2016)."""

    Params = BIMParams
    params: BIMParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, x_adv = self.params, x.clone()
        for _ in range(int(p.steps or 1)):
            _, grad = self.loss_grad(model, x_adv, y, target)
            x_adv = LinfBall.project(x_adv + p.step_size * grad.sign(), x, p.eps)
        return x_adv


class ILLCParams(BIMParams):
    targeted: bool = True
    target: Literal["random", "least_likely"] | int = "least_likely"


@register("illc")
class ILLC(BIM):
    """Iterative least-likely class: BIM targeted at the clean input's least likely class."""

    Params = ILLCParams

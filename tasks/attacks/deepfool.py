"""DeepFool — the minimal perturbation to the nearest decision boundary, by linearization.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016.

Threat model: white-box, untargeted, minimum norm (``l2`` or ``linf``), inputs in [0, 1].
At each step the classifier is linearized around the current point; among the
``candidates`` most likely classes of the clean input, the boundary with the smallest
distance ``|f_k| / ‖w_k‖_*`` (``f_k = z_k − z_y``, ``w_k = ∇z_k − ∇z_y``, dual norm
``‖·‖_*``) is crossed with a step of that length, and the accumulated perturbation is
applied with a ``1 + overshoot`` factor. A sample stops once misclassified; ``steps`` caps
the iterations. There is no fixed budget: ``eps`` lists the budgets at which success is
counted (a sample fooled with a perturbation norm ≤ b counts at budget b). Cost per step:
one forward and ``candidates + 1`` backward passes per sample still being attacked.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams


class DeepFoolParams(MinNormParams):
    norm: Literal["l2", "linf"] = "l2"
    steps: int = Field(50, ge=1)
    overshoot: NonNegativeFloat = 0.02
    candidates: int = Field(10, ge=2, description="most likely classes considered")

    goals = "untargeted"
    refusal = "deepfool is untargeted: it crosses the nearest boundary"


@register("deepfool")
class DeepFool(MinNormAttack):
    """DeepFool: minimal L2 or L∞ step to the nearest linearized boundary (Moosavi 2016)."""

    Params = DeepFoolParams
    params: DeepFoolParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p = self.params
        with torch.inference_mode():
            order = model(x).argsort(1, descending=True)
        candidates = order[:, : min(p.candidates, order.shape[1])].clone()
        r_tot, x_adv = torch.zeros_like(x), x.clone()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(p.steps):
            idx = active.nonzero()[:, 0]
            if len(idx) == 0:
                break
            step, still = self._step(model, x_adv[idx], y[idx], candidates[idx])
            upd = idx[still]
            r_tot[upd] += step[still]
            x_adv[upd] = (x[upd] + (1 + p.overshoot) * r_tot[upd]).clamp(0, 1)
            active[idx[~still]] = False
        return x_adv

    def _step(
        self, model: nn.Module, xa: torch.Tensor, y: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step to the nearest boundary, and which samples are still classified y."""
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        z_y = logits.gather(1, y[:, None])[:, 0]
        grad_y = torch.autograd.grad(z_y.sum(), xa, retain_graph=True)[0]
        best_r = torch.full_like(z_y, float("inf"))
        best_step = torch.zeros_like(xa)
        shape = (-1,) + (1,) * (xa.dim() - 1)
        for j in range(candidates.shape[1]):
            c = candidates[:, j]
            z_c = logits.gather(1, c[:, None])[:, 0]
            w = torch.autograd.grad(z_c.sum(), xa, retain_graph=True)[0] - grad_y
            f = (z_c - z_y).detach().abs()
            flat = w.flatten(1)
            dual = flat.norm(p=2, dim=1) if self.params.norm == "l2" else flat.norm(p=1, dim=1)
            r = torch.where(c == y, torch.inf, f / (dual + 1e-8))
            if self.params.norm == "l2":
                step = ((f + 1e-4) / (dual**2 + 1e-8)).view(shape) * w
            else:
                step = ((f + 1e-4) / (dual + 1e-8)).view(shape) * w.sign()
            better = r < best_r
            best_r, best_step[better] = torch.where(better, r, best_r), step[better]
        return best_step.detach(), (logits.argmax(1) == y).detach()

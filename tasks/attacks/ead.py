"""EAD — the elastic-net attack: C&W's objective with an L1 term, solved by FISTA.

Chen, Sharma, Zhang, Yi & Hsieh, "EAD: Elastic-Net Attacks to Deep Neural Networks via
Adversarial Examples", AAAI 2018.

Threat model: white-box, minimum L1 norm, inputs in [0, 1], untargeted or targeted.
Minimizes ``c · f(x') + β‖x' − x‖₁ + ‖x' − x‖₂²`` over the box, with
``f = max(z_y − max_{i≠y} z_i, −κ)`` (targeted: ``max(max_{i≠t} z_i − z_t, −κ)``). Step
``k = 1 … steps`` takes a gradient step on the smooth part ``c · f + ‖·‖₂²`` at the slack
point ``y_{k−1}`` (``y_0 = x_0 = x``; learning rate ``lr · (1 − (k − 1) / steps)^½``),
applies the elementwise shrinkage-thresholding ``S_β`` around ``x`` and projects onto
[0, 1] to get ``x_k``, then moves the slack point with FISTA momentum,
``y_k = x_k + k / (k + 3) · (x_k − x_{k−1})``.
Each sample's ``c`` is then adjusted by binary search over ``search_steps`` rounds, each
starting again from ``x``: down after a success, up (×10 until bracketed) after a failure.
Among the successful iterates a sample keeps the one the ``decision`` rule prefers:
``l1`` (EAD-L1) the smallest ``‖δ‖₁``, ``en`` the smallest ``β‖δ‖₁ + ‖δ‖₂²``. A sample
never fooled is returned unchanged. ``eps`` lists the L1 budgets at which success is
counted. Defaults follow the paper: ``c = 1e-3``, ``β = 1e-3``, ``κ = 0``, 100 steps,
9 search rounds, ``lr = 0.01``, the elastic-net rule. Cost: ``steps · search_steps``
backward and ``2 · steps · search_steps`` forward passes per sample (the gradient at
``y_k`` and the check of ``x_k``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams


class EADParams(MinNormParams):
    norm: Literal["l1"] = "l1"
    c: float = Field(1e-3, gt=0, description="initial trade-off constant")
    beta: NonNegativeFloat = Field(1e-3, description="weight of the L1 term")
    kappa: NonNegativeFloat = Field(0.0, description="confidence margin")
    steps: int = Field(100, ge=1)
    search_steps: int = Field(9, ge=1)
    lr: float = Field(0.01, gt=0)
    decision: Literal["l1", "en"] = Field(
        "en", description="which successful iterate to keep: smallest L1 or elastic net"
    )


@register("ead")
class EAD(MinNormAttack):
    """EAD: elastic-net C&W objective by FISTA, binary search over c (Chen et al. 2018)."""

    Params = EADParams
    params: EADParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, n = self.params, len(x)
        c = torch.full((n,), p.c, device=x.device)
        lower, upper = torch.zeros_like(c), torch.full_like(c, float("inf"))
        best, best_dist = x.clone(), torch.full_like(c, float("inf"))
        for _ in range(p.search_steps):
            hit = self._optimize(model, x, y, target, c, best, best_dist)
            upper = torch.where(hit, torch.minimum(upper, c), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, c))
            c = torch.where(upper.isinf(), c * 10, (lower + upper) / 2)
        return best

    def _optimize(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        c: torch.Tensor,
        best: torch.Tensor,
        best_dist: torch.Tensor,
    ) -> torch.Tensor:
        """One round at fixed ``c``; updates ``best``/``best_dist`` in place; returns hits."""
        p, n = self.params, len(x)
        per_sample = (n,) + (1,) * (x.dim() - 1)
        x_k, slack = x.clone(), x.clone()
        hit = torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(p.steps):
            lr = p.lr * (1 - k / p.steps) ** 0.5
            grad = self._smooth_grad(model, x, y, target, c, slack)
            with torch.no_grad():
                x_next = self._shrink(slack - lr * grad, x)
                slack = x_next + (k + 1) / (k + 4) * (x_next - x_k)
                x_k = x_next
                margin = _margin(model(x_k), y, target)
                now = margin < 0 if p.kappa == 0 else margin <= -p.kappa
                delta = (x_k - x).flatten(1)
                l1 = delta.abs().sum(1)
                dist = l1 if p.decision == "l1" else p.beta * l1 + delta.pow(2).sum(1)
                better = now & (dist < best_dist)
                best.copy_(torch.where(better.view(per_sample), x_k, best))
                best_dist.copy_(torch.where(better, dist, best_dist))
                hit |= now
        return hit

    def _smooth_grad(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        c: torch.Tensor,
        point: torch.Tensor,
    ) -> torch.Tensor:
        """∇ of ``c · f + ‖· − x‖₂²`` at ``point``: one forward and one backward pass."""
        point = point.detach().requires_grad_(True)
        margin = _margin(model(point), y, target).clamp(min=-self.params.kappa)
        l2 = (point - x).flatten(1).pow(2).sum(1)
        grad = torch.autograd.grad((c * margin + l2).sum(), point)[0]
        return grad

    def _shrink(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``S_β`` around ``x``: shrink each value's change by β, then project onto [0, 1]."""
        d = z - x
        return (x + d.sign() * (d.abs() - self.params.beta).clamp(min=0)).clamp(0, 1)


def _margin(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """Positive while the attack has not succeeded."""
    goal = y if t is None else t
    z_goal = logits.gather(1, goal[:, None])[:, 0]
    z_other = logits.scatter(1, goal[:, None], float("-inf")).amax(1)
    return z_goal - z_other if t is None else z_other - z_goal

"""C&W L2 — Carlini & Wagner's optimization attack, with a binary search over ``c``.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.

Threat model: white-box, minimum L2 norm, inputs in [0, 1] (enforced by the change of
variables ``x' = (tanh(w) + 1) / 2``), untargeted or targeted. Minimizes
``‖x' − x‖₂² + c · max(z_y − max_{i≠y} z_i, −κ)`` (targeted:
``max(max_{i≠t} z_i − z_t, −κ)``) with Adam for ``steps`` iterations, then adjusts each
sample's ``c`` by binary search over ``search_steps`` rounds: down after a success, up
(×10 until bracketed) after a failure. A sample keeps its smallest successful
perturbation; a sample never fooled is returned unchanged. ``eps`` lists the budgets at
which success is counted. With ``abort_early`` (the reference code's default) a round stops
when the total loss, checked at steps 0, ``steps/10``, ``2·steps/10``, … as there, has not
fallen by 0.01 % since the previous check. Cost: at most ``steps · search_steps`` forward
and backward passes per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, NonNegativeFloat
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams


class CWParams(MinNormParams):
    norm: Literal["l2"] = "l2"
    c: float = Field(1.0, gt=0, description="initial trade-off constant")
    kappa: NonNegativeFloat = Field(0.0, description="confidence margin")
    steps: int = Field(100, ge=1)
    search_steps: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    abort_early: bool = Field(True, description="stop a round once the loss stalls")


@register("cw_l2")
class CWL2(MinNormAttack):
    """Carlini-Wagner L2: Adam in tanh space, binary search over c (Carlini & Wagner 2017)."""

    Params = CWParams
    params: CWParams

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
        best, best_l2 = x.clone(), torch.full_like(c, float("inf"))
        w0 = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        for _ in range(p.search_steps):
            hit = self._optimize(model, x, y, target, w0, c, best, best_l2)
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
        w0: torch.Tensor,
        c: torch.Tensor,
        best: torch.Tensor,
        best_l2: torch.Tensor,
    ) -> torch.Tensor:
        """One round at fixed ``c``; updates ``best``/``best_l2`` in place; returns hits."""
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.params.lr)
        hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        check, previous = max(self.params.steps // 10, 1), float("inf")
        for step in range(self.params.steps):
            x_adv = (torch.tanh(w) + 1) / 2
            logits = model(x_adv)
            l2 = (x_adv - x).flatten(1).pow(2).sum(1)
            margin = self._margin(logits, y, target)
            loss = (l2 + c * margin.clamp(min=-self.params.kappa)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                now = margin < 0 if self.params.kappa == 0 else margin <= -self.params.kappa
                better = now & (l2 < best_l2)
                best[better], best_l2[better] = x_adv[better].detach(), l2[better].detach()
                hit |= now
            if self.params.abort_early and step % check == 0:  # steps 0, s/10, 2s/10, …
                total = float(loss.detach())  # one host sync every steps / 10 iterations
                if total > previous * 0.9999:
                    break
                previous = total
        return hit

    @staticmethod
    def _margin(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """Positive while the attack has not succeeded."""
        goal = y if t is None else t
        z_goal = logits.gather(1, goal[:, None])[:, 0]
        z_other = logits.scatter(1, goal[:, None], float("-inf")).amax(1)
        return z_goal - z_other if t is None else z_other - z_goal

"""PGD — projected gradient descent on the loss, in an L∞, L2 or L1 ball.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018.

Threat model: white-box, ``‖x' − x‖ ≤ eps`` in ``norm`` (``linf``, ``l2``, or ``l1`` with
sparse steps, see ``norms.L1Ball``), inputs in [0, 1]. From ``x`` (or a random point of the
ball when ``random_start``: uniform in the L∞ cube; for L2 a uniform direction at a radius
uniform in ``[0, eps]``), take ``steps`` ascent steps of ``step_size`` on the
cross-entropy (descent on the target's for targeted attacks), projecting onto the ball and
[0, 1] after each. Defaults: ``steps=10``, ``step_size = 2.5 · eps / steps`` (Madry et al.'s
rule), random start on, one restart. With ``restarts > 1`` each sample keeps the first
restart that succeeds, else the one with the highest loss. ``early_stop`` stops attacking a
sample as soon as it is fooled (as AutoAttack does): the trajectories are the same until
then, so robust accuracy is never higher, for less work; but the examples sit just across the
boundary, so the default (off) keeps full-length attacks, whose examples are the ones
transfer tables need.
Cost per restart: ``steps`` forward and backward passes per sample.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import ball
from tasks.attacks.params import FixedBudgetParams, PGDStepRule
from tasks.params import Number


class PGDParams(FixedBudgetParams, PGDStepRule):
    norm: Literal["linf", "l2", "l1"] = "linf"
    steps: int = Field(10, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default: 2.5 · eps / steps")
    random_start: bool = True
    restarts: int = Field(1, ge=1)
    early_stop: bool = Field(
        False, description="stop attacking a sample once fooled (robust accuracy only)"
    )


@register("pgd")
class PGD(FixedBudgetAttack):
    """Projected gradient descent in an L∞, L2 or L1 ball; random start, restarts (Madry 2018)."""

    Params = PGDParams
    params: PGDParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, geometry = self.params, ball(self.params.norm)
        step = p.resolved_step_size
        best, best_loss = x.clone(), torch.full((len(x),), -torch.inf, device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(p.restarts):
            x_adv = x.clone()
            if p.random_start:
                x_adv = torch.clamp(x + geometry.random_start(x, p.eps, generator), 0, 1)
            if p.early_stop:
                x_adv = self._until_fooled(model, x, y, target, x_adv)
            for _ in range(0 if p.early_stop else p.steps):
                _, grad = self.loss_grad(model, x_adv, y, target)
                x_adv = geometry.project(x_adv + step * geometry.ascent(grad), x, p.eps)
            if p.restarts == 1:
                return x_adv
            loss, hit = self._score(model, x_adv, y, target)
            take = ~done & (hit | (loss > best_loss))
            best[take], best_loss[take] = x_adv[take], loss[take]
            done |= hit
        return best

    def _score(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss being ascended and success, from one forward pass."""
        with torch.inference_mode():
            logits = model(x_adv).float()
        if target is None:
            return F.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y
        return -F.cross_entropy(logits, target, reduction="none"), logits.argmax(1) == target

    def _until_fooled(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        x_adv: torch.Tensor,
    ) -> torch.Tensor:
        """The steps on the samples not yet fooled only; a fooled sample keeps its point."""
        p, geometry = self.params, ball(self.params.norm)
        idx = torch.arange(len(x), device=x.device)
        for _ in range(p.steps):
            t = None if target is None else target[idx]
            logits, grad = self.loss_grad(model, x_adv[idx], y[idx], t)
            pred = logits.argmax(1)
            going = pred != t if t is not None else pred == y[idx]
            idx, grad = idx[going], grad[going]
            if len(idx) == 0:
                break
            stepped = x_adv[idx] + p.resolved_step_size * geometry.ascent(grad)
            x_adv[idx] = geometry.project(stepped, x[idx], p.eps)
        return x_adv

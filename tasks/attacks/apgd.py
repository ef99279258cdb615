"""APGD — auto-PGD with a step-size schedule that needs no tuning, and its variants.

Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse
Parameter-free Attacks", ICML 2020.

Threat model: white-box, ``‖x' − x‖ ≤ eps`` in ``norm`` (``linf`` or ``l2``), inputs in
[0, 1]. The step starts at ``2·eps`` and follows a momentum update
``x ← Π(x + 0.75·(z − x) + 0.25·(x − x_prev))`` with ``z = Π(x + η·ascent(∇))``. At
checkpoints (after 22 % of the budget, then at intervals shrinking by 3 % to at least 6 %)
a sample's step is halved and it restarts from its best point when fewer than ``rho`` of
the steps since the last checkpoint raised its loss, or when neither step nor best loss
changed since then. Losses: cross-entropy (``apgd_ce``), the difference of logits ratio
(``apgd_dlr``; invariant to shifting and rescaling the logits), and ``apgd_t``: the
targeted DLR loss against each of the ``n_target_classes`` most likely wrong classes in
turn, for untargeted success. Samples already fooled are not attacked again by later
restarts or targets. A fooled sample returns the adversarial point found; any other its
highest-loss point. Cost: ``steps + 1`` forward and backward passes per sample, per
restart and target, for the samples still being attacked.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import ball
from tasks.attacks.params import FixedBudgetParams


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample difference of logits ratio: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)."""
    z, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None])[:, 0]
    top_is_y = (logits.argmax(1) == y).float()
    other = z[:, -2] * top_is_y + z[:, -1] * (1 - top_is_y)
    return -(z_y - other) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)."""
    z, _ = logits.sort(dim=1)
    z_y, z_t = logits.gather(1, y[:, None])[:, 0], logits.gather(1, t[:, None])[:, 0]
    return -(z_y - z_t) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


class APGDParams(FixedBudgetParams):
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    rho: float = Field(0.75, gt=0, le=1, description="share of loss-raising steps to keep η")
    random_start: bool = True


class APGDTParams(APGDParams):
    n_target_classes: int = Field(9, ge=1, description="most likely wrong classes to target")


@register("apgd_ce")
class APGDCE(FixedBudgetAttack):
    """Auto-PGD on the cross-entropy: PGD with momentum and a self-tuning step (Croce 2020)."""

    Params = APGDParams
    params: APGDParams
    loss: ClassVar[str] = "ce"

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        out = x.clone()
        todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for loss_target in self._loss_targets(model, x, target):
            for _ in range(self.params.restarts):
                idx = todo.nonzero()[:, 0]
                if len(idx) == 0:
                    return out
                x_run, hit = self._run(
                    model, x[idx], y[idx], _take(loss_target, idx), _take(target, idx), generator
                )
                out[idx] = x_run
                todo[idx[hit]] = False
        return out

    def _loss_targets(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor | None
    ) -> list[torch.Tensor | None]:
        return [target]

    def _losses(
        self, logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> torch.Tensor:
        if self.loss == "ce":
            return (
                F.cross_entropy(logits, y, reduction="none")
                if t is None
                else (-F.cross_entropy(logits, t, reduction="none"))
            )
        return dlr_loss(logits, y) if t is None else dlr_targeted_loss(logits, y, t)

    def _grad(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        losses = self._losses(logits, y, t)
        grad = torch.autograd.grad(losses.sum(), x_adv)[0]
        return logits.detach(), losses.detach(), grad

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_t: torch.Tensor | None,
        goal_t: torch.Tensor | None,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run; returns (points, success mask)."""
        p, geo, n_steps = self.params, ball(self.params.norm), self.params.steps
        x_adv = x.clone()
        if p.random_start:
            x_adv = geo.project(x + geo.random_start(x, p.eps, gen), x, p.eps)
        step = torch.full((len(x),) + (1,) * (x.dim() - 1), 2 * p.eps, device=x.device)
        logits, loss, grad = self._grad(model, x_adv, y, loss_t)
        state = _Best(x_adv, loss, grad, self._hit(logits, y, goal_t))
        x_prev, history = x_adv, [loss]
        period, since = max(int(0.22 * n_steps), 1), 0
        for i in range(n_steps):
            a = 0.75 if i > 0 else 1.0
            z = geo.project(x_adv + step * geo.ascent(grad), x, p.eps)
            x_prev, x_adv = (
                x_adv,
                geo.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, p.eps),
            )
            logits, loss, grad = self._grad(model, x_adv, y, loss_t)
            state.update(x_adv, loss, grad, self._hit(logits, y, goal_t))
            history.append(loss)
            since += 1
            if since == period:
                reduce = state.checkpoint(history, period, p.rho)
                step[reduce] /= 2
                x_adv, grad = x_adv.clone(), grad.clone()
                x_adv[reduce], grad[reduce] = state.x_best[reduce], state.grad_best[reduce]
                period = max(period - max(int(0.03 * n_steps), 1), max(int(0.06 * n_steps), 1))
                since = 0
        return torch.where(_expand(state.fooled, x), state.x_found, state.x_best), state.fooled

    @staticmethod
    def _hit(logits: torch.Tensor, y: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == goal if goal is not None else pred != y


def _take(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[idx]


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


class _Best:
    """Per-sample bookkeeping of one APGD run: best loss point and first success."""

    def __init__(
        self, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor, hit: torch.Tensor
    ) -> None:
        self.x_best, self.loss_best, self.grad_best = x.clone(), loss.clone(), grad.clone()
        self.x_found, self.fooled = x.clone(), hit.clone()
        self.best_at_check = loss.clone()
        self.reduced_at_check = torch.zeros_like(hit)

    def update(
        self, x: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor, hit: torch.Tensor
    ) -> None:
        self.x_found[hit] = x[hit]
        self.fooled |= hit
        better = loss > self.loss_best
        self.x_best[better], self.grad_best[better] = x[better], grad[better]
        self.loss_best[better] = loss[better]

    def checkpoint(self, history: list[torch.Tensor], period: int, rho: float) -> torch.Tensor:
        """Which samples halve their step now (the paper's two conditions)."""
        recent = torch.stack(history[-period - 1 :])
        raised = (recent[1:] > recent[:-1]).sum(0)
        oscillating = raised <= period * rho
        stalled = ~self.reduced_at_check & (self.best_at_check >= self.loss_best)
        reduce = oscillating | stalled
        self.reduced_at_check, self.best_at_check = reduce, self.loss_best.clone()
        return reduce


@register("apgd_dlr")
class APGDDLR(APGDCE):
    """Auto-PGD on the difference-of-logits-ratio loss, robust to logit rescaling (Croce 2020)."""

    loss = "dlr"


@register("apgd_t")
class APGDT(APGDCE):
    """Targeted auto-PGD (DLR) against the top wrong classes in turn, for misclassification."""

    Params = APGDTParams
    params: APGDTParams
    loss = "dlr"

    def _loss_targets(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor | None
    ) -> list[torch.Tensor | None]:
        if target is not None:
            return [target]
        with torch.inference_mode():
            order = model(x).argsort(dim=1)
        k = min(self.params.n_target_classes, order.shape[1] - 1)
        return [order[:, -(i + 2)].clone() for i in range(k)]

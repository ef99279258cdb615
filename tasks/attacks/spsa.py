"""SPSA — gradient-free attack by simultaneous-perturbation gradient estimates (L∞).

Uesato, O'Donoghue, van den Oord & Kohli, "Adversarial Risk and the Dangers of Evaluating
Against Weak Attacks", ICML 2018.

Threat model: black-box with scores (logits only), ``‖x' − x‖∞ ≤ eps``, inputs in [0, 1].
Each step estimates the gradient of the margin loss ``z_y − max_{i≠y} z_i`` (targeted:
``max_{i≠t} z_i − z_t``) from ``samples`` pairs of Rademacher probes ``x ± delta·v`` and
descends it with Adam (``lr``), projecting onto the ball and [0, 1]. Samples whose margin is
already negative stop early. Queries per step: ``2·samples`` (plus one to check); at most
``steps`` steps, fewer when ``max_queries`` caps the queries per sample. Probes are scored
in chunks of at most 8192 inputs, so memory does not grow with ``samples``. Defaults follow
the paper's evaluation: ``delta = lr = 0.01``.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.norms import LinfBall
from tasks.attacks.params import FixedBudgetParams

_PROBE_BATCH = 8192  # probe inputs scored per forward pass


class SPSAParams(FixedBudgetParams):
    norm: Literal["linf"] = "linf"
    steps: int = Field(100, ge=1)
    samples: int = Field(64, ge=1, description="probe pairs per gradient estimate")
    delta: float = Field(0.01, gt=0, description="probe size")
    lr: float = Field(0.01, gt=0, description="Adam learning rate")
    max_queries: int | None = Field(None, ge=1, description="query cap per sample")

    @model_validator(mode="after")
    def _room_for_a_step(self) -> SPSAParams:
        step = 2 * self.samples + 1
        if self.max_queries is not None and self.max_queries < step:
            raise ValueError(
                f"max_queries={self.max_queries} leaves no room for one step, which costs "
                f"2·samples + 1 = {step} queries: raise max_queries or lower samples"
            )
        return self


@register("spsa")
class SPSA(FixedBudgetAttack):
    """SPSA: black-box L∞ attack with finite-difference gradient estimates (Uesato 2018)."""

    Params = SPSAParams
    params: SPSAParams
    black_box: ClassVar[bool] = True

    def _margin(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None
    ) -> torch.Tensor:
        with torch.inference_mode():
            logits = model(x)
        goal = y if t is None else t
        z_goal = logits.gather(1, goal[:, None])[:, 0]
        z_other = logits.scatter(1, goal[:, None], -math.inf).amax(1)
        return z_goal - z_other if t is None else z_other - z_goal

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p = self.params
        x_adv = x.clone()
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=p.lr)
        steps = p.steps
        if p.max_queries is not None:  # each step: one check, then 2·samples probes
            steps = min(steps, p.max_queries // (2 * p.samples + 1))
        for _ in range(steps):
            active = (self._margin(model, x_adv, y, target) >= 0).nonzero()[:, 0]
            if len(active) == 0:
                break
            grad = torch.zeros_like(x)
            grad[active] = self._estimate(
                model,
                x_adv[active],
                y[active],
                None if target is None else target[active],
                generator,
            )
            opt.zero_grad(set_to_none=True)
            delta.grad = grad
            opt.step()
            with torch.no_grad():
                keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
                keep[active] = False
                delta[keep] = (x_adv - x)[keep]  # a fooled sample does not move
                x_adv = LinfBall.project(x + delta, x, p.eps)
                delta.copy_(x_adv - x)
        return x_adv

    def _estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """Mean over probe pairs of (L(x + δv) − L(x − δv)) / 2δ · v, for each sample."""
        p, n = self.params, len(x)
        total = torch.zeros_like(x)
        chunk = max(1, _PROBE_BATCH // (2 * n))  # probe pairs scored per forward pass
        shape = (-1, n, *([1] * (x.dim() - 1)))
        for start in range(0, p.samples, chunk):
            k = min(chunk, p.samples - start)
            v = torch.randint(0, 2, (k, *x.shape), generator=gen, device=x.device)
            v = v.to(x.dtype) * 2 - 1
            probes = torch.cat([x + p.delta * v, x - p.delta * v]).flatten(0, 1).clamp(0, 1)
            t_rep = None if t is None else t.repeat(2 * k)
            loss = self._margin(model, probes, y.repeat(2 * k), t_rep).view(2, k, n)
            diff = (loss[0] - loss[1]) / (2 * p.delta)
            total += (diff.view(shape) * v).sum(0)
        return total / p.samples

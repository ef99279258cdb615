"""JSMA — the Jacobian-based saliency map attack: change the two most salient features.

Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016.

Threat model: white-box, sparse (L0: the number of input values changed), inputs in [0, 1],
targeted. At each step the Jacobian of the logits with respect to the input is computed
(one backward pass per class); over every pair ``(p, q)`` of features still in the search
domain, with ``α = ∂z_t/∂x_p + ∂z_t/∂x_q`` and ``β = Σ_{j≠t} (∂z_j/∂x_p + ∂z_j/∂x_q)``,
the pair maximizing ``α·|β|`` subject to ``α > 0, β < 0`` (``theta > 0``; the signs flip for
``theta < 0``) is moved by ``theta`` and leaves the domain. A sample stops once it reaches
the target, when ``ceil(gamma · D / 2)`` steps are spent (at most ``gamma`` of its ``D``
features changed) or when its domain is empty.

Untargeted mode (``targeted: false``) applies the same saliency rule to the true class with
the roles reversed (push ``z_y`` down while the other classes go up) and stops once the
sample is misclassified; torchattacks instead aims at class ``y + 1``. When no pair meets
the sign conditions, the pair maximizing ``α − β`` (``theta < 0``: ``β − α``) is taken so a
sample never stalls; the paper leaves this case open.

Defaults: ``theta=1.0``, ``gamma=0.1`` (the paper's MNIST settings). There is no fixed
budget: ``eps`` lists L0 budgets (counts of changed values) at which success is counted.
Cost per step: one forward and ``K`` backward passes (``K`` classes) per sample still being
attacked, plus an ``O(D²)`` pair search, chunked over samples to bound memory.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams

_PAIR_ELEMENTS = 1 << 24  # pair-score values held at once (64 MiB of float32)


class JSMAParams(MinNormParams):
    norm: Literal["l0"] = "l0"
    theta: float = Field(1.0, ge=-1, le=1, description="change applied to a chosen feature")
    gamma: float = Field(0.1, gt=0, le=1, description="largest share of features changed")

    @field_validator("theta")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("theta must be non-zero: it is the change applied to a feature")
        return value


@register("jsma")
class JSMA(MinNormAttack):
    """Jacobian saliency map attack: change the most salient feature pairs (Papernot 2016)."""

    Params = JSMAParams
    params: JSMAParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, n, d = self.params, len(x), x[0].numel()
        goal = y if target is None else target
        # raising the target's logit (targeted) or lowering the true class's (untargeted)
        up = (p.theta > 0) == (target is not None)
        x_adv = x.flatten(1).clone()
        domain = x_adv < 1 if p.theta > 0 else x_adv > 0
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(math.ceil(p.gamma * d / 2)):
            idx = (active & (domain.sum(1) >= 2)).nonzero()[:, 0]
            if len(idx) == 0:
                break
            logits, jac = self.class_gradients(model, x_adv[idx].view(-1, *x.shape[1:]))
            pred = logits.argmax(1)
            done = pred == goal[idx] if target is not None else pred != goal[idx]
            active[idx[done]] = False
            idx, jac = idx[~done], jac[~done]
            if len(idx) == 0:
                break
            alpha = jac[torch.arange(len(idx)), goal[idx]]
            beta = jac.sum(1) - alpha
            if not up:
                alpha, beta = -alpha, -beta
            first, second = self._best_pairs(alpha, beta, domain[idx])
            for feature in (first, second):
                x_adv[idx, feature] = (x_adv[idx, feature] + p.theta).clamp(0, 1)
                domain[idx, feature] = False
        return x_adv.view_as(x)

    @staticmethod
    def _best_pairs(
        alpha: torch.Tensor, beta: torch.Tensor, domain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the two distinct domain features of the highest pair saliency."""
        n, d = alpha.shape
        chunk = max(1, _PAIR_ELEMENTS // (d * d))
        firsts, seconds = [], []
        for s in range(0, n, chunk):
            a, b, m = alpha[s : s + chunk], beta[s : s + chunk], domain[s : s + chunk]
            pa = a[:, :, None] + a[:, None, :]
            pb = b[:, :, None] + b[:, None, :]
            valid = m[:, :, None] & m[:, None, :]
            valid &= ~torch.eye(d, dtype=torch.bool, device=a.device)
            good = valid & (pa > 0) & (pb < 0)
            score = torch.where(good, pa * pb.abs(), -torch.inf)
            fallback = torch.where(valid, pa - pb, -torch.inf)
            use = good.flatten(1).any(1)
            flat = torch.where(use[:, None], score.flatten(1), fallback.flatten(1)).argmax(1)
            firsts.append(flat // d)
            seconds.append(flat % d)
        return torch.cat(firsts), torch.cat(seconds)

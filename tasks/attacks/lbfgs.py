"""L-BFGS — Szegedy et al.'s box-constrained attack: the first adversarial-example method.

Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow & Fergus, "Intriguing properties of
neural networks", ICLR 2014.

Threat model: white-box, targeted, minimum L2 norm, inputs in [0, 1]. Minimizes
``c · ‖x' − x‖₂² + CE(f(x'), t)`` over the box with L-BFGS-B (at most ``steps``
iterations), and searches ``c`` per sample over ``search_steps`` rounds: the largest ``c``
that still reaches the target gives the smallest perturbation, so ``c`` goes up ×10 after a
success until a failure brackets it, down ÷10 after a failure until a success does, and is
bisected once bracketed. Every point the optimizer evaluates is scored, and a sample keeps
the successful one with the smallest L2 norm; a sample never brought to its target is
returned unchanged. ``eps`` lists the budgets at which success is counted.

Why SciPy: L-BFGS-B handles the box exactly, as in the paper: every point it evaluates lies
in [0, 1] (no change of variables, no clipping after the fact). The batch is one problem:
the objective is a sum of per-sample terms, each with its own ``c``, so it stays separable,
while the search direction couples the samples: the L-BFGS memory is shared by the batch
(the true Hessian is block-diagonal, its approximation from whole-batch steps is not), one
line search picks one step length for all, and a round stops when the batch as a whole has
converged. The optimizer runs on the host in float64; each evaluation is one forward and
one backward pass of the batch on the model's device. Defaults: ``c=1``, ``steps=50``,
``search_steps=5``. Cost: about one evaluation per iteration, so about
``steps · search_steps`` forward and backward passes per sample; a round's evaluations are
capped at ``2 · steps`` (checked at the end of an iteration, so its last line search may go
a few past the cap). On the host, L-BFGS-B's own work grows with the batch's input size and
can exceed a small model's passes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.optimize import Bounds, minimize
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams


class LBFGSParams(MinNormParams):
    targeted: bool = True
    norm: Literal["l2"] = "l2"
    c: float = Field(1.0, gt=0, description="initial weight of the squared distance")
    steps: int = Field(50, ge=1, description="L-BFGS-B iterations per round")
    search_steps: int = Field(5, ge=1, description="rounds of the search over c")

    goals = "targeted"
    refusal = "lbfgs is a targeted attack (Szegedy 2013): set targeted: true and a target rule"


@register("lbfgs")
class LBFGS(MinNormAttack):
    """L-BFGS: box-constrained L-BFGS-B towards a target class, search over c (Szegedy 2013)."""

    Params = LBFGSParams
    params: LBFGSParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        assert target is not None  # targeted only (the params refuse anything else)
        p, n = self.params, len(x)
        c = torch.full((n,), p.c, dtype=torch.float64)
        lower, upper = torch.zeros_like(c), torch.full_like(c, float("inf"))
        best, best_l2 = x.clone(), torch.full((n,), float("inf"), device=x.device)
        for _ in range(p.search_steps):
            hit = self._round(model, x, target, c.to(x.device, x.dtype), best, best_l2)
            hit = hit.cpu()
            lower = torch.where(hit, torch.maximum(lower, c), lower)
            upper = torch.where(hit, upper, torch.minimum(upper, c))
            c = torch.where(
                upper.isinf(),
                c * 10,
                torch.where(lower == 0, c / 10, (lower + upper) / 2),
            )
        return best

    def _round(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        c: torch.Tensor,
        best: torch.Tensor,
        best_l2: torch.Tensor,
    ) -> torch.Tensor:
        """One L-BFGS-B run at fixed ``c``; updates ``best`` in place; returns the hits."""
        shape, dtype, dev = x.shape, x.dtype, x.device
        hit = torch.zeros(len(x), dtype=torch.bool, device=dev)

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            xa = torch.from_numpy(flat).to(dev, dtype).view(shape).requires_grad_(True)
            logits = model(xa)
            l2 = (xa - x).flatten(1).pow(2).sum(1)
            per_sample = c * l2 + F.cross_entropy(logits, target, reduction="none")
            (grad,) = torch.autograd.grad(per_sample.sum(), xa)
            with torch.no_grad():
                now = logits.argmax(1) == target
                better = now & (l2 < best_l2)
                best[better], best_l2[better] = xa[better].detach(), l2[better].detach()
                hit.logical_or_(now)
            total = float(per_sample.detach().double().sum())  # summed in float64
            return total, grad.detach().double().cpu().numpy().ravel()

        start = x.detach().double().cpu().numpy().ravel()
        minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(np.zeros(start.size), np.ones(start.size)),
            options={"maxiter": self.params.steps, "maxfun": 2 * self.params.steps},
        )
        return hit

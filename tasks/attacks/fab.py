"""FAB — the fast adaptive boundary attack: minimum-norm steps to the linearized boundary.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020.

Threat model: white-box, minimum norm (``linf`` or ``l2``), inputs in [0, 1]. At the
current point ``x_k`` the classifier is linearized: for each class ``j ≠ y`` the hyperplane
``g_j(x_k) + ⟨∇g_j, z − x_k⟩ = 0`` with ``g_j = z_j − z_y``; the closest one in the dual norm
is chosen (``fab``), or the target's (``fab_t``; ``fab`` with ``targeted`` uses
``z_t − max_{j≠t} z_j`` so that crossing it makes ``t`` the prediction). Both ``x_k``
and the original ``x`` are projected onto that hyperplane inside the box [0, 1] (exactly:
the box-constrained projection is a monotone one-dimensional problem, solved by
bisection), and the step is the biased combination
``x_{k+1} = clip((1 − α)(x_k + η δ_k) + α (x + η δ_x))`` with
``α = min(‖δ_k‖ / (‖δ_k‖ + ‖δ_x‖), α_max)``, which keeps the iterate close to ``x``. Once
``x_{k+1}`` is adversarial it is recorded if its norm is the smallest so far and pulled back
towards ``x``: ``x_{k+1} ← (1 − β) x + β x_{k+1}``. Restarts after the first start from a
random point at half the best norm found (or of the largest budget in ``eps``).

``fab_t`` is AutoAttack's FAB-T: the targeted hyperplane of each of the
``n_target_classes`` most likely wrong classes in turn, for misclassification; a sample
already fooled (within the largest budget of ``eps`` when given) is not attacked again.

Defaults follow AutoAttack: ``steps=100``, ``alpha_max=0.1``, ``eta=1.05``, ``beta=0.9``,
one restart. There is no fixed budget: ``eps`` lists the budgets at which success is
counted. Cost per step: one forward and ``K`` backward passes per sample (``fab``, ``K``
classes; one backward pass with a target) plus one forward pass to check the new point.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.params import MinNormParams

_BISECTION_STEPS = 60


class FABParams(MinNormParams):
    norm: Literal["linf", "l2"] = "linf"
    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    alpha_max: float = Field(0.1, ge=0, le=1, description="largest bias towards x")
    eta: float = Field(1.05, ge=1, description="overshoot of each projection")
    beta: float = Field(0.9, gt=0, le=1, description="pull-back towards x after a success")


class FABTParams(FABParams):
    n_target_classes: int = Field(9, ge=1, description="most likely wrong classes to target")

    goals = "untargeted"
    refusal = "fab_t is untargeted: it uses targets internally, for misclassification"


@register("fab")
class FAB(MinNormAttack):
    """FAB: minimum-norm steps to the closest linearized boundary, biased to x (Croce 2020)."""

    Params = FABParams
    params: FABParams

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        best, best_norm = x.clone(), torch.full((len(x),), math.inf, device=x.device)
        self._search(model, x, y, target, target, generator, best, best_norm)
        return best

    def _search(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        plane: torch.Tensor | None,
        gen: torch.Generator,
        best: torch.Tensor,
        best_norm: torch.Tensor,
    ) -> None:
        """All restarts; ``plane`` is the class whose hyperplane is used (None: closest)."""
        p = self.params
        for restart in range(p.restarts):
            start = x
            if restart > 0:
                radius = best_norm.clamp(max=max(p.eps) if p.eps else math.inf)
                radius = torch.where(radius.isfinite(), radius, torch.zeros_like(radius)) / 2
                start = (x + _random_direction(x, p.norm, gen) * _col(radius, x)).clamp(0, 1)
            self._run(model, x, y, target, plane, start, best, best_norm)

    def _run(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        plane: torch.Tensor | None,
        start: torch.Tensor,
        best: torch.Tensor,
        best_norm: torch.Tensor,
    ) -> None:
        p, xk = self.params, start.clone()
        for _ in range(p.steps):
            # to hit a target, cross its boundary with the strongest other class
            w, g = self._hyperplane(model, xk, None if target is not None else y, plane)
            flat_k, flat_0 = xk.flatten(1), x0.flatten(1)
            d_k = _project(flat_k, w, -g, p.norm)
            d_0 = _project(flat_0, w, -g - (w * (flat_0 - flat_k)).sum(1), p.norm)
            n_k, n_0 = _norm(d_k, p.norm), _norm(d_0, p.norm)
            alpha = (n_k / (n_k + n_0).clamp_min(1e-12)).clamp(max=p.alpha_max)[:, None]
            new = (1 - alpha) * (flat_k + p.eta * d_k) + alpha * (flat_0 + p.eta * d_0)
            xk = new.clamp(0, 1).view_as(x0)
            with torch.inference_mode():
                pred = model(xk).argmax(1)
            adv = pred == target if target is not None else pred != y
            size = _norm((xk - x0).flatten(1), p.norm)
            better = adv & (size < best_norm)
            best[better], best_norm[better] = xk[better], size[better]
            xk = torch.where(_col(adv, xk), (1 - p.beta) * x0 + p.beta * xk, xk)

    def _hyperplane(
        self,
        model: nn.Module,
        xk: torch.Tensor,
        base: torch.Tensor | None,
        plane: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, g)``: the gradient and value of ``z_j − z_b`` at ``xk``.

        ``j`` is ``plane``, or the class whose linearized boundary is closest; ``b`` is
        ``base``, or (with a ``plane``) the most likely class other than ``plane``.
        """
        if plane is not None:
            xk = xk.detach().requires_grad_(True)
            logits = model(xk)
            if base is None:
                base = logits.detach().scatter(1, plane[:, None], -math.inf).argmax(1)
            diff = logits.gather(1, plane[:, None])[:, 0] - logits.gather(1, base[:, None])[:, 0]
            (grad,) = torch.autograd.grad(diff.sum(), xk)
            return grad.flatten(1), diff.detach()
        assert base is not None  # the closest boundary is measured from a given class
        logits, grads = self.class_gradients(model, xk)
        rows = torch.arange(len(base), device=base.device)
        w = grads - grads[rows, base][:, None]
        g = logits - logits.gather(1, base[:, None])
        dual = w.abs().sum(2) if self.params.norm == "linf" else w.norm(dim=2)
        dist = g.abs() / dual.clamp_min(1e-12)
        dist[rows, base] = math.inf
        j = dist.argmin(1)
        return w[rows, j], g[rows, j]


@register("fab_t")
class FABT(FAB):
    """FAB-T: FAB towards each of the top wrong classes in turn, for misclassification."""

    Params = FABTParams
    params: FABTParams

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
        best, best_norm = x.clone(), torch.full((len(x),), math.inf, device=x.device)
        limit = max(p.eps) if p.eps else math.inf
        others = order[order != y[:, None]].view(len(x), -1)  # wrong classes, most likely first
        for rank in range(min(p.n_target_classes, others.shape[1])):
            idx = (best_norm > limit).nonzero()[:, 0]
            if len(idx) == 0:
                break
            sub_best, sub_norm = best[idx], best_norm[idx]
            self._search(
                model, x[idx], y[idx], None, others[idx, rank], generator, sub_best, sub_norm
            )
            best[idx], best_norm[idx] = sub_best, sub_norm
        return best


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _random_direction(x: torch.Tensor, norm: str, gen: torch.Generator) -> torch.Tensor:
    """Per sample, a random direction of unit norm."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    else:
        t = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return t / _col(_norm(t.flatten(1), norm).clamp_min(1e-12), t)


def _project(point: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest ``δ`` with ``⟨w, δ⟩ = r`` and ``point + δ`` in [0, 1] (per row).

    The minimizer lies on a monotone path: ``δ(μ) = clip(μ s w, lo, hi)`` for L2 and
    ``clip(μ s sign(w), lo, hi)`` for L∞ (``s = sign(r)``, ``μ ≥ 0``), along which
    ``s⟨w, δ(μ)⟩`` grows, so ``μ`` is found by bisection (geometric for L2, whose scale is
    unknown). When even the box corner cannot reach ``r``, that corner is returned.
    """
    lo, hi = -point, 1 - point
    s = torch.where(r >= 0, 1.0, -1.0).to(w.dtype)[:, None]
    direction = s * (w if norm == "l2" else w.sign())
    need = r.abs()

    def reach(mu: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(mu[:, None] * direction, lo), hi)

    if norm == "linf":
        low, high = torch.zeros_like(need), torch.ones_like(need)
        for _ in range(_BISECTION_STEPS // 2):
            mid = (low + high) / 2
            ok = (s * w * reach(mid)).sum(1) >= need
            low, high = torch.where(ok, low, mid), torch.where(ok, mid, high)
        return reach(high)
    scale = w.abs().masked_fill(w == 0, math.inf).amin(1).clamp_min(1e-30)
    low, high = torch.full_like(need, 1e-12), (1.0 / scale).clamp_min(1e-12) * 2
    for _ in range(_BISECTION_STEPS):
        mid = (low * high).sqrt()
        ok = (s * w * reach(mid)).sum(1) >= need
        low, high = torch.where(ok, low, mid), torch.where(ok, mid, high)
    return reach(high)

"""UAP — one universal perturbation for every input, built from DeepFool steps.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations", CVPR 2017.

Threat model: white-box, untargeted, one perturbation ``v`` with ``‖v‖ ≤ eps`` (``linf`` or
``l2``) added to every input, inputs in [0, 1]. :meth:`UAP.fit` runs the paper's Algorithm 1
on a fit set: passes over the shuffled samples; for each sample whose prediction ``v`` does
not change yet, DeepFool (:mod:`tasks.attacks.deepfool`) finds the smallest extra step
``Δv`` that does, and ``v ← P(v + Δv)`` projects the sum back onto the ball. It stops once
``v`` changes the prediction of ``target_fooling_rate`` of the fit set (the paper's
``1 − δ``) or after ``max_passes``. Samples are taken ``fit_batch`` at a time: DeepFool runs
on the batch at the same ``v`` and the steps are folded in one after another
(``fit_batch: 1`` is the paper's strictly sequential loop).

Evaluation adds ``v`` to every input (clipped to [0, 1]). In a study the attack cell fits
``v`` on ``fit_size`` samples drawn from the training split and evaluates it on the held-out
evaluation slice; ``v`` is stored as an artifact of its own (role ``perturbation``). Called
directly without :meth:`fit`, the attack fits on the batch it is given (in-sample).

``method: sgd`` replaces the DeepFool steps by stochastic gradient ascent on ``v``
(Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal Adversarial Training",
AAAI 2020): per mini-batch of ``fit_batch`` samples, one step of ``step_size`` along the
sign (``linf``) or the normalized direction (``l2``) of the gradient of the mean
cross-entropy to the clean predictions, each sample's loss clipped at ``loss_cap`` so
samples already fooled stop dominating, then the projection onto the ball. It costs one
forward and one backward pass per fit sample and pass.

``sgd`` is the default because a weak attack overstates robustness: on the digits CNN of the
test suite (500 fit samples, L∞ eps 0.3) the DeepFool loop leaves 78.5 % held-out accuracy
after 10 passes (55 s on 2 CPU cores), SGD 13.7 % after 2 passes (0.3 s); at L2 eps 2 it is
47.3 % vs 14.1 %. ``method: deepfool`` runs the paper's algorithm.

Defaults: ``method=sgd``, ``norm=linf``, ``max_passes=10``,
``target_fooling_rate=0.8``, DeepFool with ``steps=10`` and ``overshoot=0.02``;
``step_size`` defaults to ``eps / 10``. Cost of the DeepFool fit: per pass, DeepFool on
every sample not yet fooled (one forward and ``candidates + 1`` backward passes per step)
plus one forward pass over the fit set; evaluation costs one forward pass.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat
from torch import nn

from tasks.attacks.base import FixedBudgetAttack, register
from tasks.attacks.counting import Counted
from tasks.attacks.deepfool import DeepFool, DeepFoolParams
from tasks.attacks.params import AttackParams, FixedBudgetParams, StepRule


class UAPParams(FixedBudgetParams, StepRule):
    norm: Literal["linf", "l2"] = "linf"
    method: Literal["deepfool", "sgd"] = "sgd"
    fit_size: int = Field(1000, ge=1, description="training samples the perturbation is fit on")
    fit_batch: int = Field(32, ge=1, description="samples whose DeepFool steps share one v")
    max_passes: int = Field(10, ge=1, description="passes over the fit set")
    target_fooling_rate: float = Field(0.8, gt=0, le=1, description="stop at this fit rate")
    steps: int = Field(10, ge=1, description="DeepFool iterations per sample")
    overshoot: NonNegativeFloat = 0.02
    step_size: PositiveFloat | None = Field(None, description="sgd step; default eps / 10")
    loss_cap: PositiveFloat = Field(10.0, description="sgd: per-sample loss clip")

    goals = "untargeted"
    refusal = "uap is untargeted: one perturbation changes many predictions"
    fill_step_size = False  # an unset step_size has always stayed null in the cell key

    def default_step_size(self) -> float:
        return self.eps / 10


@register("uap")
class UAP(FixedBudgetAttack):
    """Universal perturbation: one v for all inputs, fit on a training split (Moosavi 2017)."""

    Params = UAPParams
    params: UAPParams
    universal: ClassVar[bool] = True

    def __init__(self, params: AttackParams) -> None:
        super().__init__(params)
        self.perturbation: torch.Tensor | None = None

    def fit(
        self,
        model: nn.Module,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, float]:
        """Fit ``v`` on ``x`` (labels are not needed: it flips the model's own predictions).

        Returns:
            ``fooling_rate`` on ``x``, ``passes``, ``forward`` and ``backward`` (per-sample
            pass counts of the whole fit).
        """
        p = self.params
        gen = generator or torch.Generator(device=x.device).manual_seed(p.seed)
        counted = Counted(model)  # called on its own by a cell: the fit counts its passes
        passes, rate = self._fit(counted, x.detach(), gen)
        return {
            "fooling_rate": rate,
            "passes": float(passes),
            "forward": float(counted.forward_passes),
            "backward": float(counted.backward_passes),
        }

    def _fit(self, model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> tuple[int, float]:
        """Algorithm 1's passes; sets ``perturbation``; returns (passes, fooling rate)."""
        p = self.params
        deepfool = DeepFool(
            DeepFoolParams(norm=p.norm, steps=p.steps, overshoot=p.overshoot, seed=p.seed)
        )
        v = torch.zeros_like(x[:1])
        with torch.inference_mode():
            clean = torch.cat([model(b).argmax(1) for b in x.split(1024)])
        passes, rate = 0, 0.0
        while passes < p.max_passes:
            passes += 1
            order = torch.randperm(len(x), generator=gen, device=x.device)
            for batch in order.split(p.fit_batch):
                if p.method == "sgd":
                    v = self._sgd_step(model, x[batch], clean[batch], v)
                else:
                    v = self._deepfool_steps(model, deepfool, x[batch], clean[batch], v)
            with torch.inference_mode():
                fooled = torch.cat([model((b + v).clamp(0, 1)).argmax(1) for b in x.split(1024)])
            rate = float((fooled != clean).float().mean())
            if rate >= p.target_fooling_rate:
                break
        self.perturbation = v.detach()
        return passes, rate

    def _deepfool_steps(
        self,
        model: nn.Module,
        deepfool: DeepFool,
        x: torch.Tensor,
        clean: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """``v`` plus DeepFool's step for each sample of ``x`` that ``v`` does not fool yet."""
        xb = (x + v).clamp(0, 1)
        with torch.inference_mode():
            keep = model(xb).argmax(1) == clean
        if not bool(keep.any()):
            return v
        out = deepfool(model, xb[keep], clean[keep])
        for step in (out.x_adv - xb[keep])[out.success]:
            v = self._project(v + step)
        return v

    def _sgd_step(
        self, model: nn.Module, x: torch.Tensor, clean: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        p = self.params
        v = v.detach().requires_grad_(True)
        losses = F.cross_entropy(model((x + v).clamp(0, 1)), clean, reduction="none")
        (grad,) = torch.autograd.grad(losses.clamp(max=p.loss_cap).mean(), v)
        step = p.resolved_step_size
        if p.norm == "linf":
            direction = grad.sign()
        else:
            direction = grad / grad.flatten().norm().clamp_min(1e-12)
        return self._project(v.detach() + step * direction)

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        eps = self.params.eps
        if self.params.norm == "linf":
            return v.clamp(-eps, eps)
        norm = float(v.flatten().norm())
        return v * min(1.0, eps / norm) if norm > 0 else v

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        if self.perturbation is None:  # the fit's passes go through ``model``: counted
            self.fit(model, x, generator=generator)
        assert self.perturbation is not None
        return (x + self.perturbation.to(x.device, x.dtype)).clamp(0, 1)

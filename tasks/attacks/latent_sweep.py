"""Attacks on a generator over the trade-off constant, and their AUDDC (Gondim-Ribeiro 2018).

Tabacof et al. (2016) and Gondim-Ribeiro, Tabacof & Valle ("Adversarial Attacks on
Variational Autoencoders", 2018) do not fix a budget: they minimize

    C·‖δ‖² + D(x + δ, x_t)

for a sweep of trade-off constants ``C`` (``D``: the distance of the posterior means to the
target image's for ``vae_latent_sweep``, of the reconstruction to the target image for
``vae_output_sweep``), and read the whole distortion–distance curve. Its summary is the
**AUDDC**, the area under the curve of

    y = (‖rec(x*) − x_t‖ − ‖rec(x_t) − x_t‖) / (‖rec(x) − x_t‖ − ‖rec(x_t) − x_t‖)

against ``x = ‖δ‖ / ‖x − x_t‖``, both clipped to [0, 1], the curve starting at (0, 1) (no
perturbation, no change) and held at its last value out to ``x = 1``: 1 for a generator no
perturbation moves, 0 for one that a vanishing perturbation makes reconstruct the target.
Lower is more vulnerable. Each constant runs ``steps`` of Adam from ``δ = 0`` (the
papers' optimizer; their L-BFGS-B alternative is not offered).

A minimum-norm attack: per sample, the stored example is the smallest perturbation among the
constants whose purified input the study classifier assigns the target class (the largest
perturbation, from the smallest constant, where none does), so success at each budget of
``eps`` is counted like C&W's. The cell records ``auddc`` (mean over samples) beside the
ratios of :mod:`tasks.attacks.latent`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.latent import OnGenerator, aim, encoder_of
from tasks.attacks.params import MinNormParams

DEFAULT_CONSTANTS = [2.0**k for k in range(-8, 9, 2)]  # 2^-8 … 2^8, nine values


class SweepParams(OnGenerator, MinNormParams):
    constants: list[float] = Field(
        default_factory=lambda: list(DEFAULT_CONSTANTS),
        min_length=1,
        description="trade-off constants C of C·‖δ‖² + distance (default 2^-8 … 2^8)",
    )
    steps: int = Field(100, ge=1, description="Adam steps per constant")


class _Sweep(MinNormAttack):
    Params = SweepParams
    params: SweepParams
    needs_generator: ClassVar[bool] = True
    space: ClassVar[str] = "latent"

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        assert target is not None  # targeted by its params
        both = encoder_of(model).both
        which = 0 if self.space == "latent" else 1
        has, x_t = aim(self, x, y, target, generator)
        with torch.no_grad():
            rec_x, aimed = both(x)[1], both(x_t)
            rec_t, want = aimed[1], aimed[which]
            floor = (rec_t - x_t.flatten(1)).norm(dim=1)
            span = ((rec_x - x_t.flatten(1)).norm(dim=1) - floor).clamp_min(1e-12)
            apart = (x - x_t).flatten(1).norm(dim=1).clamp_min(1e-12)
        best = x.clone()
        best_norm = torch.full((len(x),), float("inf"), device=x.device)
        points: list[tuple[torch.Tensor, torch.Tensor]] = []
        fallback = x.clone()
        for c in sorted(self.params.constants, reverse=True):  # large C: small δ first
            delta = torch.zeros_like(x, requires_grad=True)
            opt = torch.optim.Adam([delta], lr=self.params.lr)
            for _ in range(self.params.steps):
                z = (x + delta).clamp(0, 1)
                dist = ((both(z)[which] - want) ** 2).sum(1)
                loss = c * (z - x).flatten(1).pow(2).sum(1) + dist
                opt.zero_grad(set_to_none=True)
                (loss * has).sum().backward()
                opt.step()
            with torch.no_grad():
                x_c = torch.where(has.view(-1, 1, 1, 1), (x + delta).clamp(0, 1), x)
                norm = (x_c - x).flatten(1).norm(dim=1)
                rec = both(x_c)[1]
                yy = (((rec - x_t.flatten(1)).norm(dim=1) - floor) / span).clamp(0, 1)
                points.append(((norm / apart).clamp(0, 1), yy))
                hit = (model(x_c).argmax(1) == target) & has & (norm < best_norm)
                best = torch.where(hit.view(-1, 1, 1, 1), x_c, best)
                best_norm = torch.where(hit, norm, best_norm)
                fallback = x_c
        found = torch.isfinite(best_norm)
        x_adv = torch.where(found.view(-1, 1, 1, 1), best, fallback)
        self.counts["auddc"] = float(torch.where(has, _auddc(points), 1.0).sum())
        return x_adv


def _auddc(points: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per sample, the area under ``y(x)`` over [0, 1] from the sweep's ``(x, y)`` points:
    from (0, 1), through the points in order of ``x``, held at the last ``y`` to ``x = 1``."""
    xs = torch.stack([p[0] for p in points], 1)
    ys = torch.stack([p[1] for p in points], 1)
    order = xs.argsort(dim=1)
    xs, ys = xs.gather(1, order), ys.gather(1, order)
    n = len(xs)
    xs = torch.cat([xs.new_zeros(n, 1), xs, xs.new_ones(n, 1)], 1)
    ys = torch.cat([ys.new_ones(n, 1), ys, ys[:, -1:]], 1)
    return ((xs[:, 1:] - xs[:, :-1]) * (ys[:, 1:] + ys[:, :-1]) / 2).sum(1)


@register("vae_latent_sweep")
class VAELatentSweep(_Sweep):
    """vae_latent over a sweep of the trade-off constant; records the AUDDC."""

    space = "latent"


@register("vae_output_sweep")
class VAEOutputSweep(_Sweep):
    """vae_output over a sweep of the trade-off constant; records the AUDDC."""

    space = "output"

"""``on_range``: adversarial examples on a generator's range, the attack that broke
Defense-GAN.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security" (ICML
2018), §5.3.1: a purifier that projects its input onto the range of a generator ``G``
(``latent_projection``, Samangouei et al.'s Defense-GAN) returns an image already on that
range essentially unchanged, so the attacker searches the generator's latent space instead
of the pixels: ``z`` minimizes

    ‖G(z) − x‖₂² + c · max(F_y(G(z)) − max_{i≠y} F_i(G(z)), −κ)

for the classifier ``F`` behind the purifier (targeted: the margin of the target class), and
the example is ``x' = G(z)`` itself. The confidence ``κ`` (2 logits by default, where C&W's
is 0) absorbs the projection's own error: the defense searches from its own random starts
and lands near ``z``, not on it (on the digits of the tests, κ = 0 leaves the projection
58 % accurate on the examples within L2 2, κ = 2 leaves 12.5 %). Here the search starts
from the projection of ``x`` (``restarts`` prior draws, ``start_steps`` of Adam on
``‖G(z) − x‖²``, the best kept, as the defense itself projects), moves the same latent the
purifier's projection searches (``levels:`` of a ``latent_projection`` entry; the coarsest
code behind other purifiers) with Adam for ``steps`` per round, and adjusts each sample's
``c`` by binary search over ``search_steps`` rounds, down after a success and up (×10 until
bracketed) after a failure, as C&W does. A sample keeps its closest ``G(z)`` that ``F``
misclassifies; one never fooled keeps its input. ``eps`` lists the L2 budgets at which the
cell counts success: the defended model (the real projection, from its own random starts)
decides it, never ``F`` on ``G(z)``. Neither the purifier nor its gradient is ever run: the
generator and the classifier are read off the defended model (so the cell's forward and
backward counts, which count passes through the defended model, leave the search out).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, NonNegativeFloat
from torch import nn

from tasks.attacks.base import MinNormAttack, register
from tasks.attacks.cw import CWL2
from tasks.attacks.latent import purifier_of
from tasks.attacks.params import MinNormParams
from tasks.defenses.projection import Range, project_codes


class OnRangeParams(MinNormParams):
    norm: Literal["l2"] = "l2"
    c: float = Field(1.0, gt=0, description="initial trade-off constant")
    kappa: NonNegativeFloat = Field(
        2.0,
        description="the margin in logits G(z) must clear on the classifier, so that the "
        "defense's own projection, which need not find z again exactly, does not undo it",
    )
    steps: int = Field(100, ge=1, description="Adam steps on z per round")
    search_steps: int = Field(4, ge=1, description="rounds of the binary search over c")
    lr: float = Field(0.05, gt=0, description="Adam's learning rate on z")
    restarts: int = Field(4, ge=1, le=100, description="prior draws the start is chosen from")
    start_steps: int = Field(50, ge=1, description="Adam steps of the start's projection")


@register("on_range")
class OnRange(MinNormAttack):
    """Examples on a generator's range: C&W in its latent space (Athalye et al. 2018)."""

    Params = OnRangeParams
    params: OnRangeParams
    needs_generator: ClassVar[bool] = True
    needs_encoder: ClassVar[bool] = False  # it decodes prior draws: any purifier will do
    sees_defense: ClassVar[bool] = False  # it never runs the defense: no BPDA, EOT or twin

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, n = self.params, len(x)
        purified = purifier_of(model)
        classifier: nn.Module = purified.model
        coarse = getattr(purified.defense.params, "levels", "coarse") != "all"
        start, codes = project_codes(
            purified.vae,
            x,
            generator,
            restarts=p.restarts,
            steps=p.start_steps,
            lr=p.lr,
            coarse=coarse,
        )
        g = Range(purified.vae, x, coarse=coarse)
        c = torch.full((n,), p.c, device=x.device)
        lower, upper = torch.zeros_like(c), torch.full_like(c, float("inf"))
        best, best_l2 = x.clone(), torch.full_like(c, float("inf"))
        with torch.no_grad():  # the start itself may already be misclassified
            self._keep(classifier(start), start, x, y, target, best, best_l2)
        for _ in range(p.search_steps):
            hit = self._round(classifier, g, codes, x, y, target, c, best, best_l2)
            upper = torch.where(hit, torch.minimum(upper, c), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, c))
            c = torch.where(upper.isinf(), c * 10, (lower + upper) / 2)
        self.counts["on_range_found"] = float(best_l2.isfinite().sum())
        return best

    def _round(
        self,
        classifier: nn.Module,
        g: Range,
        codes: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        c: torch.Tensor,
        best: torch.Tensor,
        best_l2: torch.Tensor,
    ) -> torch.Tensor:
        """One round at fixed ``c`` from the start's codes; updates ``best``/``best_l2`` in
        place; returns which samples ``F`` misclassified at some step."""
        z = [v.clone() for v in codes]
        moved = g.searched(z)
        for v in moved:
            v.requires_grad_(True)
        opt = torch.optim.Adam(moved, lr=self.params.lr)
        hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.params.steps):
            image = g.decode(z)
            logits = classifier(image)
            l2 = (image - x).flatten(1).pow(2).sum(1)
            margin = CWL2._margin(logits, y, target)
            loss = (l2 + c * margin.clamp(min=-self.params.kappa)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                hit |= self._keep(logits, image, x, y, target, best, best_l2)
        return hit

    def _keep(
        self,
        logits: torch.Tensor,
        image: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        best: torch.Tensor,
        best_l2: torch.Tensor,
    ) -> torch.Tensor:
        """Keep each sample's closest misclassified image; returns the misclassified."""
        margin = CWL2._margin(logits.detach(), y, target)
        now = margin < 0 if self.params.kappa == 0 else margin <= -self.params.kappa
        l2 = (image.detach() - x).flatten(1).pow(2).sum(1)
        better = now & (l2 < best_l2)
        best[better], best_l2[better] = image.detach()[better], l2[better]
        return now

"""Common corruptions of the test set: the shifts a model meets without an adversary.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019; ImageNet-C, CIFAR-10-C) corrupt every test image at five
severities; Mu & Gilmer, "MNIST-C" (2019) do the same for digits. A training-time defense
that claims robustness to attacks it never saw (generative adversarial training, Poursaeed et
al. 2021) is evaluated on them beside the L∞/L2 attacks. ``corruption`` is an attack cell like
any other, so its robust accuracy sits in the same tables, transfers and flags; it uses no
model at all (no gradient, no query), so it is a baseline, and its perturbation is not bounded
by a budget (the cell records its norms).

Kinds, with their value at severities 1 … 5 (ImageNet-C's where it defines one):

- ``gaussian_noise``: additive N(0, σ²), σ = 0.08, 0.12, 0.18, 0.26, 0.38;
- ``gaussian_blur``: σ = 0.5, 0.75, 1, 1.5, 2 pixels (reflect padding);
- ``jpeg``: libjpeg quality 80, 65, 50, 35, 20 (1- and 3-channel images);
- ``contrast``: ``(x − m)·c + m`` per image, m its mean, c = 0.4, 0.3, 0.2, 0.1, 0.05;
- ``brightness``: ``x + b``, b = 0.1, 0.2, 0.3, 0.4, 0.5.

Every result is clipped to [0, 1]; the noise is drawn from the cell's generator (its seed).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from tasks.attacks.base import Attack, register
from tasks.attacks.params import AttackParams

Kind = Literal["gaussian_noise", "gaussian_blur", "jpeg", "contrast", "brightness"]
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "gaussian_blur": (0.5, 0.75, 1.0, 1.5, 2.0),
    "jpeg": (80, 65, 50, 35, 20),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
}


class CorruptionParams(AttackParams):
    """Which corruption and how strong; ``norm`` is the one its perturbation is measured in."""

    kind: Kind = Field("gaussian_noise", description="the corruption (see the module)")
    severity: int = Field(3, ge=1, le=5, description="1 (mild) … 5 (severe), as ImageNet-C")
    norm: Literal["linf", "l2"] = "l2"
    goals: ClassVar[Literal["untargeted"]] = "untargeted"
    refusal: ClassVar[str] = "a corruption does not aim at a class: it cannot be targeted"

    @property
    def value(self) -> float:
        """The corruption's parameter at this severity (σ, quality, contrast, shift)."""
        return SEVERITIES[self.kind][self.severity - 1]


@register("corruption")
class Corruption(Attack):
    """Common corruption at a severity (Hendrycks & Dietterich 2019): noise, blur, JPEG,
    contrast, brightness; no model is used."""

    Params = CorruptionParams
    params: CorruptionParams
    baseline: ClassVar[bool] = True

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        kind, value = self.params.kind, self.params.value
        with torch.no_grad():
            if kind == "gaussian_noise":
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                return x + value * noise
            if kind == "brightness":
                return x + value
            if kind == "contrast":
                mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
                return (x - mean) * value + mean
            # the transforms live with the defenses that use them (imported here: the
            # defenses import the attacks)
            from tasks.defenses.transforms import JPEG, GaussianBlur

            if kind == "gaussian_blur":
                blur = GaussianBlur(GaussianBlur.Params(sigma=value))
                return blur.transform(x, None)
            return JPEG(JPEG.Params(quality=int(value))).transform(x, None)

    def _final_projection(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x_adv.clamp(0, 1)

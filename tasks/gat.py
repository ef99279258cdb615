"""Generative adversarial training (``gat``): train on examples made in a generator's latent
space, at chosen levels, next to the clean loss.

Poursaeed, Jiang, Yang, Belongie & Lim, "Robustness and Generalization via Generative
Adversarial Training" (ICCV 2021): perturb the codes of a generator with a disentangled,
layered latent space by gradient ascent of the classifier's loss, decode, and train on
``J(F(x), y) + λ·J(F(x_gat), y)``; coarse levels give high-level changes, fine ones
low-level changes. Their generator is a StyleGAN with an encoder; here it is the study's
hierarchical VAE (:mod:`tasks.models.generative`), whose per-level codes play the styles'
part: the input is encoded (posterior means, α = 0), an offset ``δ_i`` in an L∞ box of
``eps`` (in units of the prior's standard deviation) is added to the code of each chosen
level, and ``steps`` signed-gradient steps of ``step_size`` from a uniform random start
maximize the classifier's cross-entropy on the decoded image. Finer levels condition on
the perturbed coarser codes, as in NVAE. The paper's exact step sizes and weights were not
published with code; the defaults here are stated, not reproduced.

Declared in ``requires`` like a purifier's generator (role ``vae``, one generator cell per
dataset and recipe, shared with the purifiers of the same recipe); the train cell gets it
as an input and :func:`tasks.training.fit` hands it to the constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from tasks.attacks.base import attack_mode
from tasks.defenses.generator import GeneratorParams, GeneratorRecipe
from tasks.defenses.requirements import Requirement
from tasks.errors import TaskError
from tasks.models.generative import network
from tasks.registry import Params
from tasks.train_defenses import TRAINING_DEFENSES, Step, TrainingDefense

Levels = Literal["coarse", "middle", "fine", "all"]


class GATParams(Params):
    """The generator's recipe, the levels perturbed and the latent attack's budget."""

    generator: GeneratorParams = Field(
        default_factory=GeneratorParams, description="the generator's architecture and training"
    )
    levels: Levels | list[int] = Field(
        "all", description="levels perturbed: coarse, middle, fine, all, or indices (0: coarsest)"
    )
    eps: float = Field(0.5, gt=0, description="L∞ box of the code offsets (prior std units)")
    steps: int = Field(5, ge=1, description="signed-gradient steps in latent space")
    step_size: float | None = Field(None, gt=0, description="default: 2.5 · eps / steps")
    weight: float = Field(1.0, ge=0, description="λ: weight of the generated examples' loss")

    @model_validator(mode="after")
    def _levels_exist(self) -> GATParams:
        n = self.generator.n_levels
        if self.levels == "middle" and n < 3:
            raise ValueError(
                f"levels 'middle' needs a generator of at least 3 levels, this one has {n} "
                f"(generator.levels: {n}); use coarse, fine, all or level indices"
            )
        if isinstance(self.levels, list):
            bad = [i for i in self.levels if not 0 <= i < n]
            if bad or not self.levels or len(set(self.levels)) != len(self.levels):
                raise ValueError(
                    f"levels {self.levels} do not name distinct levels of a generator with "
                    f"{n} level{'s' if n != 1 else ''} (indices 0 to {n - 1}, 0 the coarsest)"
                )
        return self

    def indices(self) -> list[int]:
        """The perturbed levels, coarse to fine."""
        n = self.generator.n_levels
        named = {"coarse": [0], "middle": [n // 2], "fine": [n - 1], "all": list(range(n))}
        return sorted(self.levels) if isinstance(self.levels, list) else named[self.levels]

    @property
    def step(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


@TRAINING_DEFENSES.register("gat")
class GAT(TrainingDefense):
    """Generative adversarial training: examples from latent-space PGD on a generator (2021)."""

    Params = GATParams
    params: GATParams
    requires: ClassVar[Mapping[str, Requirement]] = {
        "vae": Requirement(model="generator", recipe=GeneratorRecipe(), owner="mlvgm_purify")
    }

    def __init__(self, params: GATParams, *, vae: nn.Module | None = None) -> None:
        super().__init__(params)
        if vae is None:
            raise TaskError(
                "training defense 'gat' needs its trained generator: `GAT(params, vae=gen)` "
                "(a study's train cell gets it as its input 'vae')"
            )
        self.vae = vae.eval()
        for p in self.vae.parameters():
            p.requires_grad_(False)

    def generated(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The generated examples of ``(x, y)`` against ``model``'s current weights."""
        net, mean, std = network(self.vae)
        p, levels = self.params, [0.0] * net.levels
        xn = (x - mean) / std
        shapes = net.noise_shapes(len(x), x.shape[-2], x.shape[-1])
        moving: dict[int, torch.Tensor] = {}
        for i in p.indices():
            u = torch.rand(shapes[i], generator=generator, device=x.device, dtype=x.dtype)
            moving[i] = ((2 * u - 1) * p.eps).requires_grad_(True)

        def decode(offsets: dict[int, torch.Tensor]) -> torch.Tensor:
            shift = [offsets.get(i) for i in range(net.levels)]
            return torch.sigmoid(net.generate(xn, levels, offsets=shift).logits)

        with attack_mode(model):
            for _ in range(p.steps):
                loss = F.cross_entropy(model(decode(moving)), y)
                grads = torch.autograd.grad(loss, list(moving.values()))
                moving = {
                    i: (d.detach() + p.step * g.sign()).clamp(-p.eps, p.eps).requires_grad_(True)
                    for (i, d), g in zip(moving.items(), grads, strict=True)
                }
            with torch.no_grad():
                return decode({i: d.detach() for i, d in moving.items()})

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        x_gat = self.generated(model, x, y, generator)
        logits = model(x)
        total = F.cross_entropy(logits, y) + self.params.weight * F.cross_entropy(model(x_gat), y)
        return Step(total, logits)

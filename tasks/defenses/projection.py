"""``latent_projection``: Defense-GAN's purification, onto the range of the study's generator.

Samangouei, Kabkab & Chellappa, "Defense-GAN: Protecting Classifiers Against Adversarial
Attacks Using Generative Models" (ICLR 2018) classify ``G(z*)`` instead of ``x``, where

    z* = argmin_z ‖G(z) − x‖²

is found by ``steps`` of gradient descent from each of ``restarts`` random starts ``z ~ N(0,
I)``, the best start kept (the paper: 10 restarts, 200 steps). Here ``G`` is the decoder of the
study's VAE (``generator:``, the same recipe and cell as the other generative purifiers),
driven by its prior draws: ``z`` is the standard-normal ``ε`` of the coarsest level (``levels:
coarse``, the default: the finer levels at their prior means given it, a latent the size of a
small GAN's) or of every level (``all``: the fine maps can draw nearly any image, so the
projection keeps most of a perturbation), and ``G(z)`` the image the prior decodes from it at
temperature 1 — a VAE's decoder in the role of the GAN's generator, which trains in minutes on
CPU where a GAN takes hours and may not converge.
Adam on ``z`` (``lr``) replaces the paper's plain gradient steps.

Randomized (the starts come from the defended model's random stream) and declared not
differentiable: the output is the end of an optimization loop whose unrolled gradient is not
what attacks follow, so gradient attacks need BPDA (validation says so), with EOT over the
starts: the attack with which Athalye, Carlini & Wagner (ICML 2018, Table 1) left Defense-GAN
55 % accurate on MNIST.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from tasks.defenses.base import register
from tasks.defenses.generator import GeneratorParams
from tasks.defenses.mlvgm import GenerativePurifier
from tasks.models.generative import network
from tasks.registry import Params


class ProjectionParams(Params):
    """The generator's recipe and the projection's search."""

    generator: GeneratorParams = Field(
        default_factory=GeneratorParams, description="the generator's architecture and training"
    )
    levels: Literal["coarse", "all"] = Field(
        "coarse",
        description="the latent searched: the coarsest code (the finer levels at their prior "
        "means; a GAN-sized latent) or every level's (nearly any image: a weak projection)",
    )
    restarts: int = Field(10, ge=1, le=100, description="random starts z ~ N(0, I) (paper: 10)")
    steps: int = Field(50, ge=1, description="Adam steps on z per start (paper: 200 GD steps)")
    lr: float = Field(0.05, gt=0, description="Adam's learning rate on z")
    seed: int = Field(0, description="the starts' stream")


class Range:
    """The images a generator's prior decodes, ``G(z)``: ``z`` the standard-normal draws of
    every level (``coarse``: only the coarsest is searched, the finer ones stay 0, the
    prior means given the coarser codes), decoded at temperature 1."""

    def __init__(self, generator: nn.Module, like: torch.Tensor, *, coarse: bool) -> None:
        self.net, self.mean, self.std = network(generator)
        self.coarse = coarse
        self.shape = tuple(like.shape[1:])

    def zeros(self, n: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Every level's ``z`` at 0, for ``n`` images."""
        shapes = self.net.noise_shapes(n, self.shape[-2], self.shape[-1])
        return [torch.zeros(s, device=device, dtype=dtype) for s in shapes]

    def searched(self, z: list[torch.Tensor]) -> list[torch.Tensor]:
        """The levels of ``z`` a search moves."""
        return z[:1] if self.coarse else z

    def decode(self, z: list[torch.Tensor]) -> torch.Tensor:
        """``G(z)`` in [0, 1]: the top-down pass alone (the prior at every level), no
        encoder (:meth:`~tasks.models.generative.HVAE.decode_prior`)."""
        return torch.sigmoid(self.net.decode_prior(z, self.shape[-2], self.shape[-1]))


def project_codes(
    generator: nn.Module,
    x: torch.Tensor,
    rng: torch.Generator | None,
    *,
    restarts: int,
    steps: int,
    lr: float,
    coarse: bool = True,
    shared: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(G(z*), z*)`` for each image of ``x``: the generator's closest image found from
    ``restarts`` starts drawn from ``rng`` (``shared``: the same starts for every image),
    and its codes (every level's, one row per image)."""
    g = Range(generator, x, coarse=coarse)
    n = len(x)
    where = rng.device if rng is not None else x.device
    with torch.inference_mode(False), torch.enable_grad():
        target = x.detach().clone().repeat(restarts, 1, 1, 1)
        z = g.zeros(len(target), x.device, x.dtype)
        for i in range(1 if coarse else len(z)):
            shape = z[i].shape
            size = (restarts, 1, *shape[1:]) if shared else (restarts, n, *shape[1:])
            drawn = torch.randn(size, generator=rng, device=where, dtype=x.dtype).to(x.device)
            z[i] = drawn.expand(restarts, n, *shape[1:]).reshape(shape).clone()
        searched = g.searched(z)
        for v in searched:
            v.requires_grad_(True)
        opt = torch.optim.Adam(searched, lr=lr)
        for _ in range(steps):
            loss = ((g.decode(z) - target) ** 2).flatten(1).sum(1)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            images = g.decode(z)
            err = ((images - target) ** 2).flatten(1).sum(1).view(restarts, n)
            best = err.argmin(0)
            pick = (best, torch.arange(n, device=best.device))
            chosen = images.view(restarts, n, *x.shape[1:])[pick]
            codes = [v.detach().view(restarts, n, *v.shape[1:])[pick] for v in z]
    return chosen.detach().to(x.dtype), codes


def project(
    generator: nn.Module,
    x: torch.Tensor,
    rng: torch.Generator | None,
    *,
    restarts: int,
    steps: int,
    lr: float,
    coarse: bool = True,
    shared: bool = False,
) -> torch.Tensor:
    """``G(z*)`` of :func:`project_codes`."""
    return project_codes(
        generator, x, rng, restarts=restarts, steps=steps, lr=lr, coarse=coarse, shared=shared
    )[0]


@register("latent_projection")
class LatentProjection(GenerativePurifier):
    """Defense-GAN's projection onto the range of the study's generator (Samangouei 2018)."""

    Params = ProjectionParams
    params: ProjectionParams
    randomized = True
    differentiable = False
    encodes_input = False  # attacks on the generator's encoder are not planned on it

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        assert self.vae is not None  # wrap() refuses to build without it
        p = self.params
        return project(
            self.vae,
            x,
            generator,
            restarts=p.restarts,
            steps=p.steps,
            lr=p.lr,
            coarse=p.levels == "coarse",
            shared=self.per_batch_draws,
        )

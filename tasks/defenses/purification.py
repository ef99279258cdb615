"""One purification pass through a generator with latent levels, and the α schedules.

What ``vae_purify``, ``mlvgm_purify`` (:mod:`tasks.defenses.mlvgm`) and the search of a
learned α (:mod:`tasks.defenses.alpha_search`) share: :func:`schedule` gives the α of each
level for a schedule name or list, :func:`purify` decodes
``z_i = (1 − α_i)·μ_q,i + α_i·(μ_p,i + T·σ_p,i·ε)`` after the optional blur and noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from tasks.defenses.transforms import (
    GaussianBlur,
    GaussianBlurParams,
    GaussianNoise,
    GaussianNoiseParams,
)
from tasks.errors import InputError
from tasks.models.generative import network


def schedule(alpha: str | Sequence[float], levels: int, attenuation: float = 1.0) -> list[float]:
    """The α of each level, coarse to fine, for a schedule name or an explicit list."""
    if alpha == "learned":
        raise InputError("a learned α is searched for a classifier: read it from its schedule")
    if alpha == "linear":
        values = [i / levels for i in range(1, levels + 1)]
    elif alpha == "cosine":
        values = [0.5 * (1 - math.cos(math.pi * i / levels)) for i in range(1, levels + 1)]
    elif isinstance(alpha, str):
        raise InputError(f"alpha must be 'linear', 'cosine' or a list of numbers, got {alpha!r}")
    else:
        values = [float(a) for a in alpha]
        if len(values) != levels:
            raise InputError(f"alpha has {len(values)} values for a generator of {levels} levels")
    return [attenuation * a for a in values]


def purify(
    generator: nn.Module,
    x: torch.Tensor,
    alpha: Sequence[float],
    rng: torch.Generator | None,
    *,
    temperature: float = 1.0,
    noise: float = 0.0,
    blur: float = 0.0,
    shared: bool = False,
) -> torch.Tensor:
    """One purification of ``x`` (images in [0, 1]) through ``generator``, an image in [0, 1].

    Draws (input noise, then one ``ε`` per level where α > 0) come from ``rng`` on its
    device; ``shared``: one draw for the whole batch, so an input's purification does not
    depend on its position in the batch. With every α zero and no noise nothing is drawn.
    """
    net, mean, std = network(generator)
    where = rng.device if rng is not None else x.device

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        size = (1, *shape[1:]) if shared else shape
        eps = torch.randn(size, generator=rng, device=where, dtype=x.dtype).to(x.device)
        return eps.expand(shape)

    if blur > 0:
        x = GaussianBlur(GaussianBlurParams(sigma=blur)).transform(x, None)
    if noise > 0:
        noisy = GaussianNoise(GaussianNoiseParams(l2=noise))
        noisy.per_batch_draws = shared
        x = noisy.transform(x, rng)
    shapes = net.noise_shapes(len(x), x.shape[-2], x.shape[-1])
    if any(a > 0 for a in alpha):
        draws = [draw(s) for s in shapes]
    else:
        draws = [torch.zeros(s, device=x.device, dtype=x.dtype) for s in shapes]
    out = net.generate((x - mean) / std, alpha, temperature=temperature, noise=draws)
    return torch.sigmoid(out.logits)

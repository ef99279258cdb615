"""Generators with latent codes at several levels: ``hvae`` (top-down hierarchical VAE) and
``vae`` (its one-level case, a convolutional VAE).

The ``hvae`` follows the top-down inference of the ladder VAE and NVAE (Sønderby et al.,
"Ladder Variational Autoencoders", NeurIPS 2016; Vahdat & Kautz, "NVAE: A Deep Hierarchical
Variational Autoencoder", NeurIPS 2020), at the scale of small images:

- level 0, the coarsest, is a vector ``z_0`` of ``top_dim`` numbers with prior N(0, I);
- level ``i ≥ 1`` is a map of ``latent_channels`` at a resolution that doubles with each level
  (the finest is half the image's), with prior ``p(z_i | z_<i)`` computed from the decoder
  state, which already holds the coarser codes;
- the posterior of level ``i`` is the prior corrected from the bottom-up features of the
  input at that resolution, NVAE's residual form: ``μ_q = μ_p + Δμ``, ``log σ_q = log σ_p +
  Δlog σ`` (level 0: directly from the top features).

:meth:`HVAE.generate` runs the top-down pass with each level's code chosen as MLVGM
purification does (Serez et al., WACV 2025): ``z_i = (1 − α_i)·μ_q,i + α_i·(μ_p,i + T·σ_p,i·ε)``.
Because the posterior and prior of level ``i`` are computed from a decoder state that holds the
*chosen* ``z_<i``, a coarse level that is resampled changes every finer one, as in NVAE's code.
``α = 0`` everywhere is the deterministic reconstruction through the posterior means; training
draws from the posterior (:meth:`HVAE.elbo_terms`).

The output is the mean of a per-pixel Bernoulli (a sigmoid), trained with binary
cross-entropy on images in [0, 1]. Sizes follow the input at call time (adaptive pooling and
interpolation to exact sizes), so one network serves 8×8 digits and 32×32 colour images.
Built by :func:`tasks.models.build` like a classifier (the input is normalized inside by
:class:`~tasks.models.Normalized`; ``num_classes`` is ignored); the network's ``forward`` is the
reconstruction, an image in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks.models.base import MODELS, Normalized
from tasks.registry import Params

LOGVAR_RANGE = (-10.0, 6.0)  # log σ² clamp: keeps early training from overflowing exp()
TOP_GRID = 4  # the top features are pooled to TOP_GRID×TOP_GRID before the top linear layers


class HVAEParams(Params):
    """The hierarchical VAE's shape; its training recipe is the generator's (see
    :mod:`tasks.defenses.generator`)."""

    levels: int = Field(3, ge=1, le=4, description="latent levels, coarse to fine")
    width: int = Field(32, ge=4, le=512, description="channels of the hidden feature maps")
    top_dim: int = Field(16, ge=1, le=1024, description="size of the coarsest code z_0 (a vector)")
    latent_channels: int = Field(
        4, ge=1, le=64, description="channels of each finer code z_1 … (maps)"
    )


class VAEParams(Params):
    """A convolutional VAE: the one-level hierarchical VAE."""

    width: int = Field(32, ge=4, le=512, description="channels of the hidden feature maps")
    latent: int = Field(16, ge=1, le=1024, description="size of the code (a vector)")

    def hvae(self) -> HVAEParams:
        return HVAEParams(levels=1, width=self.width, top_dim=self.latent)


class Block(nn.Module):
    """``x + conv(silu(conv(silu(x))))``: a residual 3×3 block that keeps size and width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(width, width, 3, padding=1)
        self.b = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.silu(self.a(F.silu(x))))


@dataclass
class Pass:
    """One top-down pass: the output logits and, per level, the posterior, the prior and the
    code it used (level 0's prior is N(0, I): ``prior_mu`` zeros, ``prior_logvar`` zeros)."""

    logits: torch.Tensor
    post_mu: list[torch.Tensor]
    post_logvar: list[torch.Tensor]
    prior_mu: list[torch.Tensor]
    prior_logvar: list[torch.Tensor]
    codes: list[torch.Tensor]

    def kl(self) -> list[torch.Tensor]:
        """Per level, the per-sample KL(q ‖ p) of two diagonal Gaussians, in nats."""
        out = []
        for mq, lq, mp, lp in zip(
            self.post_mu, self.post_logvar, self.prior_mu, self.prior_logvar, strict=True
        ):
            term = 0.5 * (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1)
            out.append(term.flatten(1).sum(1))
        return out


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Resolutions of the spatial codes z_1 … z_{levels-1}, coarse to fine: the finest is
    half the image's (rounded up), each coarser one half of the next."""
    return [
        (math.ceil(height / 2 ** (levels - i)), math.ceil(width / 2 ** (levels - i)))
        for i in range(1, levels)
    ]


@MODELS.register("hvae")
class HVAE(nn.Module):
    """Top-down hierarchical VAE with 1–4 latent levels, coarse to fine (NVAE-style)."""

    Params = HVAEParams
    part_of = "a generative purifier or of gat (the `generator:` in its params)"

    def __init__(
        self, params: HVAEParams | VAEParams, input_shape: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        p = params.hvae() if isinstance(params, VAEParams) else params
        c, w, self.levels = int(input_shape[0]), p.width, p.levels
        self.top_dim, self.latent_channels = p.top_dim, p.latent_channels
        hidden = 4 * w
        self.stem = nn.Conv2d(c, w, 3, padding=1)
        self.up_blocks = nn.ModuleList(Block(w) for _ in range(self.levels - 1))
        self.top_in = nn.Linear(w * TOP_GRID * TOP_GRID, hidden)
        self.top_post = nn.Linear(hidden, 2 * p.top_dim)
        self.top_out = nn.Linear(p.top_dim, w * TOP_GRID * TOP_GRID)
        self.top_block = Block(w)
        k = p.latent_channels
        self.priors = nn.ModuleList(nn.Conv2d(w, 2 * k, 3, padding=1) for _ in self.up_blocks)
        self.posts = nn.ModuleList(nn.Conv2d(2 * w, 2 * k, 3, padding=1) for _ in self.up_blocks)
        self.merges = nn.ModuleList(nn.Conv2d(k, w, 1) for _ in self.up_blocks)
        self.down_blocks = nn.ModuleList(Block(w) for _ in self.up_blocks)
        self.out = nn.Sequential(Block(w), nn.SiLU(), nn.Conv2d(w, c, 3, padding=1))
        for head in [self.top_post, *self.priors, *self.posts]:  # start at q = p = N(0, I)
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def bottom_up(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The top features (a vector per sample) and the features at each spatial level's
        resolution, coarse to fine."""
        h = F.silu(self.stem(x))
        sizes = level_sizes(x.shape[-2], x.shape[-1], self.levels)
        feats: list[torch.Tensor] = []
        for size, block in zip(reversed(sizes), self.up_blocks, strict=True):
            h = block(F.adaptive_avg_pool2d(h, size))
            feats.append(h)
        feats.reverse()
        top = F.silu(self.top_in(F.adaptive_avg_pool2d(h, TOP_GRID).flatten(1)))
        return top, feats

    def generate(
        self,
        x: torch.Tensor,
        alpha: Sequence[float] | None,
        *,
        temperature: float = 1.0,
        noise: Sequence[torch.Tensor] | None = None,
        offsets: Sequence[torch.Tensor | None] | None = None,
    ) -> Pass:
        """One top-down pass over the (normalized) input ``x``.

        Args:
            x: the network's input (what :class:`~tasks.models.Normalized` hands it).
            alpha: per level, coarse to fine, the weight of the prior sample in the code
                (``z_i = (1 − α_i)·μ_q + α_i·(μ_p + T·σ_p·ε_i)``); None: training's
                reparameterized posterior sample ``μ_q + σ_q·ε_i``.
            temperature: ``T``, the scale of the prior samples' spread.
            noise: the ``ε_i`` per level (shapes of :meth:`noise_shapes`); None: drawn from
                torch's global generator.
            offsets: per level, None or a tensor of the code's shape added to the chosen
                code before it is decoded and before the finer levels condition on it (a
                perturbation in latent space, as generative adversarial training makes).
        """
        if alpha is not None and len(alpha) != self.levels:
            raise ValueError(f"alpha has {len(alpha)} values for {self.levels} levels")
        top, feats = self.bottom_up(x)
        n, out = len(x), Pass(x, [], [], [], [], [])
        shapes = self.noise_shapes(n, x.shape[-2], x.shape[-1])
        eps = (
            list(noise)
            if noise is not None
            else [torch.randn(s, device=x.device, dtype=x.dtype) for s in shapes]
        )
        mu, logvar = self.top_post(top).chunk(2, 1)
        zeros = torch.zeros_like(mu)
        shift = list(offsets) if offsets is not None else [None] * self.levels
        s = self._choose(out, 0, mu, logvar, zeros, zeros, eps[0], alpha, temperature, shift[0])
        s = F.silu(self.top_out(s)).view(n, -1, TOP_GRID, TOP_GRID)
        sizes = level_sizes(x.shape[-2], x.shape[-1], self.levels) + [tuple(x.shape[-2:])]
        s = self.top_block(F.interpolate(s, size=sizes[0], mode="nearest"))
        for i in range(1, self.levels):
            p_mu, p_logvar = self.priors[i - 1](s).chunk(2, 1)
            d_mu, d_logvar = self.posts[i - 1](torch.cat([s, feats[i - 1]], 1)).chunk(2, 1)
            z = self._choose(
                out,
                i,
                p_mu + d_mu,
                p_logvar + d_logvar,
                p_mu,
                p_logvar,
                eps[i],
                alpha,
                temperature,
                shift[i],
            )
            s = self.down_blocks[i - 1](s + self.merges[i - 1](z))
            s = F.interpolate(s, size=sizes[i], mode="nearest")
        out.logits = self.out(s)
        return out

    def decode_prior(
        self, noise: Sequence[torch.Tensor], height: int, width: int, temperature: float = 1.0
    ) -> torch.Tensor:
        """The logits :meth:`generate` gives with every α = 1 (prior samples at every level,
        ``noise`` the ``ε_i``), without the bottom-up pass over an input, whose posterior
        α = 1 weights by 0: what a projection onto the generator's range decodes."""
        eps = list(noise)
        n = len(eps[0])
        zeros = torch.zeros(n, self.top_dim, device=eps[0].device, dtype=eps[0].dtype)
        top_logvar = zeros.clamp(*LOGVAR_RANGE)
        z = zeros + temperature * (0.5 * top_logvar).exp() * eps[0]
        s = F.silu(self.top_out(z)).view(n, -1, TOP_GRID, TOP_GRID)
        sizes = level_sizes(height, width, self.levels) + [(height, width)]
        s = self.top_block(F.interpolate(s, size=sizes[0], mode="nearest"))
        for i in range(1, self.levels):
            p_mu, p_logvar = self.priors[i - 1](s).chunk(2, 1)
            p_logvar = p_logvar.clamp(*LOGVAR_RANGE)
            z = p_mu + temperature * (0.5 * p_logvar).exp() * eps[i]
            s = self.down_blocks[i - 1](s + self.merges[i - 1](z))
            s = F.interpolate(s, size=sizes[i], mode="nearest")
        return self.out(s)

    def _choose(
        self,
        out: Pass,
        level: int,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        p_mu: torch.Tensor,
        p_logvar: torch.Tensor,
        eps: torch.Tensor,
        alpha: Sequence[float] | None,
        temperature: float,
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logvar = logvar.clamp(*LOGVAR_RANGE)
        p_logvar = p_logvar.clamp(*LOGVAR_RANGE)
        if alpha is None:
            z = mu + (0.5 * logvar).exp() * eps
        else:
            a = float(alpha[level])
            z = (
                mu
                if a == 0
                else (1 - a) * mu + a * (p_mu + temperature * (0.5 * p_logvar).exp() * eps)
            )
        if offset is not None:
            z = z + offset
        out.post_mu.append(mu)
        out.post_logvar.append(logvar)
        out.prior_mu.append(p_mu)
        out.prior_logvar.append(p_logvar)
        out.codes.append(z)
        return z

    def noise_shapes(self, n: int, height: int, width: int) -> list[tuple[int, ...]]:
        """The shapes of the per-level draws ``ε_i`` of a batch of ``n`` images."""
        maps = [(n, self.latent_channels, h, w) for h, w in level_sizes(height, width, self.levels)]
        return [(n, self.top_dim), *maps]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction (α = 0: posterior means at every level), an image in [0, 1]."""
        return torch.sigmoid(self.generate(x, [0.0] * self.levels).logits)


@MODELS.register("vae")
class VAE(HVAE):
    """Convolutional VAE (Kingma & Welling 2014): the one-level hierarchical VAE."""

    Params = VAEParams  # type: ignore[assignment]


class AlphaScheduleParams(Params):
    """The number of levels of the generator a schedule is for."""

    levels: int = Field(3, ge=1, le=4, description="latent levels, coarse to fine")


@MODELS.register("alpha_schedule")
class AlphaSchedule(nn.Module):
    """An α schedule searched for one classifier (``mlvgm_purify``'s ``alpha: learned``): a
    stored artifact, one α per level, coarse to fine; not a network (it has no forward)."""

    Params = AlphaScheduleParams
    part_of = "mlvgm_purify with `alpha: learned` (its search cell)"
    alpha: torch.Tensor

    def __init__(self, params: AlphaScheduleParams, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.register_buffer("alpha", torch.zeros(params.levels, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("an α schedule is not a network: read its values()")

    def values(self) -> list[float]:
        return [float(a) for a in self.alpha]


def schedule_of(artifact: nn.Module) -> AlphaSchedule:
    """The :class:`AlphaSchedule` inside a built (normalization-wrapped) one."""
    net = artifact.net if isinstance(artifact, Normalized) else artifact
    if not isinstance(net, AlphaSchedule):
        raise TypeError(f"expected an 'alpha_schedule' artifact, got {type(net).__name__}")
    return net


def network(generator: nn.Module) -> tuple[HVAE, torch.Tensor, torch.Tensor]:
    """The :class:`HVAE` inside a built generator and the normalization it applies to its
    input (mean and std buffers): ``(net, mean, std)``."""
    if isinstance(generator, Normalized) and isinstance(generator.net, HVAE):
        return generator.net, generator.mean, generator.std
    if isinstance(generator, HVAE):
        one = torch.ones(1, 1, 1, 1)
        return generator, one * 0, one
    raise TypeError(
        f"expected a generator built from 'hvae' or 'vae', got {type(generator).__name__}"
    )


def elbo_terms(generator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per sample: the reconstruction loss (binary cross-entropy summed over pixels, of one
    posterior sample) and the KL of each level, in nats; ``x`` in [0, 1]."""
    net, mean, std = network(generator)
    out = net.generate((x - mean) / std, None)
    rec = F.binary_cross_entropy_with_logits(out.logits, x, reduction="none").flatten(1).sum(1)
    return rec, out.kl()

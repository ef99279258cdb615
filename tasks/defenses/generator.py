"""The generator that generative purifiers need, and the recipe that trains it in a study.

A purifier (``vae_purify``, ``mlvgm_purify``: :mod:`tasks.defenses.mlvgm`) declares the role
``vae`` with :class:`GeneratorRecipe`. Its params hold the generator's recipe under
``generator:`` (:class:`GeneratorParams`: architecture, shape and training); only that part
enters the generator's train cell, so every purifier of a study that names one recipe shares
one trained generator per dataset, whatever its α schedule or number of draws.

Training maximizes the evidence lower bound: binary cross-entropy of the reconstruction
(one posterior sample) plus ``beta`` times the KL of every level, with ``beta`` warmed up
linearly from 0 over the first ``warmup`` epochs (Sønderby et al. 2016; NVAE's KL warm-up)
and each level's KL penalized only above its ``free_bits`` allowance; Adam, shuffled
minibatches streamed from the stored images, all under ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator
from torch import nn

from tasks import models, progress
from tasks.batches import batches
from tasks.datasets import Data, Split
from tasks.defenses.base import device_of
from tasks.defenses.requirements import Recipe
from tasks.models.generative import HVAE, HVAEParams, VAEParams, elbo_terms, network
from tasks.registry import Params

EVAL_SEED = 0x5EED  # the posterior draws of the evaluation ELBO
# Free bits (Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow",
# NeurIPS 2016), unequal across levels: without them the coarsest code of a 3-level hvae on
# digits collapsed to its prior (KL 0.1-0.2 nats; keep-coarse accuracy 11 %) while the finer
# maps carried the image; 8 nats there and 1 on the finer levels keep every level in use and
# the class in the coarse code (keep-coarse accuracy 90 % of the classifier's 98 %).
FREE_COARSE, FREE_FINE = 8.0, 1.0


class GeneratorParams(Params):
    """A generator's architecture and training recipe (all of it enters the cell key)."""

    arch: Literal["hvae", "vae"] = Field("hvae", description="hierarchical VAE, or a plain one")
    levels: int = Field(3, ge=1, le=4, description="hvae: latent levels, coarse to fine")
    width: int = Field(32, ge=4, le=512, description="channels of the hidden feature maps")
    top_dim: int = Field(16, ge=1, le=1024, description="size of the coarsest code (vae: the code)")
    latent_channels: int = Field(4, ge=1, le=64, description="hvae: channels of the finer codes")
    epochs: int = Field(40, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="Adam's learning rate")
    beta: float = Field(1.0, gt=0, description="weight of the KL terms once warmed up")
    warmup: int = Field(5, ge=0, description="epochs over which beta rises linearly from 0")
    free_bits: float | list[float] | None = Field(
        None,
        description="nats of KL left unpenalized per level (batch mean; a list: per level, "
        "coarse to fine); default: 8 on the coarsest level, 1 on each finer one",
    )
    seed: int = Field(0, description="initial weights, batch order and posterior draws")
    train_size: int | None = Field(
        None,
        ge=1,
        description="train on this many images of the training part, drawn by seed "
        "(default: all of it)",
    )
    checkpoint: str | None = Field(
        None,
        description="a generator file advgrid wrote (a generator cell's artifact) to use "
        "instead of training one; the study takes its recipe from it and checks it was "
        "trained on the study's dataset (keys hold its sha256, not its path)",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for optional in ("train_size", "checkpoint"):  # absent: earlier keys stay as they were
            if data.get(optional) is None:
                data.pop(optional, None)
        return data

    def training_indices(self, train: torch.Tensor) -> torch.Tensor:
        """The training indices the generator fits: all of ``train``, or ``train_size`` of
        them drawn by ``seed`` (in their original order)."""
        if self.train_size is None or self.train_size >= len(train):
            return train
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
        return train[order[: self.train_size].sort().values]

    @model_validator(mode="after")
    def _free_bits_per_level(self) -> GeneratorParams:
        fb = self.free_bits
        if isinstance(fb, list) and len(fb) != self.n_levels:
            raise ValueError(
                f"free_bits lists {len(fb)} values for a generator of {self.n_levels} "
                "level(s); give one per level, coarse to fine, or one number for all"
            )
        if any(f < 0 for f in ([] if fb is None else fb if isinstance(fb, list) else [fb])):
            raise ValueError(f"free_bits must be ≥ 0 nats, got {fb}")
        return self

    def free_nats(self) -> list[float]:
        """The KL allowance of each level, coarse to fine (see ``free_bits``)."""
        if self.free_bits is None:
            return [FREE_COARSE] + [FREE_FINE] * (self.n_levels - 1)
        if isinstance(self.free_bits, list):
            return [float(f) for f in self.free_bits]
        return [float(self.free_bits)] * self.n_levels

    @property
    def n_levels(self) -> int:
        """The generator's number of latent levels (a ``vae`` has one)."""
        return 1 if self.arch == "vae" else self.levels

    def architecture(self) -> tuple[str, dict[str, Any]]:
        """The registered architecture and its params, as a checkpoint records them."""
        if self.arch == "vae":
            return "vae", VAEParams(width=self.width, latent=self.top_dim).model_dump(mode="json")
        shape = HVAEParams(
            levels=self.levels,
            width=self.width,
            top_dim=self.top_dim,
            latent_channels=self.latent_channels,
        )
        return "hvae", shape.model_dump(mode="json")


class GeneratorRecipe(Recipe):
    """The generator of a purifier (role ``vae``): trained on the clean training part by
    :func:`fit_generator` under the ``generator:`` part of the defense's params."""

    def architecture(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._generator(params).architecture()

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._generator(params).model_dump(mode="json")

    def checkpoint(self, params: Mapping[str, Any]) -> str | None:
        return self._generator(params).checkpoint

    def fit(
        self, values: Mapping[str, Any], data: Data, split: Split, device: torch.device
    ) -> tuple[nn.Module, dict[str, float]]:
        """The trained generator, its training loss and its evaluation metrics
        (:func:`generator_metrics`) on the clean evaluation slice."""
        params = GeneratorParams(**values)
        gen = build_generator(params, data).to(device)
        metrics = fit_generator(gen, data, params.training_indices(split.train), params)
        metrics.update(generator_metrics(gen, data.images(split.eval).to(device)))
        return gen, metrics

    @staticmethod
    def _generator(params: Mapping[str, Any]) -> GeneratorParams:
        return GeneratorParams.model_validate(params.get("generator", {}))


def build_generator(params: GeneratorParams, data: Data) -> nn.Module:
    """The untrained generator for ``data``'s images, weights from ``params.seed``."""
    arch, arch_params = params.architecture()
    return models.build(
        arch,
        models.params_of(arch, arch_params),
        input_shape=data.input_shape,
        num_classes=0,
        mean=data.mean,
        std=data.std,
        seed=params.seed,
    )


def fit_generator(
    generator: nn.Module, data: Data, indices: torch.Tensor, params: GeneratorParams
) -> dict[str, float]:
    """Train ``generator`` in place on the images at ``indices`` (negative ELBO, KL warm-up).

    Deterministic under ``params.seed``: the batch order and the posterior draws come from
    torch's generator seeded inside a forked RNG. Returns the last epoch's mean loss per
    image (``train_loss``, with the warmed-up beta) and its mean KL (``train_kl``); the
    generator is left in eval mode.
    """
    dev = device_of(generator)
    opt = torch.optim.Adam(generator.parameters(), lr=params.lr)
    loss_sum = kl_sum = 0.0
    steps = max(1, -(-len(indices) // params.batch_size))
    free = params.free_nats()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(params.seed)
        order = torch.Generator().manual_seed(params.seed)
        generator.train()
        report = progress.Reporter(progress.current(), "epoch", params.epochs)
        for epoch in range(params.epochs):
            loss_sum = kl_sum = 0.0
            seen = 0
            perm = indices[torch.randperm(len(indices), generator=order)]
            for step, (x, _) in enumerate(
                batches(data.x, data.y, perm.split(params.batch_size), dev)
            ):
                warm = min(1.0, (epoch + step / steps) / params.warmup) if params.warmup else 1.0
                beta = params.beta * warm
                rec, kls = elbo_terms(generator, x)
                kl = torch.stack(kls).sum(0)
                penalized = sum(k.mean().clamp_min(f) for k, f in zip(kls, free, strict=True))
                loss = rec.mean() + beta * penalized
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(x)
                kl_sum += float(kl.detach().sum())
                seen += len(x)
                report(epoch + seen / len(indices), len(x), loss=loss_sum / seen)
            report(epoch + 1, final=True, loss=loss_sum / max(1, len(indices)))
    opt.zero_grad(set_to_none=True)
    generator.eval()
    n = max(1, len(indices))
    return {"train_loss": loss_sum / n, "train_kl": kl_sum / n}


def generator_metrics(generator: nn.Module, x: torch.Tensor, batch: int = 500) -> dict[str, float]:
    """On clean images ``x``: ``eval_recon_mse`` (of the α = 0 reconstruction),
    ``eval_elbo`` (nats per image, one posterior draw under a fixed seed, beta 1) and
    ``eval_kl_level_<i>`` per level (nats per image; a level near 0 is unused: its posterior
    equals its prior, so it carries nothing about the input)."""
    net, _, _ = network(generator)
    mse = elbo = 0.0
    kls = torch.zeros(net.levels, dtype=torch.float64)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_SEED)
        for xb in x.split(batch):
            mse += float(F.mse_loss(generator(xb), xb, reduction="sum")) / xb[0].numel()
            rec, per_level = elbo_terms(generator, xb)
            level = torch.stack(per_level).double()
            elbo -= float(rec.double().sum() + level.sum())
            kls += level.sum(1).cpu()
    n = max(1, len(x))
    out = {"eval_recon_mse": mse / n, "eval_elbo": elbo / n}
    out.update({f"eval_kl_level_{i}": float(k) / n for i, k in enumerate(kls)})
    return out


def levels_of(generator: nn.Module) -> int:
    """The number of latent levels of a built generator."""
    net: HVAE = network(generator)[0]
    return net.levels

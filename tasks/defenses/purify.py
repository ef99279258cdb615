"""Purification by a denoising autoencoder trained on clean data, run before the classifier.

MagNet's reformer (Meng & Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples",
CCS 2017), after Gu & Rigazio, "Towards Deep Neural Network Architectures Robust to
Adversarial Examples" (ICLR 2015 workshop): an autoencoder trained to reconstruct clean inputs
from noisy ones (Gaussian noise of standard deviation 0.1, MSE loss, as in MagNet) maps an
input back towards the data manifold; the defended model is ``model(clamp(dae(x), 0, 1))``.

Three parts:

- ``dae`` in :data:`tasks.models.MODELS` (:class:`tasks.models.DAE`, registered with the
  other architectures): the autoencoder, shaped like MagNet's CIFAR-10 reformer (three 3×3
  convolutions, no pooling, so any image size; a sigmoid output; hidden width and activation
  as :class:`~tasks.models.DAEParams` explains). Built with :func:`tasks.models.build`
  like a classifier (the input is normalized inside); its output is an image in [0, 1], not
  logits, and ``num_classes`` is ignored.
- :func:`fit_autoencoder`: the training, deterministic under ``params.seed``.
- ``autoencoder_purify`` in :data:`tasks.defenses.DEFENSES`: the wrapper, differentiable
  (autograd through the autoencoder is exact). It needs the trained autoencoder, which
  :func:`tasks.defenses.wrap` cannot supply: the defense declares it in ``requires``
  (role ``autoencoder``, with :class:`AutoencoderRecipe`) and takes it as a keyword of its
  constructor; :func:`wrap_with` does both.

Wiring (the requirement's, used by :mod:`orchestrator.study.plan` and :mod:`tasks.cells`): the
defense's params are the autoencoder's recipe, so the planner derives from them one
autoencoder training cell per (dataset, recipe). On the worker that cell builds the network
by :func:`build_autoencoder`, trains it by :func:`fit_autoencoder` on the clean training part
and stores it like a classifier's checkpoint (``arch: dae``, ``params:
PurifyParams.dae_params()``). Each attack or transfer cell whose (target) defense is
``autoencoder_purify`` lists that checkpoint as its extra input ``autoencoder``, loads it like a
model and calls ``DEFENSES.get(name).obj(params, autoencoder=dae).wrap(model)`` (for every
role in the defense's ``requires``), or :func:`wrap_with`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks import models, progress
from tasks.datasets import Data, Split
from tasks.defenses.base import Defended, InputTransform, register
from tasks.defenses.requirements import Recipe, Requirement
from tasks.errors import TaskError
from tasks.models import DAEParams
from tasks.params import Number
from tasks.registry import Params


class MissingArtifactError(TaskError):
    """A defense built without the trained artifact (an autoencoder) that it needs."""

    recurs = True  # every attempt builds it the same way (tasks.errors.recurs)


class PurifyParams(Params):
    """The autoencoder's architecture and training recipe (both enter the cell key)."""

    width: int = Field(16, ge=1, le=512, description="the autoencoder's hidden channels")
    activation: Literal["relu", "sigmoid"] = Field("relu", description="its hidden activation")
    noise: Number = Field(0.1, ge=0, description="training noise std (MagNet: 0.1)")
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0, description="Adam's learning rate")
    weight_decay: float = Field(1e-9, ge=0, description="L2 on the weights (MagNet: 1e-9)")
    seed: int = Field(0, description="initial weights, batch order and noise")

    def dae_params(self) -> DAEParams:
        """The architecture's params (what the autoencoder's checkpoint records)."""
        return DAEParams(width=self.width, activation=self.activation)


class AutoencoderRecipe(Recipe):
    """The autoencoder of ``autoencoder_purify``: a ``dae`` trained on the clean training part
    by :func:`fit_autoencoder` under the defense's params."""

    def architecture(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return "dae", PurifyParams.model_validate(params).dae_params().model_dump(mode="json")

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return PurifyParams.model_validate(params).model_dump(mode="json")

    def fit(
        self, values: Mapping[str, Any], data: Data, split: Split, device: torch.device
    ) -> tuple[nn.Module, dict[str, float]]:
        """The trained autoencoder, its training metrics and ``eval_mse``: its
        reconstruction error on the clean evaluation slice."""
        params = PurifyParams(**values)
        dae = build_autoencoder(
            params, input_shape=data.input_shape, mean=data.mean, std=data.std
        ).to(device)
        metrics = fit_autoencoder(dae, data.images(split.train).to(device), params)
        with torch.no_grad():
            x_eval = data.images(split.eval).to(device)
            metrics["eval_mse"] = float(F.mse_loss(dae(x_eval), x_eval))
        return dae, metrics


@register("autoencoder_purify")
class AutoencoderPurify(InputTransform):
    """Denoising-autoencoder purification before the classifier (Meng & Chen 2017).

    Needs the trained autoencoder: ``AutoencoderPurify(params, autoencoder=dae).wrap(model)``
    or :func:`wrap_with`. Differentiable: the transform is a network.
    """

    Params = PurifyParams
    params: PurifyParams
    differentiable = True
    requires: ClassVar[Mapping[str, Requirement]] = {
        "autoencoder": Requirement(model="autoencoder", recipe=AutoencoderRecipe())
    }

    def __init__(self, params: PurifyParams, *, autoencoder: nn.Module | None = None) -> None:
        super().__init__(params)
        self.autoencoder = autoencoder

    def wrap(self, model: nn.Module) -> Purified:
        if self.autoencoder is None:
            raise MissingArtifactError(
                f"defense {self.name!r} needs its trained autoencoder: build it with "
                "`AutoencoderPurify(params, autoencoder=dae)` or "
                "`tasks.defenses.purify.wrap_with(model, dae, params)`, the autoencoder trained by "
                "`tasks.defenses.purify.fit_autoencoder` (a study cell gets it as its input "
                "artifact 'autoencoder')"
            )
        return Purified(model, self)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        assert self.autoencoder is not None  # wrap() refuses to build without it
        return self.autoencoder(x).clamp(0, 1)


class Purified(Defended):
    """``model(clamp(autoencoder(x), 0, 1))``; the autoencoder is a submodule, so its weights
    are in the state dict under ``autoencoder.`` and move with ``.to()``."""

    model: nn.Module
    defense: AutoencoderPurify

    def __init__(self, model: nn.Module, defense: AutoencoderPurify) -> None:
        super().__init__(model, defense)
        self.autoencoder = defense.autoencoder


def wrap_with(model: nn.Module, autoencoder: nn.Module, params: PurifyParams) -> Purified:
    """``model`` behind ``autoencoder_purify`` with the trained ``autoencoder``."""
    return AutoencoderPurify(params, autoencoder=autoencoder).wrap(model)


def build_autoencoder(
    params: PurifyParams,
    *,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Module:
    """The untrained ``dae`` of ``params.width`` for the dataset, weights from ``params.seed``."""
    return models.build(
        "dae",
        params.dae_params(),
        input_shape=input_shape,
        num_classes=0,
        mean=mean,
        std=std,
        seed=params.seed,
    )


def noise_seed(seed: int) -> int:
    """The seed of the training noise, derived so that it is not the batch-order stream."""
    return (seed * 0x9E3779B97F4A7C15 + 0xDAE) % 2**63


def fit_autoencoder(dae: nn.Module, x: torch.Tensor, params: PurifyParams) -> dict[str, float]:
    """Train ``dae`` in place to reconstruct ``x`` from ``clip(x + N(0, noise²))``.

    Mirrors :func:`tasks.training.fit`: Adam, shuffled minibatches from a generator seeded by
    ``params.seed``, noise from a second seeded generator on ``x``'s device; same inputs and
    seed give the same weights. Returns the final epoch's mean reconstruction MSE
    (``train_mse``) and the mean MSE of the noisy inputs it saw (``noisy_mse``); the
    autoencoder is left in eval mode.
    """
    order_gen = torch.Generator().manual_seed(params.seed)
    noise_gen = torch.Generator(device=x.device).manual_seed(noise_seed(params.seed))
    opt = torch.optim.Adam(dae.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    dae.train()
    mse = noisy_mse = 0.0
    report = progress.Reporter(progress.current(), "epoch", params.epochs)
    for epoch in range(params.epochs):
        mse = noisy_mse = 0.0
        seen = 0
        for batch in (
            torch.randperm(len(x), generator=order_gen).to(x.device).split(params.batch_size)
        ):
            clean = x[batch]
            eps = torch.randn(clean.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
            noisy = (clean + params.noise * eps).clamp(0, 1)
            loss = F.mse_loss(dae(noisy), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mse += float(loss.detach()) * len(batch)
            noisy_mse += float(F.mse_loss(noisy, clean)) * len(batch)
            seen += len(batch)
            report(epoch + seen / len(x), len(batch), loss=mse / seen)
        report(epoch + 1, final=True, loss=mse / len(x))
    opt.zero_grad(set_to_none=True)
    dae.eval()
    return {"train_mse": mse / len(x), "noisy_mse": noisy_mse / len(x)}

"""Generative purification: ``vae_purify`` (reconstruction) and ``mlvgm_purify`` (multi-latent
interpolation towards prior samples), before a classifier trained on clean data.

``mlvgm_purify`` is the defense of Serez et al., "Pre-trained Multiple Latent Variable
Generative Models are good defenders against Adversarial Attacks" (WACV 2025, arXiv
2412.03453): encode the input to a code per level, draw a prior sample per level, decode

    z_i = (1 − α_i)·z_i^e + α_i·z_i^s,   α rising from the coarsest level (1) to the finest (N),

and classify the decoded image with the untouched classifier, averaging its logits over
``draws`` purifications (the paper: 32). With the hierarchical VAE of
:mod:`tasks.models.generative`, ``z_i^e`` is the posterior mean and ``z_i^s = μ_p + T·σ_p·ε``
a sample of the prior given the already-chosen coarser codes (NVAE's code path, ``T`` = 0.6
in the paper's NVAE setting). Schedules (index 1 the coarsest; all times ``attenuation``,
the paper's 0.7 on two of its three tasks):

- ``linear``: α_i = i / N;
- ``cosine``: α_i = ½·(1 − cos(π·i / N));
- a list of N values in [0, 1], coarse to fine;
- ``learned``: searched for the classifier it defends, on one-step adversaries of training
  images, as the paper learns it (:mod:`tasks.defenses.alpha_search`; params under
  ``search:``). The search is a train cell of its own per wrapped model; its result is the
  cell input ``alpha_schedule`` and the ``mlvgm_alpha_level_<i>`` metrics of every cell.

Optional preprocessing, as in the paper's code: a Gaussian blur of ``blur`` pixels, then
Gaussian noise rescaled to the L2 norm ``noise`` per image. ``vae_purify`` is α = 0 at every
level without preprocessing: a deterministic reconstruction through the posterior means (the
paper's α = 0 ablation, and what a reviewer attacks as a deterministic surrogate).

Both are differentiable: autograd runs through the encoder, the interpolation and the
reparameterized prior samples, so a plain gradient attack is the exact-gradient attack the
paper runs; ``adaptive: eot`` replays fixed draws (common random numbers), ``bpda`` is a
control. Both need the trained generator (role ``vae``; :mod:`tasks.defenses.generator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from tasks.datasets import Data, Split
from tasks.defenses.alpha_search import AlphaSearchParams, AlphaSearchRecipe
from tasks.defenses.base import Defended, InputTransform, device_of, register
from tasks.defenses.generator import GeneratorParams, GeneratorRecipe
from tasks.defenses.purification import purify, schedule
from tasks.defenses.purify import MissingArtifactError
from tasks.defenses.requirements import Requirement
from tasks.models.generative import network, schedule_of
from tasks.registry import Params

Alpha = Annotated[float, Field(ge=0, le=1)]
METRICS_SEED = 0xA1FA  # the prior draws of a purifier's "keep level ≤ k" metrics

# one trained generator per (dataset, recipe), whichever purifier asks for it; the role is
# ``vae`` (the constructor's keyword and the cell input), as ``generator`` is the name of a
# defended model's random stream
GENERATOR: Mapping[str, Requirement] = {
    "vae": Requirement(model="generator", recipe=GeneratorRecipe(), owner="mlvgm_purify")
}


class VAEPurifyParams(Params):
    """The generator's recipe; the reconstruction itself has no parameters."""

    generator: GeneratorParams = Field(
        default_factory=GeneratorParams, description="the generator's architecture and training"
    )


class MLVGMParams(Params):
    """The generator's recipe, the α schedule, the preprocessing and the draws."""

    generator: GeneratorParams = Field(
        default_factory=GeneratorParams, description="the generator's architecture and training"
    )
    alpha: Literal["linear", "cosine", "learned"] | list[Alpha] = Field(
        "linear",
        description="α per level, coarse to fine: linear, cosine, learned (searched, see "
        "search) or a list in [0, 1]",
    )
    search: AlphaSearchParams | None = Field(
        None,
        description="alpha: learned: the search (one-step L2 FGSM adversaries on the α = 0 "
        "pipeline, candidates scored by the purified accuracy; default: its defaults)",
    )
    attenuation: float = Field(1.0, ge=0, le=1, description="multiplies every α (paper: 0.7)")
    temperature: float = Field(0.6, gt=0, description="T: spread of the prior samples")
    noise: float = Field(0.0, ge=0, description="L2 norm of Gaussian input noise (0: none)")
    blur: float = Field(0.0, ge=0, description="sigma in pixels of a Gaussian blur (0: none)")
    draws: int = Field(32, ge=1, description="purifications whose logits are averaged")
    seed: int = Field(0, description="the draws' stream")

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha_values(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("linear", "cosine", "learned"):
            raise ValueError(
                f"alpha must be 'linear', 'cosine', 'learned' or a list of numbers in [0, 1], "
                f"one per level from coarse to fine; got {value!r}"
            )
        if isinstance(value, list):
            for i, a in enumerate(value):
                if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
                    raise ValueError(
                        f"alpha[{i}] is {a!r}: each α is the weight of the prior sample at its "
                        "level and must be a number in [0, 1]"
                    )
        return value

    @model_validator(mode="after")
    def _alpha_per_level(self) -> MLVGMParams:
        levels = self.generator.n_levels
        if isinstance(self.alpha, list) and len(self.alpha) != levels:
            raise ValueError(
                f"alpha lists {len(self.alpha)} values but the generator has {levels} "
                f"level{'s' if levels != 1 else ''} (generator.arch: {self.generator.arch}"
                f"{'' if self.generator.arch == 'vae' else f', levels: {levels}'}); give one "
                "α per level, coarse to fine, or a schedule: linear, cosine or learned"
            )
        if self.search is not None and self.alpha != "learned":
            raise ValueError(
                f"search: is how `alpha: learned` is searched, but alpha is {self.alpha!r}; "
                "set `alpha: learned` or remove search:"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.search is None:  # absent: the keys of the other schedules stay as they were
            data.pop("search", None)
        return data

    def searched(self) -> AlphaSearchParams:
        """How ``alpha: learned`` is searched (``search:``, defaults filled in)."""
        return self.search or AlphaSearchParams()

    def alphas(self, learned: nn.Module | None = None) -> list[float]:
        """The α of each level, coarse to fine, attenuation applied; ``learned``: the
        searched schedule (the artifact) that ``alpha: learned`` reads."""
        if self.alpha == "learned":
            if learned is None:
                raise MissingArtifactError(
                    "alpha: learned reads its searched schedule: build the defense with "
                    "`MLVGMPurify(params, vae=generator, alpha_schedule=schedule)` (a study "
                    "cell gets it as its input artifact 'alpha_schedule')"
                )
            return schedule(
                schedule_of(learned).values(), self.generator.n_levels, self.attenuation
            )
        return schedule(self.alpha, self.generator.n_levels, self.attenuation)


# ``alpha: learned``: the schedule searched per wrapped classifier (its own train cell)
ALPHA_SEARCH = Requirement(
    model="alpha_search",
    recipe=AlphaSearchRecipe(MLVGMParams),
    per_model=True,
    when=lambda params: params.get("alpha") == "learned",
)


class GenerativePurifier(InputTransform):
    """What both purifiers share: the generator artifact and the per-generator metrics."""

    requires: ClassVar[Mapping[str, Requirement]] = GENERATOR
    differentiable = True

    def __init__(self, params: Any, *, vae: nn.Module | None = None) -> None:
        super().__init__(params)
        self.vae = vae
        self.per_batch_draws = False

    def wrap(self, model: nn.Module) -> Purified:
        if self.vae is None:
            raise MissingArtifactError(
                f"defense {self.name!r} needs its trained generator: build it with "
                f"`{type(self).__name__}(params, vae=generator)`, the generator trained by "
                "`tasks.defenses.generator.fit_generator` (a study cell gets it as its input "
                "artifact 'vae')"
            )
        return Purified(model, self)

    @classmethod
    def extra_metrics(
        cls,
        params: Any,
        defended: nn.Module,
        data: Data,
        split: Split,
        tensors: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """The classifier's accuracy on the generator's images of the clean evaluation
        slice: ``generator_recon_accuracy`` (α = 0) and ``generator_keep_<k>_accuracy``
        (keep levels ≤ k, resample the finer ones from the prior at T = 1), with
        ``generator_recon_mse``. A generator whose coarsest level does not keep the class
        (``keep_0`` far below ``recon``) cannot defend by resampling the fine levels."""
        assert isinstance(defended, Purified)
        return generator_accuracy(defended.vae, defended.model, data, split)


def generator_accuracy(
    generator: nn.Module, classifier: nn.Module, data: Data, split: Split, batch: int = 500
) -> dict[str, float]:
    """See :meth:`GenerativePurifier.extra_metrics`."""
    levels = network(generator)[0].levels
    dev = device_of(classifier)
    rng = torch.Generator().manual_seed(METRICS_SEED)
    keeps = [[0.0] * (k + 1) + [1.0] * (levels - k - 1) for k in range(levels - 1)]
    hits = torch.zeros(1 + len(keeps), dtype=torch.float64)
    mse = 0.0
    with torch.no_grad():
        for index in split.eval.split(batch):
            x, y = data.images(index).to(dev), data.y[index].to(dev)
            rec = purify(generator, x, [0.0] * levels, None)
            mse += float(((rec - x) ** 2).flatten(1).mean(1).sum())
            outs = [rec] + [purify(generator, x, a, rng) for a in keeps]
            for i, img in enumerate(outs):
                hits[i] += float((classifier(img).argmax(1) == y).sum())
    n = max(1, len(split.eval))
    out = {"generator_recon_accuracy": float(hits[0]) / n, "generator_recon_mse": mse / n}
    out.update({f"generator_keep_{k}_accuracy": float(hits[1 + k]) / n for k in range(len(keeps))})
    return out


@register("vae_purify")
class VAEPurify(GenerativePurifier):
    """Purification by a VAE's reconstruction (posterior means at every level; α = 0)."""

    Params = VAEPurifyParams
    params: VAEPurifyParams

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        assert self.vae is not None  # wrap() refuses to build without it
        return purify(self.vae, x, [0.0] * self.params.generator.n_levels, None)


@register("mlvgm_purify")
class MLVGMPurify(GenerativePurifier):
    """Multi-latent generative purification: codes moved towards prior samples (Serez 2025)."""

    Params = MLVGMParams
    params: MLVGMParams
    randomized = True
    requires: ClassVar[Mapping[str, Requirement]] = {**GENERATOR, "alpha_schedule": ALPHA_SEARCH}

    def __init__(
        self,
        params: Any,
        *,
        vae: nn.Module | None = None,
        alpha_schedule: nn.Module | None = None,
    ) -> None:
        super().__init__(params, vae=vae)
        self.alpha_schedule = alpha_schedule
        self._alphas = None if self.params.alpha == "learned" else self.params.alphas()

    def wrap(self, model: nn.Module) -> Purified:
        self.alphas()  # a learned schedule is read here: refused without its artifact
        return super().wrap(model)

    @classmethod
    def extra_metrics(
        cls,
        params: Any,
        defended: nn.Module,
        data: Data,
        split: Split,
        tensors: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """:meth:`GenerativePurifier.extra_metrics`, and the α of each level
        (``mlvgm_alpha_level_<i>``, attenuation applied; for ``alpha: learned`` the searched
        schedule)."""
        out = super().extra_metrics(params, defended, data, split, tensors)
        assert isinstance(defended, Purified)
        assert isinstance(defended.defense, MLVGMPurify)
        alphas = defended.defense.alphas()
        out.update({f"mlvgm_alpha_level_{i}": a for i, a in enumerate(alphas)})
        return out

    def alphas(self) -> list[float]:
        """The α of each level this purifier uses, coarse to fine (attenuation applied)."""
        if self._alphas is None:
            self._alphas = self.params.alphas(self.alpha_schedule)
        return self._alphas

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One purification draw (what BPDA runs forward, and what ``forward`` averages)."""
        assert self.vae is not None  # wrap() refuses to build without it
        p = self.params
        return purify(
            self.vae,
            x,
            self.alphas(),
            generator,
            temperature=p.temperature,
            noise=p.noise,
            blur=p.blur,
            shared=self.per_batch_draws,
        )


class Purified(Defended):
    """``mean over draws of model(purify(x))``; the generator is the submodule ``vae``, so
    its weights move with ``.to()`` (``generator`` is the wrapper's random stream)."""

    model: nn.Module
    defense: GenerativePurifier

    def __init__(self, model: nn.Module, defense: GenerativePurifier) -> None:
        super().__init__(model, defense)
        assert defense.vae is not None
        self.vae = defense.vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draws = getattr(self.defense.params, "draws", 1)
        # Defended.forward: it refuses a gradient through a non-differentiable transform
        if draws == 1:
            return Defended.forward(self, x)
        return torch.stack([Defended.forward(self, x) for _ in range(draws)]).mean(0)

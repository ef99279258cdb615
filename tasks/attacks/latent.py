"""Attacks on a generative model: a small perturbation that makes a VAE encode (``vae_latent``)
or reconstruct (``vae_output``) an image like a target image of another class.

Tabacof, Tavares & Valle, "Adversarial Images for Variational Autoencoders" (NIPS 2016
workshop); Kos, Fischer & Song, "Adversarial examples for generative models" (IEEE S&P
workshops 2018); Gondim-Ribeiro, Tabacof & Valle, "Adversarial Attacks on Variational
Autoencoders" (2018). For each input ``x`` a target image ``x_t`` of the target class is taken
from the same batch, and ``δ`` minimizes

- ``vae_latent``: ``Σ_i ‖μ_i(x + δ) − μ_i(x_t)‖²`` over the generator's levels (the posterior
  means through which a purifier sees its input; Kos et al.'s latent attack, the
  Gondim-Ribeiro latent attack with the KL replaced by the squared distance of the means);
  with ``levels: coarse``, over the coarsest level only: the deterministic attack on the
  code ``mlvgm_purify`` keeps while it resamples the finer ones, which sidesteps its
  randomness altogether;
- ``vae_output``: ``‖rec(x + δ) − x_t‖²`` (their output attack),

with Adam (the papers' optimizer) inside the L2 ball of ``eps`` and [0, 1]. The model attacked
is a generative purifier's defended model (``vae_purify``, ``mlvgm_purify``): its classifier
on the purified input decides success, so the success rate is the study classifier's
target-class rate on reconstructions (Kos et al.'s matching rate). The cell also records
``target_latent_ratio`` and ``target_output_ratio``: the mean distance to the target after
the attack over the distance before it, in latent and in pixel space (0: reached, 1: no
closer; 1 for a sample whose batch holds no image of its target class, which is left as it
is, their share ``target_image_missing``). The classifier's gradient is never used: these
attack the generator alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer
from torch import nn

from tasks.attacks.base import Attack, FixedBudgetAttack, register
from tasks.attacks.norms import ball
from tasks.attacks.params import FixedBudgetParams, Goals
from tasks.errors import InputError
from tasks.models.generative import HVAE, network
from tasks.registry import Params


class OnGenerator(Params):
    """What every attack on a generator shares: L2, targeted, Adam on the perturbation
    (listed first among a params model's bases, so these override AttackParams')."""

    norm: Literal["l2"] = "l2"
    targeted: bool = True
    lr: float = Field(0.01, gt=0, description="Adam's learning rate on the perturbation")

    goals: ClassVar[Goals] = "targeted"
    refusal: ClassVar[str] = (
        "attacks on a generator move its output towards a target image: they are targeted"
    )


class LatentParams(OnGenerator, FixedBudgetParams):
    steps: int = Field(100, ge=1, description="Adam steps")
    levels: Literal["all", "coarse"] = Field(
        "all",
        description="vae_latent: match the means of every level, or of the coarsest only "
        "(the code mlvgm_purify keeps when it resamples the finer ones)",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.levels == "all":  # absent: the keys of earlier cells stay as they were
            data.pop("levels", None)
        return data


def purifier_of(model: nn.Module) -> Any:
    """The generative purifier's defended model inside ``model`` (through the wrappers an
    attack cell puts around it: pass counting, EOT, BPDA)."""
    seen = model
    for _ in range(8):
        if isinstance(getattr(seen, "vae", None), nn.Module) and isinstance(
            getattr(seen, "model", None), nn.Module
        ):
            return seen
        inner = next(
            (getattr(seen, a) for a in ("model", "inner", "defended") if hasattr(seen, a)), None
        )
        if not isinstance(inner, nn.Module):
            break
        seen = inner
    raise InputError(
        "attacks on a generator (vae_latent, vae_output, on_range) need a model behind a "
        "generative purifier (vae_purify, mlvgm_purify, latent_projection): there is no "
        "generator to attack here"
    )


@dataclass(frozen=True)
class Encoder:
    """The generator behind a purified model, seen as attacks on it see it."""

    net: HVAE
    mean: torch.Tensor
    std: torch.Tensor
    matched: int  # the levels whose posterior means are matched, from the coarsest

    def both(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior means (the matched levels, flat) and the reconstruction, one pass."""
        out = self.net.generate((z - self.mean) / self.std, [0.0] * self.net.levels)
        codes = torch.cat([m.flatten(1) for m in out.post_mu[: self.matched]], 1)
        return codes, torch.sigmoid(out.logits).flatten(1)


def encoder_of(model: nn.Module, coarse: bool = False) -> Encoder:
    """:class:`Encoder` of the generative purifier inside ``model``."""
    net, mean, std = network(purifier_of(model).vae)
    return Encoder(net, mean, std, 1 if coarse else net.levels)


def aim(
    attack: Attack, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(has, x_t)``: for each sample, whether its batch holds an image of its target class,
    and that image (drawn from ``gen``; the input itself where there is none). The attack
    records the images (``target_image``, stored with its examples) and how many lack one."""
    pick = target_images(y, target, gen)
    has = pick >= 0
    x_t = torch.where(has.view(-1, 1, 1, 1), x[pick.clamp_min(0)], x)
    attack.counts["target_image_missing"] = float(len(x) - int(has.sum()))
    attack.tensors["target_image"] = x_t
    return has, x_t


class _GeneratorAttack(FixedBudgetAttack):
    Params = LatentParams
    params: LatentParams
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
        both = encoder_of(model, coarse=self.params.levels == "coarse").both
        which = 0 if self.space == "latent" else 1
        has, x_t = aim(self, x, y, target, generator)
        with torch.no_grad():
            (codes_x, rec_x), (codes_t, rec_t) = both(x), both(x_t)
            want = (codes_t, rec_t)[which]
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.params.lr)
        region = ball("l2")
        for _ in range(self.params.steps):
            loss = ((both((x + delta).clamp(0, 1))[which] - want) ** 2).sum(1)
            opt.zero_grad(set_to_none=True)
            (loss * has).sum().backward()
            opt.step()
            with torch.no_grad():
                delta.copy_(region.project(x + delta, x, self.params.eps) - x)
        x_adv = torch.where(has.view(-1, 1, 1, 1), (x + delta.detach()).clamp(0, 1), x)
        with torch.no_grad():
            codes_a, rec_a = both(x_adv)
            tiny = 1e-12
            latent = (codes_a - codes_t).norm(dim=1) / (codes_x - codes_t).norm(dim=1).clamp_min(
                tiny
            )
            output = (rec_a - rec_t).norm(dim=1) / (rec_x - rec_t).norm(dim=1).clamp_min(tiny)
        # a sample whose batch holds no image of its target class is not attacked: ratio 1
        self.counts["target_latent_ratio"] = float(torch.where(has, latent, 1.0).sum())
        self.counts["target_output_ratio"] = float(torch.where(has, output, 1.0).sum())
        return x_adv


def target_images(y: torch.Tensor, target: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each sample, the index of a random image of its target class in the batch (-1
    where the batch has none)."""
    out = torch.full_like(y, -1)
    for i, t in enumerate(target.tolist()):
        candidates = (y == t).nonzero().flatten()
        if len(candidates):
            k = int(torch.randint(len(candidates), (1,), generator=gen, device=gen.device))
            out[i] = candidates[k]
    return out


@register("vae_latent")
class VAELatent(_GeneratorAttack):
    """Latent attack on a VAE: match a target image's posterior means (Tabacof 2016, Kos 2018)."""

    space = "latent"


@register("vae_output")
class VAEOutput(_GeneratorAttack):
    """Output attack on a VAE: its reconstruction matches a target image (Gondim-Ribeiro 2018)."""

    space = "output"

"""``alpha: learned`` for ``mlvgm_purify``: the α schedule searched for the classifier it defends.

Serez et al. (WACV 2025) learn α by scoring candidate schedules on a fixed set of adversarial
training images: each is made once by a one-step L2 FGSM (the sign of the gradient, rescaled
to the L2 budget ``eps``) against the α = 0 pipeline (reconstruction, then the classifier),
and a candidate's score is the accuracy of the purified classifier (logits averaged over the
draws) on them. The paper's code searches by Bayesian optimization (a Gaussian-process
surrogate, 5 starting points, 95 steps) or by a grid of 512 random α vectors; here it is the
random search, whose result does not depend on a surrogate model: the paper's five starting
points (cosine, linear, all 0.5, 1 − linear, 1 − cosine), then ``candidates − 5`` vectors
drawn uniformly from [0, 1]^N under ``seed``. Every candidate is scored on the same images
with the same draws (common random numbers), so scores differ only by the schedule; ties go
to the earlier candidate.

The search runs in a train cell of its own per (dataset, generator recipe, classifier): its
inputs are the classifier's checkpoint and the generator, its artifact is the schedule
(architecture ``alpha_schedule``), and its metrics record the chosen α per level, the best
score, the scores of the linear and cosine schedules and the clean accuracy of the chosen
one. The search's attack and budget are part of its key. The attack cells of the defense get
the schedule as their input ``alpha_schedule``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tasks import models
from tasks.datasets import Data, Split
from tasks.defenses.base import device_of
from tasks.defenses.generator import GeneratorParams
from tasks.defenses.purification import purify
from tasks.defenses.requirements import Recipe
from tasks.models.generative import network, schedule_of
from tasks.registry import Params

PAPER_STARTS = 5  # cosine, linear, all 0.5, 1 − linear, 1 − cosine


class AlphaSearchParams(Params):
    """How ``alpha: learned`` is searched (all of it enters the search cell's key)."""

    candidates: int = Field(
        32, ge=1, le=4096, description="α vectors scored: the paper's 5 starts, then random"
    )
    samples: int = Field(
        256, ge=1, description="training images the one-step adversaries are made from"
    )
    eps: float = Field(1.0, gt=0, description="L2 budget of the one-step FGSM (sign, rescaled)")
    draws: int | None = Field(
        None, ge=1, description="purifications averaged per scored image (default: draws)"
    )
    batch_size: int = Field(256, ge=1, description="images per purification batch")
    seed: int = Field(0, description="the samples, the random candidates and the draws")


def starts(levels: int) -> list[list[float]]:
    """The paper's five starting schedules for ``levels`` levels, coarse to fine."""
    lin = [i / levels for i in range(1, levels + 1)]
    cos = [0.5 * (1 - math.cos(math.pi * i / levels)) for i in range(1, levels + 1)]
    return [cos, lin, [0.5] * levels, [1 - a for a in lin], [1 - a for a in cos]]


def candidates(levels: int, count: int, seed: int) -> list[list[float]]:
    """The ``count`` schedules the search scores: the paper's starts, then uniform draws."""
    first = starts(levels)[:count]
    rng = torch.Generator().manual_seed(seed)
    drawn = torch.rand(max(0, count - len(first)), levels, generator=rng, dtype=torch.float64)
    return first + [[float(a) for a in row] for row in drawn]


def one_step_l2(
    classifier: nn.Module, generator: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """The paper's search adversaries: ``x + eps · sign(g) / √d`` (clipped to [0, 1]), ``g``
    the gradient of the cross-entropy of the α = 0 pipeline (reconstruct, then classify)."""
    levels = network(generator)[0].levels
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(classifier(purify(generator, x, [0.0] * levels, None)), y)
    (grad,) = torch.autograd.grad(loss, x)
    step = grad.sign() * (eps / math.sqrt(x[0].numel()))
    return (x.detach() + step).clamp(0, 1)


class AlphaSearchRecipe(Recipe):
    """The learned α of an ``mlvgm_purify`` entry (role ``alpha_schedule``, per model);
    ``params_model`` is the purifier's params model (what :meth:`fit_for` reads its recipe
    back into)."""

    def __init__(self, params_model: type[Params]) -> None:
        self.params_model = params_model

    def architecture(self, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        levels = GeneratorParams.model_validate(params.get("generator", {})).n_levels
        return "alpha_schedule", {"levels": levels}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The search's params and everything of the purifier that changes a score."""
        keep = ("generator", "attenuation", "temperature", "noise", "blur", "draws")
        out = {k: params[k] for k in keep if k in params}
        out["search"] = AlphaSearchParams.model_validate(params.get("search") or {}).model_dump(
            mode="json"
        )
        return out

    def fit(
        self, values: Mapping[str, Any], data: Data, split: Split, device: torch.device
    ) -> tuple[nn.Module, dict[str, float]]:
        raise TypeError("the α search is fit for a classifier: call fit_for with its artifacts")

    def fit_for(
        self,
        values: Mapping[str, Any],
        data: Data,
        split: Split,
        device: torch.device,
        artifacts: Mapping[str, nn.Module],
    ) -> tuple[nn.Module, dict[str, float]]:
        """Score every candidate; the artifact holds the best one."""
        params: Any = self.params_model.model_validate({**values, "alpha": "learned"})
        search = params.searched()
        classifier, generator = artifacts["checkpoint"], artifacts["vae"]
        levels = params.generator.n_levels
        order = torch.randperm(
            len(split.train), generator=torch.Generator().manual_seed(search.seed)
        )
        index = split.train[order[: search.samples]]
        x, y = data.images(index).to(device), data.y[index].to(device)
        x_adv = torch.cat(
            [
                one_step_l2(classifier, generator, xb, yb, search.eps)
                for xb, yb in zip(
                    x.split(search.batch_size), y.split(search.batch_size), strict=True
                )
            ]
        )
        draws = search.draws or params.draws
        pool = candidates(levels, search.candidates, search.seed)
        scores = [score(classifier, generator, x_adv, y, a, params, draws) for a in pool]
        best = max(range(len(pool)), key=lambda i: (scores[i], -i))
        chosen = build_schedule(levels)
        schedule_of(chosen).alpha.copy_(torch.tensor(pool[best], dtype=torch.float64))
        metrics = {
            "search_score": scores[best],
            "search_candidates": float(len(pool)),
            "search_eps": search.eps,
            "search_samples": float(len(index)),
            "search_clean_accuracy": score(classifier, generator, x, y, pool[best], params, draws),
        }
        names = ("cosine", "linear")
        metrics.update(
            {f"search_score_{n}": scores[i] for i, n in enumerate(names) if i < len(pool)}
        )
        metrics.update({f"alpha_level_{i}": a for i, a in enumerate(pool[best])})
        return chosen.to(device), metrics


def score(
    classifier: nn.Module,
    generator: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: list[float],
    params: Any,
    draws: int,
) -> float:
    """Accuracy of the classifier on ``x`` purified with ``alpha`` (attenuation applied),
    logits averaged over ``draws`` purifications drawn from the search's seed."""
    dev = device_of(classifier)
    rng = torch.Generator(device=dev).manual_seed(params.searched().seed)
    a = [params.attenuation * v for v in alpha]
    hits = 0
    bs = params.searched().batch_size
    with torch.no_grad():
        for xb, yb in zip(x.split(bs), y.split(bs), strict=True):
            logits = sum(
                classifier(
                    purify(
                        generator,
                        xb,
                        a,
                        rng,
                        temperature=params.temperature,
                        noise=params.noise,
                        blur=params.blur,
                    )
                )
                for _ in range(draws)
            )
            assert isinstance(logits, torch.Tensor)
            hits += int((logits.argmax(1) == yb).sum())
    return hits / max(1, len(y))


def build_schedule(levels: int) -> nn.Module:
    """An untrained schedule of ``levels`` levels (what a stored one is loaded into)."""
    params = models.params_of("alpha_schedule", {"levels": levels})
    return models.build(
        "alpha_schedule", params, input_shape=(1, 1, 1), num_classes=0, mean=[0], std=[1]
    )

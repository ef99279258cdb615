"""Randomized smoothing: a vote of the model under Gaussian noise, with certified L2 radii.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing"
(ICML 2019). The smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``,
is estimated by Monte Carlo: :func:`predict` is their PREDICT (abstains unless a binomial test
separates the top two classes at level ``alpha``), :func:`certify` their CERTIFY (the class
chosen on ``n0`` draws, a one-sided Clopper–Pearson lower bound ``pA`` on its probability from
``n_certify`` further draws, radius ``σ·Φ⁻¹(pA)``; abstains when ``pA ≤ 1/2``).

The registered defense ``randomized_smoothing`` wraps a model in :class:`Smoothed`, whose
forward returns each input's log vote frequencies over ``n`` draws (argmax = the smoothed
prediction without abstention; no class gets zero: an unvoted class scores half a vote, so
scores stay finite for losses and score-based attacks). Its forward has no gradient and
refuses one; ``transform(x)`` is one noise draw, so an EOT attack on the base classifier under
noise (Salman et al., "Provably Robust Deep Learning via Adversarially Trained Smoothed
Classifiers", NeurIPS 2019) differentiates ``defended.model(defended.transform(x))``.

Noisy inputs are clipped to [0, 1] (the defense contract, and how ``gaussian_augment`` trains):
the certificate holds for any base classifier, here ``f ∘ clip``.

Randomness: every draw comes from a ``torch.Generator`` (the wrapper's, seeded from
``params.seed``, or the caller's) on the generator's device, then moves to the input's device;
with a CPU generator the numbers are the same on every device.

Wiring: :func:`smoothing_metrics` runs in the attack cell on the smoothed model
(:meth:`RandomizedSmoothing.extra_metrics`) on the clean evaluation slice at the params'
``radii`` (metrics ``smoothed_accuracy``, ``abstain_rate``, ``certified_accuracy_r_<r>``…);
attack and transfer cells use the wrapper like any defense (a transfer cell's predictions are
then the smoothed ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy import stats
from torch import nn

from tasks.datasets import Data, Split
from tasks.defenses.base import Defended, InputTransform, NoGradient, device_of, register
from tasks.errors import InputError
from tasks.params import Budget, Number
from tasks.registry import Params

ABSTAIN = -1
"""The prediction of an abstention."""


class SmoothingParams(Params):
    sigma: Number = Field(0.25, gt=0, description="noise standard deviation (Cohen: 0.12-1.0)")
    n: int = Field(100, ge=1, description="draws per prediction (forward and PREDICT)")
    n0: int = Field(100, ge=1, description="CERTIFY's draws that select the class")
    n_certify: int = Field(100_000, ge=1, description="CERTIFY's draws that estimate pA")
    alpha: Number = Field(0.001, gt=0, lt=1, description="failure probability of each answer")
    batch_size: int = Field(1000, ge=1, description="noisy inputs per model call")
    seed: int = 0
    radii: list[Budget] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        description="L2 radii of the certified accuracy an attack cell reports",
    )


@register("randomized_smoothing")
class RandomizedSmoothing(InputTransform):
    """Randomized smoothing: a vote over Gaussian draws, certified in L2 (Cohen et al. 2019).

    The wrapper's forward is the vote (log vote frequencies over ``n`` draws), so it is not
    differentiable; ``transform`` is one draw ``clip(x + σ·N(0, I))``, which is.

    ``per_batch_draws`` (off by default; an EOT surrogate turns it on while it runs, see
    :class:`tasks.defenses.adaptive.EOT`): ``transform`` draws one noise image per call and adds it
    to every input of the batch, so an input's draws do not depend on its position in the
    batch. Each input's noise is still ``N(0, σ²I)``; only inputs of one call share it.
    """

    Params = SmoothingParams
    params: SmoothingParams
    differentiable = False
    randomized = True

    def __init__(self, params: SmoothingParams) -> None:
        super().__init__(params)
        self.per_batch_draws = False

    def wrap(self, model: nn.Module) -> Smoothed:
        return Smoothed(model, self)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return noisy(x, self.params.sigma, generator, shared=self.per_batch_draws)

    @classmethod
    def extra_metrics(
        cls,
        params: SmoothingParams,
        defended: nn.Module,
        data: Data,
        split: Split,
        tensors: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """PREDICT and CERTIFY (:func:`smoothing_metrics`) on the clean evaluation slice at
        the params' ``radii``, from a generator of their own (see
        :meth:`tasks.defenses.base.Defense.extra_metrics`): ``smoothed_accuracy``,
        ``abstain_rate``, ``certify_abstain_rate``, ``average_certified_radius``,
        ``certified_accuracy_r_<r>`` and ``smoothing_n``."""
        dev = device_of(defended)
        x, y = data.images(split.eval).to(dev), data.y[split.eval]
        metrics = smoothing_metrics(defended, x, y, params.radii)
        metrics["smoothing_n"] = metrics.pop("n")
        return metrics


class Smoothed(Defended):
    """The smoothed classifier: ``forward(x)`` is the log vote frequencies over ``n`` draws."""

    model: nn.Module
    defense: RandomizedSmoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = self.defense.params
        _check_images(x)
        counts = vote_counts(
            self.model, x, params.n, params.sigma, self.generator, params.batch_size
        )
        scores = torch.log(counts.to(x.dtype).clamp_min(0.5) / params.n)
        if x.requires_grad and torch.is_grad_enabled():
            scores = NoGradient.apply(x, scores, self.defense.name)
        return scores


def noisy(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None, *, shared: bool = False
) -> torch.Tensor:
    """One draw ``clip[0,1](x + σ·ε)``, ``ε ~ N(0, I)`` drawn on ``generator``'s device;
    ``shared``: one ``ε`` for the whole batch."""
    where = generator.device if generator is not None else x.device
    shape = (1, *x.shape[1:]) if shared else x.shape
    eps = torch.randn(shape, generator=generator, device=where, dtype=x.dtype)
    return (x + sigma * eps.to(x.device)).clamp(0, 1)


def vote_counts(
    model: nn.Module,
    x: torch.Tensor,
    n: int,
    sigma: float,
    generator: torch.Generator | None,
    batch_size: int = 1000,
) -> torch.Tensor:
    """``(N, K)`` int64 counts of the model's predicted class over ``n`` noisy draws of each
    input; at most ``batch_size`` noisy inputs go through the model per call (more inputs
    than that are counted ``batch_size`` at a time)."""
    if len(x) > batch_size:
        chunks = x.split(batch_size)
        return torch.cat([vote_counts(model, c, n, sigma, generator, batch_size) for c in chunks])
    per_call = max(1, batch_size // max(1, len(x)))
    counts: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, n, per_call):
            k = min(per_call, n - start)
            draws = noisy(x.detach().repeat(k, *([1] * (x.dim() - 1))), sigma, generator)
            logits = model(draws)
            classes = logits.shape[1]
            votes = F.one_hot(logits.argmax(1), classes).view(k, len(x), classes).sum(0)
            counts = votes if counts is None else counts + votes
    assert counts is not None  # n ≥ 1
    return counts


def binomial_p_value(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided p-value of ``k`` successes in ``n`` trials under ``p = 1/2`` (elementwise;
    what :func:`scipy.stats.binomtest` gives, which is not vectorized)."""
    return np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(k, n - k), n, 0.5))


def lower_confidence_bound(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided ``1 − alpha`` Clopper–Pearson lower bound on a binomial proportion from ``k``
    successes in ``n`` trials: the ``alpha`` quantile of Beta(k, n − k + 1), 0 where k = 0."""
    k = np.asarray(k, dtype=np.float64)
    bound = stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1)
    return np.where(k == 0, 0.0, bound)


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4 or not torch.is_floating_point(x):
        raise InputError(
            f"defense 'randomized_smoothing' expects float images (N, C, H, W), got {x.dtype} "
            f"of shape {tuple(x.shape)}"
        )


def predict(
    model: nn.Module, x: torch.Tensor, params: SmoothingParams, generator: torch.Generator
) -> torch.Tensor:
    """Cohen et al.'s PREDICT: the smoothed class of each input, or :data:`ABSTAIN`.

    ``n`` draws per input; the top class is returned when a two-sided binomial test of its
    count against the runner-up's rejects a tie at level ``alpha`` (so a returned class is
    wrong about ``g(x)`` with probability at most ``alpha``). The model is left in eval mode.
    """
    _check_images(x)
    model.eval()
    counts = vote_counts(model, x, params.n, params.sigma, generator, params.batch_size)
    top = counts.topk(2, dim=1)
    n_a, n_b = top.values[:, 0].cpu().numpy(), top.values[:, 1].cpu().numpy()
    keep = torch.from_numpy(binomial_p_value(n_a, n_a + n_b) <= params.alpha)
    return torch.where(keep.to(x.device), top.indices[:, 0], ABSTAIN)


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer per input: the class (or :data:`ABSTAIN`), the certified L2 radius
    (0 where it abstains) and the lower confidence bound ``pA`` it came from."""

    pred: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor


def certify(
    model: nn.Module, x: torch.Tensor, params: SmoothingParams, generator: torch.Generator
) -> Certificate:
    """Cohen et al.'s CERTIFY: the smoothed class and a radius within which it is constant.

    The class is the most frequent one over ``n0`` draws; ``pA`` is the ``1 − alpha``
    Clopper–Pearson lower bound on its probability from ``n_certify`` fresh draws; the radius
    is ``σ·Φ⁻¹(pA)``. Abstains (class −1, radius 0) when ``pA ≤ 1/2``. With probability at
    least ``1 − alpha`` per input, ``g`` predicts the class everywhere in the radius.
    """
    _check_images(x)
    model.eval()
    p = params
    chosen = vote_counts(model, x, p.n0, p.sigma, generator, p.batch_size).argmax(1)
    counts = vote_counts(model, x, p.n_certify, p.sigma, generator, p.batch_size)
    n_a = counts.gather(1, chosen[:, None])[:, 0].cpu().numpy()
    p_lower = lower_confidence_bound(n_a, p.n_certify, p.alpha)
    certified = p_lower > 0.5
    radius = np.where(certified, p.sigma * stats.norm.ppf(np.maximum(p_lower, 0.5)), 0.0)
    keep = torch.from_numpy(certified).to(x.device)
    return Certificate(
        pred=torch.where(keep, chosen, ABSTAIN),
        radius=torch.from_numpy(radius).to(torch.float64),
        p_lower=torch.from_numpy(p_lower).to(torch.float64),
    )


def certified_accuracy(
    radii: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, radius: Sequence[float]
) -> dict[float, float]:
    """The share of inputs certified correct at each radius ``r`` of ``radius``: the
    prediction is the label and the certified radius is at least ``r`` (an abstention,
    prediction −1, is never correct)."""
    correct = preds.cpu() == labels.cpu()
    radii = radii.cpu()
    return {float(r): float((correct & (radii >= r)).double().mean()) for r in radius}


def smoothing_metrics(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radii: Sequence[float],
    generator: torch.Generator | None = None,
    *,
    params: SmoothingParams | None = None,
) -> dict[str, float]:
    """PREDICT and CERTIFY over ``(x, y)``: the metrics of a smoothing evaluation cell.

    Args:
        model: a :class:`Smoothed` wrapper (its base model and params are used), or a base
            model, then with ``params``.
        x: clean inputs ``(N, C, H, W)`` in [0, 1]; ``y`` their labels.
        radii: the L2 radii at which certified accuracy is reported.
        generator: where the draws come from; default: a CPU generator seeded from
            ``params.seed`` (PREDICT draws first, then CERTIFY).
        params: the smoothing params when ``model`` is a base model.

    Returns:
        ``smoothed_accuracy`` and ``abstain_rate`` (PREDICT; an abstention counts as wrong),
        ``certified_accuracy_r_<r>`` for each radius (``r`` as ``f"{r:g}"``),
        ``certify_abstain_rate``, ``average_certified_radius`` (the mean over inputs of the
        radius where certified correct, else 0; Zhai et al. 2020) and ``n``.
    """
    if isinstance(model, Smoothed):
        params = model.defense.params
        model = model.model
    if params is None:
        raise InputError("smoothing_metrics needs `params` unless `model` is a Smoothed wrapper")
    gen = generator if generator is not None else torch.Generator().manual_seed(params.seed)
    pred = predict(model, x, params, gen).cpu()
    cert = certify(model, x, params, gen)
    y = y.cpu()
    correct = cert.pred.cpu() == y
    metrics = {
        "n": float(len(y)),
        "smoothed_accuracy": float((pred == y).double().mean()),
        "abstain_rate": float((pred == ABSTAIN).double().mean()),
        "certify_abstain_rate": float((cert.pred == ABSTAIN).double().mean()),
        "average_certified_radius": float(torch.where(correct, cert.radius, 0.0).mean()),
    }
    for r, acc in certified_accuracy(cert.radius, y, cert.pred, radii).items():
        metrics[f"certified_accuracy_r_{r:g}"] = acc
    return metrics

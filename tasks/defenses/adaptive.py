"""Adaptive attacks on inference-time defenses: BPDA, EOT and both, plus the diagnostics an
attack cell records to reveal gradient masking.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security:
Circumventing Defenses to Adversarial Examples" (ICML 2018): a defense's robust accuracy means
something only when the attack adapted to it. Two adaptations are offered, chosen per defense
in the study file (``adaptive: none | bpda | eot | bpda+eot``):

- **BPDA** (backward pass differentiable approximation): forward through the defended model
  exactly, backward through the identity in place of the input transform,
  ``model(x + (transform(x) − x).detach())``. It is written ``transform(x).detach() + (x −
  x.detach())``: the same gradient, and a forward value that is ``transform(x)`` bit for bit
  (``x + (t − x)`` can be one rounding away from ``t``).
- **EOT** (expectation over transformation; Athalye, Engstrom, Ilyas & Kwok, "Synthesizing
  Robust Adversarial Examples", ICML 2018): the attack sees the randomized classifier's
  expected output over ``eot_samples`` draws of the defense. We average the softmax
  *probabilities* and hand the attack their logarithm, ``log mean_t softmax(f(t(x)))``: a
  log-probability vector whose argmax is the expected classifier's decision, whose gradient is
  built from the average of the draws' gradients, and in which no draw outweighs the others
  by the scale of its logits (averaging logits would let one draw with large logits decide).
  Cross-entropy on it is ``−log E_t p_t(y)``, Jensen's lower bound on the ``E_t[−log p_t(y)]``
  that Athalye et al. maximize; margin losses (C&W, DLR) act on log-probability margins.
- **bpda+eot**: EOT over BPDA surrogates, for transforms that are randomized and not
  differentiable.

The attack runs on the surrogate; what a cell stores is the real defended model's output on
the final ``x_adv`` (:func:`evaluate`), so attack tables agree with transfer tables. For a
randomized defense that is one draw per batch from a generator seeded from the attack's seed
through a fixed mix (:func:`evaluation_seed`): reproducible, and independent of the draws the
attack optimized over even when the attack's and the defense's seeds are equal.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tasks.defenses.base import masked_gradients
from tasks.errors import InputError, NotDifferentiableError

ADAPTIVE = ("none", "bpda", "eot", "bpda+eot")
DEFAULT_EOT_SAMPLES = 10


def uses(method: str) -> tuple[bool, bool]:
    """``(bpda, eot)``: which adaptations ``method`` asks for."""
    if method not in ADAPTIVE:
        raise InputError(f"adaptive must be one of {', '.join(ADAPTIVE)}, got {method!r}")
    return "bpda" in method, "eot" in method


class BPDA(nn.Module):
    """The defended model forward, the identity in place of its transform backward.

    Athalye, Carlini & Wagner (ICML 2018), Section 4.1, with ``g(x) = x``. ``defended`` must
    expose ``model`` (the undefended classifier) and ``transform(x)`` (the input transform),
    as :class:`tasks.defenses.Defended` does. The forward value is
    ``model(transform(x))``: the defended model's output wherever its forward is that (every
    input transform). A wrapper whose forward is something else, such as randomized
    smoothing's vote over many draws, is approximated by one draw of the base classifier;
    ``bpda+eot`` then attacks the expected (soft) classifier over draws. The numbers a cell
    stores come from the real defended model either way (:func:`evaluate`).
    """

    def __init__(self, defended: nn.Module) -> None:
        super().__init__()
        if not callable(getattr(defended, "transform", None)) or not isinstance(
            getattr(defended, "model", None), nn.Module
        ):
            raise InputError(
                f"BPDA needs a defense with an input transform (`.model` and `.transform`), "
                f"got {type(defended).__name__}"
            )
        self.defended: Any = defended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_t = self.defended.transform(x).detach()
        return self.defended.model(x_t + (x - x.detach()))


class EOT(nn.Module):
    """``log mean_t softmax(inner(x))`` over ``samples`` calls of a randomized ``inner``.

    Each call of ``inner`` draws afresh (a :class:`tasks.defenses.Defended` draws per call,
    i.e. per batch), so the draws are taken one call at a time, never by stacking copies of
    ``x`` into one batch.

    Common random numbers: where ``inner`` draws from a generator (a randomized
    ``Defended``, or a :class:`BPDA` over one), every call replays the same ``samples``
    draws: those of the generator's state at the first call, which is put back after each
    call. The surrogate is then one deterministic function of its input, as the attacks
    assume: with fresh draws per call, an attack that keeps an example because one
    evaluation said "fooled" (C&W's smallest success, Square's accepted proposals and early
    stop, PGD's choice among restarts) keeps the examples that fooled a lucky draw, and the
    real defended model, voting over other draws, classifies most of them correctly. A
    defense that draws per input (randomized smoothing) is asked to draw per call instead
    (its ``per_batch_draws``), so that an input's draws do not depend on its position in
    the batch either (Square attacks a shrinking subset of it). ``common=False``: fresh
    draws on every call.
    """

    # what a resumed attack cell must put back besides the generators (tasks.cells.attack_state)
    random_state = ("_anchor",)

    def __init__(self, inner: nn.Module, samples: int, *, common: bool = True) -> None:
        super().__init__()
        if samples < 1:
            raise InputError(f"eot_samples must be ≥ 1, got {samples}")
        self.inner, self.samples, self.common = inner, samples, common
        self._anchor: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        defended = _defended_of(self.inner)
        generator = getattr(defended, "generator", None) if self.common else None
        if not isinstance(generator, torch.Generator):
            return self._average(x)
        if self._anchor is None:
            self._anchor = generator.get_state()
        resume = generator.get_state()
        defense: Any = getattr(defended, "defense", None)
        per_batch = getattr(defense, "per_batch_draws", None)
        generator.set_state(self._anchor)
        try:
            if per_batch is not None:
                defense.per_batch_draws = True
            return self._average(x)
        finally:
            generator.set_state(resume)
            if per_batch is not None:
                defense.per_batch_draws = per_batch

    def _average(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(self.inner(x).float(), 1) for _ in range(self.samples)])
        return torch.logsumexp(logp, 0) - math.log(self.samples)


def _defended_of(model: nn.Module) -> Any:
    """The defended model itself, or the one a :class:`BPDA` runs."""
    return model.defended if isinstance(model, BPDA) else model


def surrogate(defended: nn.Module, spec: dict) -> tuple[nn.Module, int]:
    """The model an attack runs on for the defense component ``spec``, and the number of
    passes through the undefended model each of its calls makes.

    ``spec["adaptive"]`` absent or ``none``: ``defended`` itself, one pass; for a defense
    that is not differentiable, :func:`naive` of it (the same forward, autograd's masked
    gradient): the non-adaptive number, recorded on purpose.
    """
    bpda, eot = uses(spec.get("adaptive", "none"))
    if not bpda and not eot:
        return naive(defended), 1
    attacked = BPDA(defended) if bpda else defended
    if not eot:
        return attacked, 1
    samples = int(spec.get("eot_samples", DEFAULT_EOT_SAMPLES))
    return EOT(attacked, samples), samples


def evaluation_seed(attack_seed: int) -> int:
    """The seed of the draws that score a randomized defense: a fixed mix of the attack's."""
    digest = hashlib.sha256(f"advgrid.adaptive.evaluation:{attack_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@contextmanager
def _drawing_from(defended: Any, generator: torch.Generator | None) -> Iterator[None]:
    """``defended`` draws from ``generator`` inside the block (a randomized Defended only)."""
    if getattr(defended, "generator", None) is None or generator is None:
        yield
        return
    saved = defended.generator
    defended.generator = generator
    try:
        yield
    finally:
        defended.generator = saved


def evaluate(
    defended: nn.Module, x_adv: torch.Tensor, x: torch.Tensor, batch_size: int, *, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred_adv, pred_clean)`` of the real defended model, adversarial inputs first, in
    batches of ``batch_size``; a randomized defense draws from a generator seeded by
    :func:`evaluation_seed` of ``seed``."""
    generator = torch.Generator().manual_seed(evaluation_seed(seed))
    defended.eval()
    with _drawing_from(defended, generator), torch.inference_mode():
        pred_adv = torch.cat([defended(b).argmax(1) for b in x_adv.split(batch_size)])
        pred_clean = torch.cat([defended(b).argmax(1) for b in x.split(batch_size)])
    return pred_adv, pred_clean


RESUBMISSIONS = 10  # fresh evaluations of a randomized defense in `resubmitted`


def resubmitted(
    defended: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    seed: int,
    n: int = RESUBMISSIONS,
) -> dict[str, float]:
    """The adversarial examples scored on ``n`` fresh draws of a randomized defense.

    An attacker may submit an example again until one draw is fooled (DiffHammer's
    N-evaluation; Lee & Kim 2023 vote over 10 purification runs): a sample is robust in the
    worst case only if all ``n`` evaluations classify it correctly. The draws come from
    generators seeded from :func:`evaluation_seed` of ``seed`` and the evaluation's index,
    none of them the single draw the stored predictions were scored on.

    Returns:
        ``robust_accuracy_worst_of_<n>`` and ``robust_accuracy_mean_of_<n>``.
    """
    correct = torch.zeros(len(y), dtype=torch.int64)
    defended.eval()
    for i in range(1, n + 1):
        generator = torch.Generator().manual_seed(evaluation_seed(seed) ^ (i * 0x9E3779B1))
        with _drawing_from(defended, generator), torch.inference_mode():
            pred = torch.cat([defended(b).argmax(1).cpu() for b in x_adv.split(batch_size)])
        correct += (pred == y.cpu()).to(torch.int64)
    return {
        f"robust_accuracy_worst_of_{n}": float((correct == n).double().mean()),
        f"robust_accuracy_mean_of_{n}": float(correct.double().mean() / n),
    }


def naive(defended: nn.Module) -> nn.Module:
    """What a plain gradient attack follows through ``defended``: its very forward, and the
    gradient autograd gives through it (zero through a rounding, a codec or a vote; see
    :func:`tasks.defenses.masked_gradients`). ``defended`` itself when it is differentiable.
    """
    if getattr(defended, "differentiable", True):
        return defended
    return Naive(defended)


class Naive(nn.Module):
    """A non-differentiable defended model whose gradient is autograd's masked one.

    Its forward is the defended model's, draw for draw, so the predictions an attack
    records on it are the defended model's own.
    """

    def __init__(self, defended: nn.Module) -> None:
        super().__init__()
        self.defended: Any = defended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with masked_gradients():
            return self.defended(x)


def gradient_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> dict[str, float]:
    """Input gradients of the cross-entropy at the clean inputs, per sample.

    ``grad_zero_fraction``: the fraction of samples whose gradient is exactly zero
    everywhere (a rounding, a saturated softmax, or no path from the input at all);
    ``grad_l1_median``: the median of the gradients' L1 norms. Gradient masking shows as
    the first near 1 or the second far below the undefended model's (Athalye et al. 2018).
    """
    norms = []
    model.eval()
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        xb = xb.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xb).float(), yb, reduction="sum")
        grad = None
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss, xb, allow_unused=True)
        norms.append(torch.zeros(len(xb)) if grad is None else grad.flatten(1).abs().sum(1).cpu())
    l1 = torch.cat(norms).double()
    return {
        "grad_zero_fraction": float((l1 == 0).double().mean()),
        "grad_l1_median": float(l1.median()),
    }


def forward_randomness(model: nn.Module, x: torch.Tensor, batch_size: int) -> float:
    """The fraction of samples whose logits differ between two forward passes on the same
    input (beyond 1e-5 relative): randomness in the forward pass, declared or not."""
    model.eval()
    differ = []
    with torch.inference_mode():
        for xb in x.split(batch_size):
            a, b = model(xb).float(), model(xb).float()
            scale = 1 + torch.maximum(a.abs().amax(1), b.abs().amax(1))
            differ.append(((a - b).abs().amax(1) > 1e-5 * scale).cpu())
    return float(torch.cat(differ).double().mean()) if differ else 0.0


def masking_metrics(
    defended: nn.Module,
    attacked: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    randomized: bool,
) -> dict[str, float]:
    """Gradient-masking diagnostics of an attack cell, on its clean inputs.

    The gradients are taken through ``attacked``, the model the attack ran on; without
    BPDA that is :func:`naive` of a non-differentiable defense, whose masked gradient is
    what a gradient attack followed. ``forward_random_fraction`` is measured on the real defended
    model; ``defense_randomized`` is what the defense declares.
    """
    try:
        stats = gradient_stats(attacked, x, y, batch_size)
    except NotDifferentiableError:  # EOT alone, by gradient-free attacks only
        stats = gradient_stats(naive(defended), x, y, batch_size)
    stats["forward_random_fraction"] = forward_randomness(defended, x, batch_size)
    stats["defense_randomized"] = float(randomized)
    return stats

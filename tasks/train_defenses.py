"""Training-time defenses: per-minibatch losses that train models to resist attacks.

Each entry of :data:`TRAINING_DEFENSES` is a class with a params model (defaults from its
paper) and one method, :meth:`TrainingDefense.loss`, which :func:`tasks.training.fit` calls
on every minibatch instead of plain cross-entropy. A study names one in a training recipe:
``train: {epochs: 20, defense: {name: pgd_at, eps: 0.1}}``.

Where a defense trains on adversarial examples it asks the attack library for them
(``ATTACKS.get("pgd")``), so the PGD a model is trained against is the PGD it is evaluated
with: same code, same random start, same projection. Two defenses maximize something no
registered attack does — TRADES' KL term and one perturbation shared by a shard of the
batch — and write their inner loop here, with the norm balls of :mod:`tasks.attacks.norms`.

Contract of ``loss(model, x, y, generator)``: ``model`` is in train mode with parameter
gradients on, and is left so (an attack runs it in eval mode with parameter gradients off
and restores both, as the inner loops here do); ``x`` lies in [0, 1]; all randomness comes
from ``generator`` (on ``x``'s device). It returns a :class:`Step`: the scalar loss to
minimize and the logits its cross-entropy term saw, for the training accuracy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from tasks.attacks import ATTACKS, Attack
from tasks.attacks.base import attack_mode
from tasks.attacks.norms import LinfBall
from tasks.attacks.params import PGDStepRule
from tasks.params import Number
from tasks.registry import Params, Registry

# same plural as the inference-time registry: `advgrid list defenses` shows both kinds, and
# plugins of the `advgrid.defenses` entry-point group may register into either
TRAINING_DEFENSES: Registry = Registry("training defense", "defenses")


@dataclass(frozen=True)
class Step:
    """One minibatch's loss (a scalar to minimize) and the logits of its cross-entropy term.

    ``logits`` has one row per example of the batch: on the inputs trained on (adversarial
    where the defense replaced them); for the mixed objectives of ``fgsm_at`` and ``trades``,
    on the clean inputs.
    """

    loss: torch.Tensor
    logits: torch.Tensor


class TrainingDefense(ABC):
    """Base: ``loss(model, x, y, generator)`` gives the minibatch's training loss."""

    Params: ClassVar[type[Params]]

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        """The loss of ``(x, y)``; see the module docstring for the contract."""


def build(name: str, values: Mapping[str, Any], **artifacts: nn.Module) -> TrainingDefense:
    """Training defense ``name``, ``values`` validated, ``artifacts`` its class ``requires``.

    Raises:
        UnknownComponentError: no training defense is called ``name``.
        pydantic.ValidationError: ``values`` break the params model.
    """
    entry = TRAINING_DEFENSES.get(name)
    return entry.obj(entry.params.model_validate(dict(values)), **artifacts)


def _attack(name: str, **values: Any) -> Attack:
    """The registered attack ``name``: the code that attack cells run, too."""
    return ATTACKS.get(name).obj(ATTACKS.params_of(name, values))


def _adversarial(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """``attack``'s examples for ``(x, y)``, detached; the model's mode is restored by it."""
    return attack(model, x, y, generator=gen).x_adv


def _count(fraction: float, m: int) -> int:
    """How many of ``m`` examples a share ``fraction`` is, rounded half up."""
    return min(m, math.floor(fraction * m + 0.5))


class FGSMATParams(Params):
    eps: Number = Field(0.25, ge=0, description="L∞ budget of the FGSM examples (paper: MNIST)")
    c: float = Field(0.5, ge=0, le=1, description="weight of the clean loss")


@TRAINING_DEFENSES.register("fgsm_at")
class FGSMAT(TrainingDefense):
    """FGSM adversarial training: c·CE(x) + (1 − c)·CE(FGSM(x)) (Goodfellow et al. 2015).

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
    §6: J̃(θ, x, y) = c·J(θ, x, y) + (1 − c)·J(θ, x + ε·sign(∇ₓJ(θ, x, y)), y), with c = 0.5
    and ε = 0.25 on MNIST. The examples are the registered ``fgsm`` attack's (clipped to
    [0, 1]) against the current weights. Cost per example: the attack's forward and
    backward pass and its scoring pass, then two training forward passes.
    """

    Params = FGSMATParams
    params: FGSMATParams

    def __init__(self, params: FGSMATParams) -> None:
        super().__init__(params)
        self.attack = _attack("fgsm", eps=params.eps)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        x_adv = _adversarial(self.attack, model, x, y, generator)
        logits = model(x)
        c = self.params.c
        loss = c * F.cross_entropy(logits, y) + (1 - c) * F.cross_entropy(model(x_adv), y)
        return Step(loss, logits)


class KurakinATParams(Params):
    eps: Number = Field(8 / 255, ge=0, description="L∞ budget of the adversarial examples")
    k_fraction: float = Field(0.5, ge=0, le=1, description="k/m: share of each batch replaced")
    lam: float = Field(0.3, gt=0, description="λ: weight of the adversarial examples' loss")
    method: Literal["step_ll", "fgsm"] = Field(
        "step_ll", description="step_ll: one step towards the least likely class; fgsm"
    )


@TRAINING_DEFENSES.register("kurakin_at")
class KurakinAT(TrainingDefense):
    """Adversarial training at scale: k of m examples adversarial, loss λ-weighted (Kurakin 2016).

    Kurakin, Goodfellow & Bengio, "Adversarial Machine Learning at Scale", ICLR 2017
    (arXiv:1611.01236), Algorithm 1: the first k of each shuffled minibatch of m are
    replaced by adversarial examples made against the current weights, and the loss is
    (Σ_clean L + λ·Σ_adv L) / ((m − k) + λ·k), with k = m/2 and λ = 0.3. ``step_ll``
    (the paper's choice) is the registered ``fgsm`` targeted at the least likely class,
    x − ε·sign ∇ₓJ(x, y_LL); ``fgsm`` uses the true labels (the paper warns that this leaks
    labels). The paper draws ε per example from a truncated normal over [0, 16/255]; here
    ε is fixed (the attack library's budgets are per call), 8/255 by default.
    """

    Params = KurakinATParams
    params: KurakinATParams

    def __init__(self, params: KurakinATParams) -> None:
        super().__init__(params)
        targeted = params.method == "step_ll"
        self.attack = _attack("fgsm", eps=params.eps, targeted=targeted, target="least_likely")

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        m, k, lam = len(x), _count(self.params.k_fraction, len(x)), self.params.lam
        if k:
            x = torch.cat([_adversarial(self.attack, model, x[:k], y[:k], generator), x[k:]])
        logits = model(x)
        per_example = F.cross_entropy(logits, y, reduction="none")
        loss = (per_example[k:].sum() + lam * per_example[:k].sum()) / ((m - k) + lam * k)
        return Step(loss, logits)


class PGDATParams(PGDStepRule):
    eps: Number = Field(8 / 255, gt=0, description="budget of the PGD examples")
    steps: int = Field(7, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default: 2.5 · eps / steps")
    random_start: bool = True
    norm: Literal["linf", "l2", "l1"] = "linf"


@TRAINING_DEFENSES.register("pgd_at")
class PGDAT(TrainingDefense):
    """PGD adversarial training: train on the PGD examples (Madry et al. 2018).

    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018: minimize E[max_{‖δ‖ ≤ ε} L(x + δ, y)], the inner max
    approximated by PGD from a random start — 7 steps of 2/255 at ε = 8/255 on CIFAR-10;
    here by default 7 steps of 2.5·ε/steps. The examples are the registered ``pgd``
    attack's with these params (one restart, full length), so a model trained here meets
    the same PGD in attack cells. Cost per example: ``steps`` forward and backward passes,
    one scoring pass, one training pass.
    """

    Params = PGDATParams
    params: PGDATParams

    def __init__(self, params: PGDATParams) -> None:
        super().__init__(params)
        self.attack = _attack("pgd", **params.model_dump())

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        logits = model(_adversarial(self.attack, model, x, y, generator))
        return Step(F.cross_entropy(logits, y), logits)


class FastATParams(Params):
    eps: Number = Field(8 / 255, gt=0, description="L∞ budget")
    alpha: Number | None = Field(None, gt=0, description="step size; default 1.25 · eps")

    @model_validator(mode="after")
    def _default_alpha(self) -> FastATParams:
        if self.alpha is None:
            object.__setattr__(self, "alpha", 1.25 * self.eps)
        return self


@TRAINING_DEFENSES.register("fast_at")
class FastAT(TrainingDefense):
    """Fast adversarial training: FGSM from a random start, step 1.25·ε (Wong et al. 2020).

    Wong, Rice & Kolter, "Fast is Better than Free: Revisiting Adversarial Training", ICLR
    2020, Algorithm 3: δ ~ U(−ε, ε), clipped so x + δ lies in [0, 1]; one sign step of α =
    1.25·ε on the cross-entropy; δ projected back into the ε-ball and [0, 1]; train on
    x + δ. That is exactly the registered ``pgd`` with one step of α from a random start in
    the L∞ ball, which is what runs. The paper's cyclic learning rate and mixed precision
    belong to the recipe, not to this loss.
    """

    Params = FastATParams
    params: FastATParams

    def __init__(self, params: FastATParams) -> None:
        super().__init__(params)
        self.attack = _attack(
            "pgd", eps=params.eps, steps=1, step_size=params.alpha, random_start=True
        )

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        logits = model(_adversarial(self.attack, model, x, y, generator))
        return Step(F.cross_entropy(logits, y), logits)


class TRADESParams(PGDStepRule):
    eps: Number = Field(0.031, gt=0, description="L∞ budget of the inner maximization")
    steps: int = Field(10, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default: 2.5 · eps / steps")
    beta: float = Field(6.0, ge=0, description="weight of the robustness (KL) term")


@TRAINING_DEFENSES.register("trades")
class TRADES(TrainingDefense):
    """TRADES: CE(f(x), y) + β·KL(f(x) ‖ f(x′)), x′ maximizing the KL term (Zhang et al. 2019).

    Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between
    Robustness and Accuracy", ICML 2019, Algorithm 1 as in the authors' code: x′ starts at
    x + 0.001·N(0, I) (clipped to [0, 1] here) and takes ``steps`` sign steps ascending
    Σ KL(softmax f(x) ‖ softmax f(x′)) with the model in eval mode, each projected into the
    L∞ ball and [0, 1]; the loss is CE(f(x), y) + β/m · Σ KL(f(x) ‖ f(x′)), gradients
    through both terms. Paper: ε = 0.031, 10 steps of 0.007, β = 6 on CIFAR-10; the step
    here defaults to 2.5·ε/steps (0.00775 at ε = 0.031), the rule ``pgd`` uses.

    The inner loop is written here, not taken from the attack library: it ascends a KL
    divergence to the model's own clean prediction, without labels, from a Gaussian start —
    no registered attack maximizes that.
    """

    Params = TRADESParams
    params: TRADESParams

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        x_adv = self.perturb(model, x, generator)
        logits = model(x)
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="sum") / len(
            x
        )
        return Step(F.cross_entropy(logits, y) + self.params.beta * kl, logits)

    def perturb(
        self, model: nn.Module, x: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The inner maximization: x′ in the ε-ball around ``x`` with a large KL term."""
        p, step = self.params, self.params.resolved_step_size
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = (x.detach() + 0.001 * noise).clamp(0, 1)
        with attack_mode(model):
            with torch.no_grad():
                p_clean = F.softmax(model(x), 1)
            for _ in range(p.steps):
                x_adv.requires_grad_(True)
                kl = F.kl_div(F.log_softmax(model(x_adv), 1), p_clean, reduction="sum")
                grad = torch.autograd.grad(kl, x_adv)[0]
                x_adv = LinfBall.project(x_adv.detach() + step * LinfBall.ascent(grad), x, p.eps)
        return x_adv.detach()


class SharedATParams(PGDStepRule):
    eps: Number = Field(8 / 255, gt=0, description="L∞ budget of each shared perturbation")
    shard_size: int = Field(8, ge=1, description="examples sharing one perturbation (s)")
    steps: int = Field(4, ge=1)
    step_size: Number | None = Field(None, gt=0, description="default: 2.5 · eps / steps")
    kappa: Number | None = Field(
        -math.log(0.2), gt=0, description="per-example loss cap in the ascent; null: none"
    )
    fraction: float = Field(0.5, ge=0, le=1, description="share of each batch perturbed")


@TRAINING_DEFENSES.register("shared_at")
class SharedAT(TrainingDefense):
    """Shared adversarial training: one perturbation per shard of a batch (Mummadi et al. 2019).

    Mummadi, Brox & Metzen, "Defending Against Universal Perturbations With Shared
    Adversarial Training", ICCV 2019. Against universal perturbations, each perturbation is
    shared by a heap of s examples — s = 1 is ordinary adversarial training, s = m nears a
    universal perturbation; the paper studies s ∈ {1, 8, 64} and caps each example's loss
    in the ascent (κ = −log 0.2) so that examples already fooled stop pulling the shared
    perturbation. What runs here: the first ``fraction`` of each shuffled batch is cut into
    shards of ``shard_size``; each shard's δ starts at 0 and takes ``steps`` sign steps of
    ``step_size`` on Σ_shard min(CE(clip(x + δ), y), κ), clipped to ‖δ‖∞ ≤ ε, with the
    model in eval mode; the loss is the mean cross-entropy over the perturbed shards and
    the clean rest. An example whose true class has probability below 0.2 (every example of
    an untrained 10-class model) does not pull at all, so δ stays 0 until the model is
    confident somewhere; ``kappa: null`` removes the cap. The paper's label smoothing is a
    recipe choice and is left out.

    The inner loop is written here, not taken from the attack library: the registered
    attacks give each example its own perturbation, and ``uap`` fits one for a whole data
    set, not one per shard of a batch.
    """

    Params = SharedATParams
    params: SharedATParams

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        k = _count(self.params.fraction, len(x))
        if k:
            delta = self.perturbation(model, x[:k], y[:k])
            x = torch.cat([(x[:k] + delta[self._shards(k, x.device)]).clamp(0, 1), x[k:]])
        logits = model(x)
        return Step(F.cross_entropy(logits, y), logits)

    def _shards(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.arange(n, device=device) // self.params.shard_size

    def perturbation(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One δ per shard of ``x``, shape ``(ceil(n / shard_size), *x.shape[1:])``."""
        p, step = self.params, self.params.resolved_step_size
        shard = self._shards(len(x), x.device)
        delta = torch.zeros((int(shard[-1]) + 1, *x.shape[1:]), device=x.device, dtype=x.dtype)
        with attack_mode(model):
            for _ in range(p.steps):
                delta.requires_grad_(True)
                loss = F.cross_entropy(model((x + delta[shard]).clamp(0, 1)), y, reduction="none")
                if p.kappa is not None:
                    loss = loss.clamp(max=p.kappa)
                grad = torch.autograd.grad(loss.sum(), delta)[0]
                delta = (delta.detach() + step * LinfBall.ascent(grad)).clamp(-p.eps, p.eps)
        return delta.detach()


class GaussianAugmentParams(Params):
    sigma: Number = Field(0.25, ge=0, description="standard deviation of the noise")
    fraction: float = Field(1.0, ge=0, le=1, description="share of each batch augmented")


@TRAINING_DEFENSES.register("gaussian_augment")
class GaussianAugment(TrainingDefense):
    """Gaussian data augmentation: train on clip(x + N(0, σ²)) (Zantedeschi et al. 2017).

    Zantedeschi, Nicolae & Rawat, "Efficient Defenses Against Adversarial Attacks", AISec
    2017, and the noise training of Cohen, Rosenfeld & Kolter, "Certified Adversarial
    Robustness via Randomized Smoothing", ICML 2019 (σ = 0.25 among theirs): the first
    ``fraction`` of each shuffled batch gets x + σ·N(0, I), clipped to [0, 1]; the loss is
    the mean cross-entropy over the batch. A baseline: no gradient, no attack.
    """

    Params = GaussianAugmentParams
    params: GaussianAugmentParams

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> Step:
        k = _count(self.params.fraction, len(x))
        if k:
            noise = torch.randn(x[:k].shape, generator=generator, device=x.device, dtype=x.dtype)
            x = torch.cat([(x[:k] + self.params.sigma * noise).clamp(0, 1), x[k:]])
        logits = model(x)
        return Step(F.cross_entropy(logits, y), logits)

"""The attack template: the base classes own everything but the perturbation loop.

``Attack.__call__`` validates inputs, puts the model in eval mode with parameter gradients
off (both restored afterwards, also on errors), wraps it so that every forward and backward
pass counts itself (:mod:`tasks.attacks.counting`), picks targets for targeted attacks,
calls the concrete attack's ``perturb``, projects the result into the threat model and
scores success on the final values. As in foolbox there are two kinds, and a concrete
attack subclasses one of them:

- :class:`FixedBudgetAttack`: ``eps`` is one budget; the result is projected onto the
  eps-ball in the attack's norm and [0, 1], and ``eps = 0`` returns ``x`` unchanged.
- :class:`MinNormAttack` (minimum-norm and sparse attacks): ``eps`` lists the budgets at
  which success is counted; the result is only clipped to [0, 1].

All randomness comes from a ``torch.Generator`` seeded from ``params.seed`` unless the
caller passes one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tasks.attacks.counting import Counted
from tasks.attacks.norms import ball
from tasks.attacks.params import AttackParams, FixedBudgetParams, MinNormParams
from tasks.errors import InputError
from tasks.registry import Registry

ATTACKS: Registry = Registry("attack", "attacks")


@dataclass(frozen=True)
class AttackOutput:
    """Adversarial inputs, the model's predictions on them and per-sample success.

    Pass counts are per sample (a batch of 8 through the model counts 8). ``counts`` holds
    attack-specific per-sample tallies (e.g. an ensemble's robust samples after each
    member) that a caller sums over batches and divides by the number of samples;
    ``tensors`` per-sample tensors an attack keeps beside its examples (an attack on a
    generator's target images), stored with them.
    """

    x_adv: torch.Tensor
    pred: torch.Tensor
    success: torch.Tensor
    target: torch.Tensor | None
    forward: int
    backward: int
    counts: dict[str, float] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def register(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """``@register("pgd")``: add the class to :data:`ATTACKS` and record its name."""

    def decorate(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        return ATTACKS.register(name)(cls)

    return decorate


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with parameter gradients off while an attack (or a training defense's inner
    maximization) runs; both are restored afterwards, also on errors."""
    training = model.training
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        yield
    finally:
        model.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)


class Attack(ABC):
    """Template method; subclasses of :class:`FixedBudgetAttack` or :class:`MinNormAttack`
    write only :meth:`perturb`, and the model they get counts its own passes."""

    Params: ClassVar[type[AttackParams]] = AttackParams
    name: ClassVar[str] = ""
    baseline: ClassVar[bool] = False  # e.g. random noise: not expected to fool a model
    black_box: ClassVar[bool] = False  # uses scores only: forward passes are its queries
    universal: ClassVar[bool] = False  # one perturbation fit on training samples (uap)

    def __init__(self, params: AttackParams) -> None:
        self.params = params
        self.counts: dict[str, float] = {}
        self.tensors: dict[str, torch.Tensor] = {}

    @property
    def norm(self) -> str:
        """The norm of the threat model: the params' ``norm``."""
        return self.params.norm

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackOutput:
        _check(x, y)
        x = x.detach()  # the output never carries the caller's graph
        gen = generator or torch.Generator(device=x.device).manual_seed(self.params.seed)
        self.counts, self.tensors = {}, {}
        with attack_mode(model):
            counted = Counted(model)  # every pass below counts itself, per sample
            target = self._targets(counted, x, y, gen) if self.params.targeted else None
            x_adv = self._adversarial(counted, x, y, target, gen)
            with torch.inference_mode():
                pred = counted(x_adv).argmax(1)
        success = pred == target if target is not None else pred != y
        forward, backward = counted.forward_passes, counted.backward_passes
        tensors = {k: v.detach() for k, v in self.tensors.items()}
        return AttackOutput(
            x_adv, pred, success, target, forward, backward, dict(self.counts), tensors
        )

    @abstractmethod
    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return adversarial inputs for ``x``; ``target`` is set for targeted attacks."""

    def _adversarial(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """:meth:`perturb`'s result, detached and projected into the threat model."""
        return self._final_projection(self.perturb(model, x, y, target, gen).detach(), x)

    @abstractmethod
    def _final_projection(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x_adv`` inside the threat model around ``x``."""

    def loss_grad(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward and backward pass: (logits, ∇ₓ of the loss to ascend)."""
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y) if target is None else -F.cross_entropy(logits, target)
        grad = torch.autograd.grad(loss, x_adv)[0]
        return logits.detach(), grad

    def class_gradients(
        self, model: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward and one backward pass per class: ``(logits, (N, K, D) ∇ₓ z_k)``."""
        x = x.detach().requires_grad_(True)
        logits = model(x)
        k = logits.shape[1]
        rows = [
            torch.autograd.grad(logits[:, j].sum(), x, retain_graph=j < k - 1)[0].flatten(1)
            for j in range(k)
        ]
        return logits.detach(), torch.stack(rows, 1)

    def _targets(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        rule = self.params.target
        with torch.inference_mode():
            logits = model(x)
        k = logits.shape[1]
        if isinstance(rule, int):
            if not 0 <= rule < k:
                raise InputError(f"target class {rule} is outside 0..{k - 1}")
            return torch.full_like(y, rule)
        if rule == "least_likely":
            return logits.argmin(1)
        shift = torch.randint(1, k, y.shape, generator=gen, device=y.device)
        return (y + shift) % k  # uniform over the classes other than y


class FixedBudgetAttack(Attack):
    """An attack inside the eps-ball: ``eps`` is one budget in the attack's norm.

    The base projects the result onto the ball and [0, 1]; at ``eps = 0`` it returns ``x``
    without calling :meth:`perturb`.
    """

    Params: ClassVar[type[FixedBudgetParams]] = FixedBudgetParams
    params: FixedBudgetParams

    def _adversarial(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        if self.params.eps == 0:
            return x.clone()
        return super()._adversarial(model, x, y, target, gen)

    def _final_projection(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ball(self.norm).project(x_adv, x, self.params.eps)


class MinNormAttack(Attack):
    """A minimum-norm or sparse attack: it searches for the smallest perturbation.

    ``eps`` lists the budgets, in the attack's norm, at which success is counted; the base
    only clips the result to [0, 1].
    """

    Params: ClassVar[type[MinNormParams]] = MinNormParams
    params: MinNormParams

    def _final_projection(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x_adv.clamp(0, 1)


def _check(x: torch.Tensor, y: torch.Tensor) -> None:
    x = x.detach()
    if not torch.is_floating_point(x):
        raise InputError(f"x must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise InputError(
            f"expected x of shape (N, ...) and y of shape (N,), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if y.dtype != torch.int64:
        raise InputError(f"y must hold int64 class indices, got {y.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("x holds NaN or infinite values; expected finite values in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise InputError(
            f"x must lie in [0, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]); "
            "normalization belongs inside the model"
        )

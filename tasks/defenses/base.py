"""The base of inference-time defenses: model wrappers that declare whether they are
differentiable (an adaptive attack needs BPDA/EOT where they are not), and their registry.

``wrap(model, name, params)`` returns the defended model. An input-transform defense
(:class:`InputTransform`) returns a :class:`Defended` module whose ``forward(x)`` is
``model(transform(x))``; the transforms themselves live in :mod:`tasks.defenses.transforms`.
The package :mod:`tasks.defenses` registers every built-in defense.
Inputs are float ``(N, C, H, W)`` tensors in [0, 1]; the model normalizes internally.

Interface for adaptive attacks (BPDA, EOT)::

    defended.model           # the undefended model
    defended.transform(x)    # the input transform alone: x' in [0, 1], same shape
    defended.differentiable  # whether autograd through forward gives the true gradient
    defended.randomized      # whether each call draws fresh randomness
    defended.generator       # the torch.Generator the draws come from (None if not randomized)

BPDA (Athalye et al. 2018) runs ``transform`` on the forward pass and substitutes the identity
(or a differentiable approximation) on the backward pass, e.g.
``defended.model(x + (defended.transform(x) - x).detach())``. Asking autograd for a gradient
through the forward pass of a defense that is not differentiable raises
:class:`~tasks.errors.NotDifferentiableError` instead of handing back a masked (zero or absent)
gradient, so a plain gradient attack on such a defense fails with a clear message.

Randomness: a randomized defense draws from ``defended.generator``, a CPU generator seeded from
``params.seed`` when the wrapper is built, so its outputs are a deterministic stream: the same
seed, batches and call order give the same outputs; calling it twice on the same batch gives
two different draws. Each :func:`wrap` starts a fresh stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from tasks.datasets import Data, Split
from tasks.defenses.requirements import Requirement
from tasks.errors import InputError, NotDifferentiableError
from tasks.registry import Params, Registry

DEFENSES: Registry = Registry("defense", "defenses")

DefenseT = TypeVar("DefenseT", bound="Defense")


def register(name: str) -> Callable[[type[DefenseT]], type[DefenseT]]:
    """``@register("jpeg")``: add the class to :data:`DEFENSES` and record its name."""

    def decorate(cls: type[DefenseT]) -> type[DefenseT]:
        cls.name = name
        return DEFENSES.register(name)(cls)

    return decorate


class Defense:
    """Base: ``wrap(model)`` returns the defended model.

    Class attributes: ``differentiable`` (autograd through the defended model gives its true
    input gradient; a quantizer, whose gradient is zero almost everywhere, is not),
    ``randomized`` (its forward pass draws randomness) and ``requires`` (the trained
    artifacts its constructor takes as keywords, by role, each with the recipe that makes it
    in a study: :mod:`tasks.defenses.requirements`).
    """

    Params: ClassVar[type[Params]]
    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    requires: ClassVar[Mapping[str, Requirement]] = {}

    def __init__(self, params: Any) -> None:
        self.params = params

    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def extra_metrics(
        cls,
        params: Any,
        defended: nn.Module,
        data: Data,
        split: Split,
        tensors: Mapping[str, torch.Tensor],
    ) -> dict[str, float]:
        """The defense's own metrics for an attack cell on ``defended``; none by default.

        A defense whose robust accuracy is not the whole story (a detector, a certified
        smoothing) overrides this. The cell calls it after everything it stores, so draws
        made here change no stored example or prediction; names must not collide with the
        attack's (prefix them). A classmethod: it needs no instance, so no trained artifact
        (those are inside ``defended``).

        Args:
            params: the defense's validated params.
            defended: the defended model the cell evaluated (what :meth:`wrap` returned).
            data: the cell's dataset.
            split: its training part and evaluation slice.
            tensors: the cell's artifact tensors (``x_adv``, ``labels``, ``pred_clean``,
                ``pred_adv``, ``success``…), on the CPU.

        Returns:
            Metric name → value.
        """
        return {}


class InputTransform(Defense):
    """A defense that transforms the input before the model: ``model(transform(x))``.

    Subclasses write :meth:`transform`; it must not modify ``x`` in place and must return a
    tensor of ``x``'s shape, dtype and device with values in [0, 1]. A randomized subclass
    draws only from ``generator``; its params model has a ``seed`` field.
    """

    def wrap(self, model: nn.Module) -> Defended:
        return Defended(model, self)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``x`` after the defense's input transform."""
        raise NotImplementedError


class Defended(nn.Module):
    """``model(transform(x))``: a model behind an input-transform defense.

    The wrapper has no parameters or buffers of its own (its state dict is the model's under
    ``model.``), and ``train()``/``eval()`` reach the model as a submodule.
    """

    def __init__(self, model: nn.Module, defense: InputTransform) -> None:
        super().__init__()
        self.model = model
        self.defense = defense
        self.generator: torch.Generator | None = None
        if defense.randomized:
            self.generator = torch.Generator().manual_seed(defense.params.seed)

    @property
    def differentiable(self) -> bool:
        return self.defense.differentiable

    @property
    def randomized(self) -> bool:
        return self.defense.randomized

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The input transform alone (what BPDA runs on the forward pass)."""
        if x.dim() != 4 or not torch.is_floating_point(x):
            raise InputError(
                f"defense {self.defense.name!r} expects float images (N, C, H, W), got "
                f"{x.dtype} of shape {tuple(x.shape)}"
            )
        return self.defense.transform(x, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_t = self.transform(x)
        if not self.differentiable and x.requires_grad and torch.is_grad_enabled():
            x_t = NoGradient.apply(x, x_t.detach(), self.defense.name)
        return self.model(x_t)

    def extra_repr(self) -> str:
        return f"defense={self.defense.name}, params={self.defense.params!r}"


# set inside masked_gradients(): NoGradient then gives a zero gradient instead of an error
_MASKED: ContextVar[bool] = ContextVar("advgrid_masked_gradients", default=False)


@contextmanager
def masked_gradients() -> Iterator[None]:
    """Inside the block, a non-differentiable defense's forward gives the gradient plain
    autograd would: zero (a rounding's derivative, or no path through a codec or a vote).

    This is what a gradient attack that does not adapt to the defense follows, and what
    makes such a defense look robust (Athalye, Carlini & Wagner, ICML 2018). Only
    :func:`tasks.defenses.adaptive.naive` uses it, to record that non-adaptive number on purpose.
    """
    token = _MASKED.set(True)
    try:
        yield
    finally:
        _MASKED.reset(token)


class NoGradient(torch.autograd.Function):
    """Passes the transformed input forward; refuses to give a gradient backward, or gives
    zero when the forward ran inside :func:`masked_gradients`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_t: torch.Tensor, name: str) -> torch.Tensor:
        ctx.defense, ctx.masked = name, _MASKED.get()
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return x_t.clone()

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> Any:
        if ctx.masked:
            zero = torch.zeros(ctx.shape, dtype=ctx.dtype, device=grads[0].device)
            return zero, None, None
        raise NotDifferentiableError(
            f"defense {ctx.defense!r} is not differentiable: autograd through it gives no "
            "useful input gradient (it is absent or zero almost everywhere), so a gradient "
            "attack on it would report gradient masking, not robustness. Attack it with a "
            "gradient-free attack, or with an adaptive one (BPDA) that runs the defended "
            "model's `transform` forward and a differentiable stand-in backward."
        )


class NoneParams(Params):
    pass


@register("none")
class NoDefense(Defense):
    """No defense: the model as trained (the undefended baseline)."""

    Params = NoneParams
    differentiable = True

    def wrap(self, model: nn.Module) -> nn.Module:
        return model


def wrap(model: nn.Module, name: str, params: Params) -> nn.Module:
    """``model`` behind defense ``name`` with validated ``params``."""
    return DEFENSES.get(name).obj(params).wrap(model)


def extra_metrics(
    component: Mapping[str, Any],
    defended: nn.Module,
    data: Data,
    split: Split,
    tensors: Mapping[str, torch.Tensor],
) -> dict[str, float]:
    """:meth:`Defense.extra_metrics` of the defense component (``name``, ``params``) of an
    attack cell."""
    name = component["name"]
    params = DEFENSES.params_of(name, component["params"])
    return DEFENSES.get(name).obj.extra_metrics(params, defended, data, split, tensors)


def requirement_of(spec: Mapping[str, Any]) -> tuple[str, Requirement] | None:
    """``(role, requirement)`` when the train cell ``spec`` makes a defense's artifact (see
    :meth:`~tasks.defenses.requirements.Requirement.train_spec`): the defense its
    ``train.defense`` names declares the role whose recipe the spec holds. None for a model's
    own train cell (whose ``train.defense``, if any, is a training-time defense)."""
    name = (spec.get("train", {}).get("defense") or {}).get("name")
    if not isinstance(name, str) or name not in DEFENSES:
        return None
    for role, requirement in DEFENSES.get(name).obj.requires.items():
        if role in spec:
            return role, requirement
    return None


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device

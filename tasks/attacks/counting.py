"""Per-sample pass counting: the model an attack runs on, wrapped so that passes count themselves.

:class:`Counted` adds a call's batch size to ``forward`` on every forward call, and to
``backward`` every time autograd carries a gradient back through that call to its input
(one ``torch.autograd.grad`` or ``.backward()`` through a forward call of 8 samples
counts 8; ``K`` of them through the same call, as a Jacobian takes, count ``8·K``).
Calls inside another attack's ``Counted`` (an ensemble's members) count in both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Counted(nn.Module):
    """``model``, counting per-sample forward and backward passes through it.

    The forward value and the gradient are the model's, bit for bit. ``model`` is a
    submodule (so ``parameters()`` reach it) and the wrapper starts in ``model``'s mode:
    an attack that puts the wrapper in eval mode and restores it afterwards leaves the
    model in the mode it found.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_passes = 0
        self.backward_passes = 0
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_passes += len(x)
        if x.requires_grad and torch.is_grad_enabled():
            x = _CountBackward.apply(x, self)
        return self.model(x)


class _CountBackward(torch.autograd.Function):
    """The identity, which adds the batch size to the counter when a gradient passes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, counter: Counted) -> torch.Tensor:
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        ctx.counter.backward_passes += len(grad)
        return grad, None

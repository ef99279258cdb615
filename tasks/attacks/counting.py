"""Per-sample pass counting: the model an attack runs on, wrapped so that passes count themselves.

:class:`Counted` adds a call's batch size to ``forward`` on every forward call, and to
``backward`` every time autograd carries a gradient back through that call (one
``torch.autograd.grad`` or ``.backward()`` through a forward call of 8 samples counts 8;
``K`` of them through the same call, as a Jacobian takes, count ``8·K``). Calls inside
another attack's ``Counted`` (an ensemble's members) count in both.
"""

from __future__ import annotations

import torch
from torch import nn


class Counted(nn.Module):
    """``model``, counting per-sample forward and backward passes through it.

    The forward value and the gradient are the model's, bit for bit: the backward count is
    a hook on the output, which adds no node to the graph, so the gradients that reach the
    input are summed in the same order as without the wrapper (an EOT surrogate uses its
    input several times, and C&W adds the gradient of its distance term). ``model`` is a
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
        n = len(x)
        self.forward_passes += n
        out = self.model(x)
        if out.requires_grad:  # fires once per backward pass that reaches this output

            def count(grad: torch.Tensor) -> None:
                self.backward_passes += n

            out.register_hook(count)
        return out

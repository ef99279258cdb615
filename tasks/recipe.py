"""The optimizer, learning-rate schedule and weight average a training recipe names.

What :func:`tasks.training.fit` builds from a :class:`tasks.training.TrainParams`:

- :func:`optimizer`: Adam, AdamW (decoupled decay, Loshchilov & Hutter 2019) or SGD (with
  momentum, Nesterov's when asked); weight decay on every parameter, or (``norm_bias_decay:
  false``) on the weights of convolutions and linear layers only, biases and normalization
  layers left undecayed (Goyal et al. 2017; the usual option of ImageNet and CIFAR codes).
- :func:`schedule`: stepped once per minibatch. ``constant``; ``cosine`` to 0 (Loshchilov &
  Hutter 2017); ``step``, ×0.1 at half and three quarters of the steps (Madry et al. 2018,
  Rice et al. 2020); ``multistep``, ×``gamma`` at each epoch of ``milestones`` (TRADES: 75,
  90 of 100); ``onecycle``, a triangle from 0 up to ``lr`` at two fifths of the steps and
  back to 0 (the cyclic schedule of Wong et al. 2020's fast adversarial training, after
  Smith & Topin 2019). ``warmup_epochs`` scales any of them by a linear ramp from 0 over
  its first epochs (Goyal et al. 2017).
- :class:`WeightAverage`: an exponential moving average of the weights (and of the
  normalization layers' running statistics), decay ``ema`` per step, which becomes the
  trained model at the end (Polyak averaging; Gowal et al. 2020 for robust training).

``constant``, ``cosine`` and ``step`` without warm-up are the schedules recipes had before the
others existed, built as they were built then, so their keys keep giving the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

ONECYCLE_PEAK = 0.4  # the fraction of the steps at which `onecycle` reaches `lr`


def optimizer(model: nn.Module, params: Any) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model``'s parameters."""
    decay = params.weight_decay
    groups: Any = model.parameters()
    if not params.norm_bias_decay and decay > 0:
        named = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in named if p.ndim > 1], "weight_decay": decay},
            {"params": [p for p in named if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=params.lr,
            momentum=params.momentum,
            weight_decay=decay,
            nesterov=params.nesterov,
        )
    if params.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=params.lr, weight_decay=decay)
    return torch.optim.Adam(groups, lr=params.lr, weight_decay=decay)


def schedule(
    opt: torch.optim.Optimizer, params: Any, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The recipe's learning-rate schedule (None: constant), stepped once per minibatch."""
    steps = params.epochs * steps_per_epoch
    warm = round(params.warmup_epochs * steps_per_epoch)
    if warm == 0:  # the schedules of earlier recipes, built as they were
        if params.schedule == "constant":
            return None
        if params.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        if params.schedule == "step":
            marks = sorted({max(1, steps // 2), max(1, (3 * steps) // 4)})
            return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=marks, gamma=0.1)
    factor = _factor(params, steps, steps_per_epoch)
    if warm > 0:
        base = factor
        factor = lambda step: min(1.0, (step + 1) / warm) * base(step)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _factor(params: Any, steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The schedule's multiplier of ``lr`` at each step (0-based)."""
    name, total = params.schedule, max(steps, 1)
    if name == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if name in ("step", "multistep"):
        if name == "step":
            marks = sorted({max(1, steps // 2), max(1, (3 * steps) // 4)})
            gamma = 0.1
        else:
            marks = [m * steps_per_epoch for m in params.milestones or []]
            gamma = params.gamma
        return lambda step: gamma ** sum(step >= m for m in marks)
    if name == "onecycle":
        peak = max(1.0, ONECYCLE_PEAK * total)

        def triangle(step: int) -> float:
            if step < peak:
                return step / peak
            return max(0.0, (total - step) / (total - peak)) if total > peak else 1.0

        return triangle
    return lambda step: 1.0


class WeightAverage:
    """An exponential moving average of ``model``'s parameters and buffers (decay ``ema``
    per optimizer step, torch's :class:`AveragedModel`); :meth:`finish` copies it into the
    model. A no-op without ``ema``."""

    def __init__(self, model: nn.Module, ema: float | None) -> None:
        self.model = model
        self.average: AveragedModel | None = None
        if ema is not None:
            self.average = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True
            )

    def update(self) -> None:
        if self.average is not None:
            self.average.update_parameters(self.model)

    def finish(self) -> None:
        """The averaged weights (and running statistics) become the model's."""
        if self.average is None:
            return
        state = self.average.module.state_dict()
        for key, own in self.model.state_dict().items():
            if not own.is_floating_point():  # counters (num_batches_tracked) are not averaged
                state[key] = own
        self.model.load_state_dict(state)

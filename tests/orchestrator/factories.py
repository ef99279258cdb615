"""Model factories named by import path in tests (``tests.orchestrator.factories:tiny_mlp``)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

CALLS: list[tuple[dict[str, Any], tuple[int, ...], int]] = []
"""Every call of :func:`tiny_mlp` in this process: (params, input_shape, num_classes)."""

WIDTH = 16  # not callable


def tiny_mlp(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """One hidden ReLU layer over flattened pixels; ``params: {hidden: N}``."""
    CALLS.append((dict(params), input_shape, num_classes))
    hidden = int(params.get("hidden", WIDTH))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def not_a_module(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> str:
    """Returns a string where a network is expected."""
    return "a network"

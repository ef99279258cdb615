"""torchvision's classification architectures by name: ``arch: torchvision:resnet50``.

Built with ``torchvision.models.get_model(name, weights=None, num_classes=...)``: freshly
initialised under the cell's seed, never with downloaded weights (a checkpoint file brings
trained ones). The study's ``params`` go to ``get_model`` as keyword arguments
(``torchvision:vit_b_16`` with ``params: {image_size: 32}``), and torchvision checks them.

These are ImageNet networks: they expect three channels. A one-channel input (MNIST) is
repeated to three before the first layer, the usual way of feeding grayscale images to them;
other channel counts are refused.

The ``torchvision:`` prefix is not an import path: it names torchvision's own models, so it
needs no ``allow_imports``.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tasks.errors import FactoryError, UnknownComponentError

PREFIX = "torchvision:"

# set by advgrid, never by a study: weights would be downloaded, classes come from the data
RESERVED = ("weights", "weights_backbone", "progress", "num_classes")


def is_torchvision(arch: str) -> bool:
    """Whether ``arch`` names one of torchvision's architectures (``torchvision:NAME``)."""
    return arch.startswith(PREFIX)


def torchvision_names() -> list[str]:
    """torchvision's classification architectures (its top-level ``models`` namespace)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def name_of(arch: str) -> str:
    """The torchvision name in ``arch``; raises :class:`UnknownComponentError` if unknown."""
    name = arch[len(PREFIX) :]
    known = torchvision_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else "."
        raise UnknownComponentError(
            f"unknown torchvision model {name!r}{hint} torchvision has {len(known)} "
            "classification models: torchvision.models.list_models(module=torchvision.models) "
            "lists them"
        )
    return name


def check_torchvision(arch: str, params: Mapping[str, Any]) -> None:
    """Raise if ``arch`` is unknown or ``params`` set what advgrid sets itself.

    Raises:
        UnknownComponentError: no such torchvision model.
        FactoryError: ``params`` holds one of ``weights``, ``weights_backbone``,
            ``progress`` or ``num_classes``.
    """
    name_of(arch)
    taken = [k for k in RESERVED if k in params]
    if taken:
        raise FactoryError(
            f"params of {arch!r} may not set {', '.join(repr(k) for k in taken)}: advgrid builds "
            "torchvision models with weights=None (never downloading any; give trained weights "
            "as a checkpoint file) and num_classes from the dataset"
        )


def factory(arch: str) -> Callable[..., nn.Module]:
    """``factory(params, input_shape, num_classes)`` for ``torchvision:NAME``."""
    return functools.partial(build, name_of(arch))


def build(
    name: str, params: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=..., **params)``."""
    import torchvision

    arch = PREFIX + name
    check_torchvision(arch, params)
    channels = int(input_shape[0])
    if channels not in (1, 3):
        raise FactoryError(
            f"{arch!r} takes 3-channel (or 1-channel, repeated) images; this data has {channels}"
        )
    try:
        net = torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **dict(params)
        )
    except (TypeError, ValueError) as exc:  # an unknown or bad keyword argument
        raise FactoryError(f"torchvision could not build {arch!r}: {exc}") from exc
    if channels == 1:
        net.register_forward_pre_hook(_gray_to_rgb)
    return net


def _gray_to_rgb(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A forward pre-hook: the one-channel input repeated to three channels."""
    x, *rest = args
    return (x.expand(-1, 3, -1, -1), *rest)

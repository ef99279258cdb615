"""The model registry and the functions that resolve and build an architecture.

Inputs live in [0, 1]; normalization happens inside the model.

An architecture is a registered name (``small_cnn``), one of torchvision's by name
(``torchvision:resnet50``, see :mod:`tasks.models.torchvision_nets`) or a factory named by
import path (``mylab.nets:resnet_tiny``). All are called the same way::

    factory(params, input_shape, num_classes) -> torch.nn.Module

with ``input_shape`` a ``(channels, height, width)`` tuple. A registered architecture gets
its validated params model; torchvision's and a factory get the study's ``params`` as a plain
dict (no params model is known for them, so they check them themselves). Either way the
network is wrapped in the dataset's normalization and its weights are initialised under the
seed.

Importing a module runs its code, so an import path is only followed when the caller says
the data naming it is trusted (a study with ``allow_imports: true``); otherwise
:class:`~tasks.errors.ImportNotAllowedError` is raised before anything is imported.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tasks.errors import FactoryError, ImportNotAllowedError
from tasks.models import torchvision_nets
from tasks.registry import Params, Registry

MODELS: Registry = Registry("model", "models")


class Normalized(nn.Module):
    """``net((x - mean) / std)``: lets attacks work in [0, 1] pixel space."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
SIGNATURE = "factory(params: dict, input_shape: tuple, num_classes: int) -> torch.nn.Module"


def is_import_path(arch: str) -> bool:
    """Whether ``arch`` names a factory by import path (``package.module:factory``).

    Registered names and torchvision's (``torchvision:NAME``) are not import paths.
    """
    return ":" in arch and not torchvision_nets.is_torchvision(arch)


def factory(arch: str, *, allow_imports: bool = False) -> Callable[..., Any]:
    """The callable behind ``arch``: a registered architecture or an imported factory.

    Raises:
        UnknownComponentError: ``arch`` is neither registered nor an import path, or names
            no torchvision model.
        ImportNotAllowedError: ``arch`` is an import path and ``allow_imports`` is false.
        FactoryError: the import path cannot be imported, lacks the attribute, or names
            something that is not callable.
    """
    if torchvision_nets.is_torchvision(arch):
        return torchvision_nets.factory(arch)
    if not is_import_path(arch):
        return MODELS.get(arch).obj
    if not allow_imports:
        raise ImportNotAllowedError(
            f"refusing to import model factory {arch!r}: importing it runs its code, and this "
            "cell was not marked as coming from a study with `allow_imports: true`"
        )
    return _import(arch)


def _import(path: str) -> Callable[..., Any]:
    if not IMPORT_PATH.match(path):
        raise FactoryError(f"{path!r} is not an import path of the form package.module:factory")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise FactoryError(
                f"cannot import module {module_name!r} of model factory {path!r}: no module "
                f"named {exc.name!r}; install it or put its folder on PYTHONPATH (of the "
                "driver and of every Ray worker)"
            ) from exc
        raise FactoryError(f"importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # user code: any error while importing it is the user's to fix
        raise FactoryError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    parts = attr.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            owner = f"{module_name}:{'.'.join(parts[:i])}" if i else module_name
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise FactoryError(f"{owner!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FactoryError(
            f"{path!r} is not callable (it is of type {type(obj).__name__!r}); a model "
            f"factory is called as {SIGNATURE}"
        )
    return obj


def params_of(arch: str, values: Mapping[str, Any]) -> Params | dict[str, Any]:
    """The params ``arch`` is called with.

    A registered architecture's params model validates ``values`` and fills in defaults;
    torchvision's and a factory named by import path get a copy of ``values`` as they are.
    """
    if is_import_path(arch) or torchvision_nets.is_torchvision(arch):
        return copy.deepcopy(dict(values))
    return MODELS.params_of(arch, dict(values))


def dump_params(params: Params | Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as JSON data (what cell specs and artifact metadata hold)."""
    if isinstance(params, Params):
        return params.model_dump(mode="json")
    return copy.deepcopy(dict(params))


def build(
    arch: str,
    params: Params | Mapping[str, Any],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
    allow_imports: bool = False,
) -> Normalized:
    """Instantiate ``arch`` with weights initialised from ``seed``, wrapped in normalization.

    ``allow_imports`` must be true for an import-path ``arch`` (see :func:`factory`).
    """
    make = factory(arch, allow_imports=allow_imports)
    shape = tuple(int(n) for n in input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not is_import_path(arch):
            net = make(params, shape, num_classes)
        else:
            try:
                net = make(copy.deepcopy(dict(params)), shape, num_classes)
            except Exception as exc:  # user code: wrapped once, with the path that failed
                raise FactoryError(
                    f"model factory {arch!r} raised {type(exc).__name__}: {exc}"
                ) from exc
    if not isinstance(net, nn.Module):
        raise FactoryError(
            f"model factory {arch!r} returned a {type(net).__name__}, not a torch.nn.Module"
        )
    return Normalized(net, mean, std)

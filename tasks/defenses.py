"""Defenses applied at inference time: model wrappers that declare whether they are
differentiable (an adaptive attack needs BPDA/EOT where they are not)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from tasks.registry import Params, Registry

DEFENSES: Registry = Registry("defense", "defenses")


class Defense:
    """Base: ``wrap(model)`` returns the defended model."""

    Params: ClassVar[type[Params]]
    differentiable: ClassVar[bool] = True

    def __init__(self, params: Any) -> None:
        self.params = params

    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError


class NoneParams(Params):
    pass


@DEFENSES.register("none")
class NoDefense(Defense):
    """No defense: the model as trained (the undefended baseline)."""

    Params = NoneParams
    differentiable = True

    def wrap(self, model: nn.Module) -> nn.Module:
        return model


def wrap(model: nn.Module, name: str, params: Params) -> nn.Module:
    """``model`` behind defense ``name`` with validated ``params``."""
    return DEFENSES.get(name).obj(params).wrap(model)

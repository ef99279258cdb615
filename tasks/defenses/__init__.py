"""Inference-time defenses: the base classes and registry, one module per family, and the
adaptive surrogates (BPDA, EOT) that attack them.

Importing this package registers every built-in defense in :data:`DEFENSES`. Modules inside
it import :mod:`tasks.defenses.base`, never this package, so there is no import cycle.
"""

from tasks.defenses import (  # noqa: F401  (registration)
    detectors,
    mlvgm,
    projection,
    purify,
    smoothing,
    transforms,
    tv_min,
)
from tasks.defenses.base import (
    DEFENSES,
    Defended,
    Defense,
    InputTransform,
    NoDefense,
    device_of,
    extra_metrics,
    masked_gradients,
    register,
    requirement_of,
    wrap,
)
from tasks.defenses.requirements import Recipe, Requirement

__all__ = [
    "DEFENSES",
    "Defended",
    "Defense",
    "InputTransform",
    "NoDefense",
    "Recipe",
    "Requirement",
    "device_of",
    "extra_metrics",
    "masked_gradients",
    "register",
    "requirement_of",
    "wrap",
]

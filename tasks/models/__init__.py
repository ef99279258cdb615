"""Model architectures. Inputs live in [0, 1]; normalization happens inside the model.

Importing this package registers every built-in architecture in :data:`MODELS`:
:mod:`~tasks.models.simple` holds ``mlp``, ``small_cnn`` and ``dae``.
:mod:`tasks.models.base` holds the registry and :func:`build`; modules inside this package
import it, never this package, so there is no import cycle.
"""

from tasks.models import simple  # noqa: F401  (registration)
from tasks.models.base import (
    IMPORT_PATH,
    MODELS,
    SIGNATURE,
    Normalized,
    build,
    dump_params,
    factory,
    is_import_path,
    params_of,
)
from tasks.models.simple import DAE, MLP, DAEParams, MLPParams, SmallCNN, SmallCNNParams

__all__ = [
    "DAE",
    "IMPORT_PATH",
    "MLP",
    "MODELS",
    "SIGNATURE",
    "DAEParams",
    "MLPParams",
    "Normalized",
    "SmallCNN",
    "SmallCNNParams",
    "build",
    "dump_params",
    "factory",
    "is_import_path",
    "params_of",
]

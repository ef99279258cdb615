"""Model architectures. Inputs live in [0, 1]; normalization happens inside the model.

Importing this package registers every built-in architecture in :data:`MODELS`:

- :mod:`~tasks.models.simple`: ``mlp``, ``small_cnn``, ``dae``;
- :mod:`~tasks.models.generative`: ``hvae`` (hierarchical VAE), ``vae``;
- :mod:`~tasks.models.small_nets`: ``lenet5``, ``madry_cnn``;
- :mod:`~tasks.models.resnet`: ``resnet18``, ``resnet34``, ``resnet50`` (CIFAR variant);
- :mod:`~tasks.models.preact_resnet`: ``preact_resnet18``;
- :mod:`~tasks.models.wide_resnet`: ``wide_resnet`` (WRN-``depth``-``widen``).

The ResNets keep the parameter names of RobustBench's model zoo, so its checkpoint files
load strictly. ``torchvision:NAME`` builds one of torchvision's classification networks
(:mod:`~tasks.models.torchvision_nets`); ``package.module:factory`` names a factory by
import path. :mod:`tasks.models.base` holds the registry and :func:`build`; modules inside
this package import it, never this package, so there is no import cycle.
"""

from tasks.models import (  # noqa: F401  (registration)
    generative,
    preact_resnet,
    resnet,
    simple,
    small_nets,
    torchvision_nets,
    wide_resnet,
)
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
from tasks.models.preact_resnet import PreActResNet18, PreActResNetParams
from tasks.models.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNetParams
from tasks.models.simple import DAE, MLP, DAEParams, MLPParams, SmallCNN, SmallCNNParams
from tasks.models.small_nets import LeNet5, LeNet5Params, MadryCNN, MadryCNNParams
from tasks.models.torchvision_nets import check_torchvision, is_torchvision, torchvision_names
from tasks.models.wide_resnet import WideResNet, WideResNetParams

__all__ = [
    "DAE",
    "IMPORT_PATH",
    "MLP",
    "MODELS",
    "SIGNATURE",
    "DAEParams",
    "LeNet5",
    "LeNet5Params",
    "MLPParams",
    "MadryCNN",
    "MadryCNNParams",
    "Normalized",
    "PreActResNet18",
    "PreActResNetParams",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNetParams",
    "SmallCNN",
    "SmallCNNParams",
    "WideResNet",
    "WideResNetParams",
    "build",
    "check_torchvision",
    "dump_params",
    "factory",
    "is_import_path",
    "is_torchvision",
    "params_of",
    "torchvision_names",
]

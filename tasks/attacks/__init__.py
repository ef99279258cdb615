"""Attacks: the template base classes, norm-ball strategies and one module per family.

Importing this package registers every built-in attack in :data:`ATTACKS`.
"""

from tasks.attacks import (  # noqa: F401  (registration)
    apgd,
    autoattack,
    bim,
    corruption,
    cw,
    deepfool,
    ead,
    fab,
    fgsm,
    jsma,
    latent,
    latent_sweep,
    lbfgs,
    mim,
    noise,
    on_range,
    one_pixel,
    pgd,
    spsa,
    square,
    uap,
)
from tasks.attacks.base import (
    ATTACKS,
    Attack,
    AttackOutput,
    FixedBudgetAttack,
    MinNormAttack,
    register,
)
from tasks.attacks.params import AttackParams, FixedBudgetParams, MinNormParams

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackOutput",
    "AttackParams",
    "FixedBudgetAttack",
    "FixedBudgetParams",
    "MinNormAttack",
    "MinNormParams",
    "register",
]

"""AutoAttack — the standard parameter-free ensemble, worst case per sample.

Croce & Hein, "Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse
Parameter-free Attacks", ICML 2020.

Threat model: the members' (white-box gradients and black-box scores), ``‖x' − x‖ ≤ eps``
in ``norm``, inputs in [0, 1], untargeted. The members run in order — by default the
standard version's APGD-CE, APGD-T (targeted DLR over the top wrong classes), FAB-T
(minimum-norm, towards the top wrong classes; it counts only within ``eps``) and Square —
each only on the samples no earlier member fooled, and a sample keeps the first adversarial
example found, so the ensemble is at least as strong as its first member on every sample
and its robust accuracy is the worst case over the members. The breakdown — robust
accuracy after each member — is reported as ``robust_accuracy_after_<member>``. Cost: the
members' passes on the samples they attack.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tasks.attacks.base import ATTACKS, Attack, FixedBudgetAttack, MinNormAttack, register
from tasks.attacks.norms import ball
from tasks.attacks.params import FixedBudgetParams

MEMBERS = ("apgd_ce", "apgd_dlr", "apgd_t", "fab_t", "square")


class AutoAttackParams(FixedBudgetParams):
    norm: Literal["linf", "l2"] = "linf"
    attacks: list[str] = Field(default_factory=lambda: ["apgd_ce", "apgd_t", "fab_t", "square"])
    steps: int = Field(100, ge=1, description="iterations of each APGD and FAB member")
    n_target_classes: int = Field(9, ge=1)
    max_queries: int = Field(5000, ge=1, description="query budget of Square")

    goals = "untargeted"
    refusal = "autoattack is untargeted (APGD-T uses targets internally)"

    @field_validator("attacks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in MEMBERS]
        if unknown or not value:
            raise ValueError(f"members must be among {', '.join(MEMBERS)} (got {value})")
        return value


@register("autoattack")
class AutoAttack(FixedBudgetAttack):
    """AutoAttack ensemble: APGD-CE, APGD-T, FAB-T, Square; worst case per sample (Croce 2020)."""

    Params = AutoAttackParams
    params: AutoAttackParams

    def member(self, name: str) -> Attack:
        entry = ATTACKS.get(name)
        shared = {
            "eps": [self.params.eps] if issubclass(entry.obj, MinNormAttack) else self.params.eps,
            "norm": self.params.norm,
            "seed": self.params.seed,
            "steps": self.params.steps,
            "max_queries": self.params.max_queries,
            "n_target_classes": self.params.n_target_classes,
        }
        return entry.obj(
            entry.params.model_validate(
                {k: v for k, v in shared.items() if k in entry.params.model_fields}
            )
        )

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        out = x.clone()
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        with torch.inference_mode():
            robust &= model(x).argmax(1) == y  # misclassified when clean: nothing to attack
        for name in self.params.attacks:
            idx = robust.nonzero()[:, 0]
            if len(idx):
                member = self.member(name)
                # a member's passes go through ``model``, so they count here as well
                result = member(model, x[idx], y[idx], generator=generator)
                ok = result.success
                if isinstance(member, MinNormAttack):  # its successes count within eps only
                    size = ball(self.params.norm).norm(result.x_adv - x[idx])
                    ok = ok & (size <= self.params.eps)
                out[idx[ok]] = result.x_adv[ok]
                robust[idx[ok]] = False
            self.counts[f"robust_accuracy_after_{name}"] = int(robust.sum())
        return out

"""Forward and backward passes every attack reports, against an independent count.

Every case runs on the session's digits CNN (``trained``) wrapped in :class:`Tally`, which
counts the passes through the network with module hooks (a forward hook, and a full
backward hook that fires once per gradient carried back through a call), a mechanism apart
from the one the attack base uses (a hook on each call's output). A pass the base misses or
counts twice shows as a difference. Totals are over the first ``N`` evaluation samples; a
pass through the model on a batch of 8 counts 8.

How many passes an attack with early stopping makes depends on which samples it has
already broken, so on the trained weights, and those differ in their last bits between
CPUs: the counts are compared with what the same run made, never pinned as numbers, except
for attacks whose counts follow from their parameters alone (:data:`FIXED`).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from tasks.attacks import ATTACKS, AttackOutput

N = 32
SMALL: dict[str, Any] = {"eps": 0.1, "steps": 5, "step_size": 0.03, "max_queries": 300}

# case id -> (attack, params beyond SMALL); every registered attack has at least one
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "fgsm": ("fgsm", {}),
    "fgsm_targeted": ("fgsm", {"targeted": True}),
    "bim": ("bim", {}),
    "illc": ("illc", {}),
    "mim": ("mim", {}),
    "pgd": ("pgd", {}),
    "pgd_l2_restarts": ("pgd", {"norm": "l2", "eps": 1.0, "restarts": 3}),
    "pgd_early_stop": ("pgd", {"eps": 0.2, "steps": 10, "early_stop": True}),
    "pgd_targeted": ("pgd", {"targeted": True, "target": "least_likely"}),
    "noise": ("noise", {}),
    "noise_gaussian": ("noise", {"distribution": "gaussian", "norm": "l2", "eps": 1.0}),
    "corruption": ("corruption", {"kind": "jpeg", "severity": 5}),
    "corruption_noise": ("corruption", {"kind": "gaussian_noise"}),
    "apgd_ce": ("apgd_ce", {"restarts": 2}),
    "apgd_dlr": ("apgd_dlr", {"norm": "l2", "eps": 1.0}),
    "apgd_t": ("apgd_t", {"n_target_classes": 3}),
    "apgd_t_targeted": ("apgd_t", {"targeted": True}),
    "autoattack": ("autoattack", {"n_target_classes": 2}),
    "fab": ("fab", {"eps": [0.1, 0.3], "restarts": 2}),
    "fab_targeted": ("fab", {"eps": 1.0, "norm": "l2", "targeted": True}),
    "fab_t": ("fab_t", {"eps": [0.1], "n_target_classes": 3}),
    "cw_l2": ("cw_l2", {"eps": [0.5, 1.0], "steps": 20, "search_steps": 2, "lr": 0.05}),
    "cw_l2_targeted": ("cw_l2", {"eps": 1.0, "targeted": True, "search_steps": 2}),
    "deepfool": ("deepfool", {"eps": [0.5], "steps": 20}),
    "deepfool_linf": ("deepfool", {"eps": 0.1, "norm": "linf", "candidates": 4}),
    "ead": ("ead", {"eps": [1.0], "search_steps": 2}),
    "lbfgs": ("lbfgs", {"eps": [1.0], "steps": 5, "search_steps": 2}),
    "jsma": ("jsma", {"eps": [10], "gamma": 0.05}),
    "jsma_targeted": ("jsma", {"eps": [10], "gamma": 0.05, "targeted": True}),
    "one_pixel": ("one_pixel", {"eps": [3], "pixels": 3, "steps": 5, "popsize": 20}),
    "spsa": ("spsa", {"steps": 4, "samples": 8}),
    "square": ("square", {"max_queries": 50}),
    "square_l2_targeted": ("square", {"norm": "l2", "eps": 1.0, "targeted": True}),
    "uap": ("uap", {"eps": 0.3, "max_passes": 2, "fit_batch": 8}),
    "uap_deepfool": ("uap", {"eps": 2.0, "norm": "l2", "method": "deepfool", "max_passes": 1}),
}

# case id -> (forward, backward) over N samples, for attacks whose counts follow from their
# parameters: fgsm one gradient and a scoring pass, bim/pgd steps + 1 forward and steps
# backward, noise a scoring pass
FIXED: dict[str, tuple[int, int]] = {
    "fgsm": (64, 32),
    "fgsm_targeted": (96, 32),
    "bim": (192, 160),
    "pgd": (192, 160),
    "pgd_targeted": (224, 160),
    "noise": (32, 0),
    "noise_gaussian": (32, 0),
    "corruption": (32, 0),  # the model is never run but to score
    "corruption_noise": (32, 0),
}


class Tally(nn.Module):
    """``model`` with its per-sample passes counted by module hooks (removed on exit)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_passes = self.backward_passes = 0
        self.train(model.training)
        self.hooks = [
            model.register_forward_hook(self._forward),
            model.register_full_backward_hook(self._backward),
        ]

    def __enter__(self) -> Tally:
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self.hooks:  # the session's model is shared: leave it as it was
            hook.remove()

    def _forward(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self.forward_passes += len(args[0])

    def _backward(self, module: nn.Module, grad_in: tuple, grad_out: tuple) -> None:
        self.backward_passes += len(grad_out[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def run(case: str, model: nn.Module, trained: Any) -> AttackOutput:
    name, overrides = CASES[case]
    entry = ATTACKS.get(name)
    values = {**SMALL, **overrides}
    values = {k: v for k, v in values.items() if k in entry.params.model_fields}
    attack = entry.obj(entry.params.model_validate(values))
    return attack(model, trained.x[:N], trained.y[:N])


def test_every_registered_attack_has_a_case() -> None:
    # attacks on a generator need a purified model: tests/tasks/test_generative.py counts them
    classifier_attacks = {e.name for e in ATTACKS if not getattr(e.obj, "needs_generator", False)}
    assert {name for name, _ in CASES.values()} == classifier_attacks


@pytest.mark.parametrize("case", sorted(CASES))
def test_reported_passes_are_the_passes_made(case: str, trained: Any) -> None:
    with Tally(trained.model) as tally:
        out = run(case, tally, trained)
    assert (out.forward, out.backward) == (tally.forward_passes, tally.backward_passes)
    assert out.forward > 0
    if case in FIXED:
        assert (out.forward, out.backward) == FIXED[case]


@pytest.mark.parametrize("method", ["sgd", "deepfool"])
def test_uap_fit_counts_its_own_passes(method: str, trained) -> None:
    """A cell calls ``fit`` outside ``__call__``: its passes are reported as ``fit_*``."""
    params = {"eps": 2.0, "norm": "l2", "method": method, "max_passes": 2, "fit_batch": 8}
    uap = ATTACKS.get("uap").obj(ATTACKS.params_of("uap", {**params, "steps": 5}))
    with Tally(trained.model) as tally:
        info = uap.fit(tally, trained.x[:48])
    assert (info["forward"], info["backward"]) == (tally.forward_passes, tally.backward_passes)
    assert info["backward"] > 0

"""Forward and backward passes every attack reports, pinned per case.

The numbers were recorded on the session's digits CNN (``trained``) before the base class
took over the counting from the attacks, so a pass the base misses or counts twice shows
here as a changed number. Totals are over the first ``N`` evaluation samples; a pass
through the model on a batch of 8 counts 8.
"""

from __future__ import annotations

from typing import Any

import pytest

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

# case id -> (forward, backward): totals over N samples, recorded before the change
EXPECTED: dict[str, tuple[int, int]] = {
    "fgsm": (64, 32),
    "fgsm_targeted": (96, 32),
    "bim": (192, 160),
    "illc": (224, 160),
    "mim": (192, 160),
    "pgd": (192, 160),
    "pgd_l2_restarts": (608, 480),
    "pgd_early_stop": (173, 141),
    "pgd_targeted": (224, 160),
    "noise": (32, 0),
    "noise_gaussian": (32, 0),
    "apgd_ce": (296, 264),
    "apgd_dlr": (224, 192),
    "apgd_t": (412, 348),
    "apgd_t_targeted": (256, 192),
    "autoattack": (4662, 472),
    "fab": (672, 3200),
    "fab_targeted": (384, 160),
    "fab_t": (704, 320),
    "cw_l2": (1312, 1280),
    "cw_l2_targeted": (384, 320),
    "deepfool": (303, 2629),
    "deepfool_linf": (215, 755),
    "ead": (672, 320),
    "lbfgs": (512, 448),
    "jsma": (95, 630),
    "jsma_targeted": (128, 640),
    "one_pixel": (2272, 0),
    "spsa": (2144, 0),
    "square": (1463, 0),
    "square_l2_targeted": (6363, 0),
    "uap": (192, 64),
    "uap_deepfool": (341, 1639),
}


def run(case: str, trained: Any) -> AttackOutput:
    name, overrides = CASES[case]
    entry = ATTACKS.get(name)
    values = {**SMALL, **overrides}
    values = {k: v for k, v in values.items() if k in entry.params.model_fields}
    attack = entry.obj(entry.params.model_validate(values))
    return attack(trained.model, trained.x[:N], trained.y[:N])


def test_every_registered_attack_has_a_case() -> None:
    assert {name for name, _ in CASES.values()} == {e.name for e in ATTACKS}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pass_counts_are_what_they_were(case: str, trained: Any) -> None:
    out = run(case, trained)
    assert (out.forward, out.backward) == EXPECTED[case]


@pytest.mark.parametrize(("method", "expected"), [("sgd", (240, 96)), ("deepfool", (657, 3201))])
def test_uap_fit_counts_its_own_passes(method: str, expected: tuple[int, int], trained) -> None:
    """A cell calls ``fit`` outside ``__call__``: its passes are reported as ``fit_*``."""
    params = {"eps": 2.0, "norm": "l2", "method": method, "max_passes": 2, "fit_batch": 8}
    uap = ATTACKS.get("uap").obj(ATTACKS.params_of("uap", {**params, "steps": 5}))
    info = uap.fit(trained.model, trained.x[:48])
    assert (info["forward"], info["backward"]) == expected

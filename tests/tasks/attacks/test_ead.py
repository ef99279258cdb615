"""EAD against torchattacks' EADL1 and EADEN on the same model, inputs and settings.

Both run ``steps = 50`` and ``search_steps = 4`` from ``c = 1e-3`` (so the last round is at
``c = 1`` for a sample never fooled before), ``β = 1e-3``, ``κ = 0``, ``lr = 0.01``;
torchattacks' early abort is off so that both run every step. Distortions are medians over
the samples both attacks fool. Measured here, ours vs torchattacks, on the digits model
trained with 2 threads (1 thread trains a slightly different model; its numbers follow):

===========  =========  ===========  ===============  ===========================
goal         rule       success      median L1        median ``β‖δ‖₁ + ‖δ‖₂²``
===========  =========  ===========  ===============  ===========================
untargeted   ``l1``     100 / 100 %  1.77 / 1.76      0.274 / 0.272
untargeted   ``en``     100 / 100 %  2.03 / 1.92      0.249 / 0.256
targeted     ``l1``     100 / 76 %   3.13 / 3.26      0.655 / 0.684
targeted     ``en``     100 / 76 %   3.46 / 3.49      0.619 / 0.632
===========  =========  ===========  ===============  ===========================

(1 thread: L1 1.80 / 1.76, 2.11 / 1.92, 3.12 / 3.19, 3.67 / 3.39; elastic net 0.281 /
0.281, 0.254 / 0.260, 0.675 / 0.686, 0.622 / 0.640; success as above, 75 % targeted.)

Two differences explain the gaps. torchattacks takes the target's logit as
``max(one_hot · z)``, which is ``max(z_t, 0)``: while ``z_t < 0`` (for about 70 % of the
random targets here) its targeted loss does not raise the target, so it fools fewer
samples. And torchattacks carries the iterate of one search round into the next, where
advgrid starts every round from ``x`` as the paper's reference code does: under the ``en``
rule the restart finds a smaller elastic-net distortion (the quantity that rule minimizes)
with 6-10 % more L1. So the ``en`` rule is held to 5 % on its elastic-net median and given
15 % on its L1 median; the ``l1`` rule is held to 5 % on L1.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks

from tasks.attacks import ATTACKS

SETTINGS = {"c": 1e-3, "beta": 1e-3, "kappa": 0.0, "steps": 50, "search_steps": 4, "lr": 0.01}
REFERENCE = {"en": torchattacks.EADEN, "l1": torchattacks.EADL1}


def _l1(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_adv - x).flatten(1).abs().sum(1)


def _en(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return SETTINGS["beta"] * delta.abs().sum(1) + delta.pow(2).sum(1)


def _ours(trained, decision: str, targeted: bool):
    params = ATTACKS.params_of("ead", {**SETTINGS, "decision": decision, "targeted": targeted})
    return ATTACKS.get("ead").obj(params)(trained.model, trained.x, trained.y)


def _reference(trained, decision: str, target: torch.Tensor | None) -> torch.Tensor:
    attack = REFERENCE[decision](
        trained.model,
        kappa=SETTINGS["kappa"],
        lr=SETTINGS["lr"],
        binary_search_steps=SETTINGS["search_steps"],
        max_iterations=SETTINGS["steps"],
        abort_early=False,
        initial_const=SETTINGS["c"],
        beta=SETTINGS["beta"],
    )
    if target is not None:
        attack.set_mode_targeted_by_function(lambda images, labels: target)
    try:
        return attack(trained.x, trained.y).detach()
    finally:
        for p in trained.model.parameters():  # torchattacks leaves .grad on the model
            p.grad = None


@pytest.fixture(scope="module")
def untargeted(trained):
    return {decision: _ours(trained, decision, targeted=False) for decision in REFERENCE}


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("decision", ["l1", "en"])
def test_as_strong_and_as_small_as_torchattacks(
    decision: str, targeted: bool, trained, untargeted
) -> None:
    ours = _ours(trained, decision, targeted=True) if targeted else untargeted[decision]
    ref = _reference(trained, decision, ours.target)
    with torch.inference_mode():
        pred = trained.model(ref).argmax(1)
    ref_success = pred == ours.target if targeted else pred != trained.y
    ours_rate, ref_rate = float(ours.success.float().mean()), float(ref_success.float().mean())
    assert ours_rate > 0.5  # the comparison means something
    assert ours_rate >= ref_rate - 0.02
    both = ours.success & ref_success
    assert int(both.sum()) >= 100
    ours_l1 = float(_l1(ours.x_adv, trained.x)[both].median())
    ref_l1 = float(_l1(ref, trained.x)[both].median())
    if decision == "l1":
        assert ours_l1 <= ref_l1 * 1.05
    else:  # see the module docstring: the elastic-net distortion is what this rule minimizes
        assert ours_l1 <= ref_l1 * 1.15
        ours_en = float(_en(ours.x_adv, trained.x)[both].median())
        ref_en = float(_en(ref, trained.x)[both].median())
        assert ours_en <= ref_en * 1.05


def test_l1_rule_keeps_smaller_l1_and_en_rule_smaller_elastic_net(trained, untargeted) -> None:
    l1_rule, en_rule = untargeted["l1"], untargeted["en"]
    both = l1_rule.success & en_rule.success
    assert float(both.float().mean()) > 0.9
    l1_of = {k: float(_l1(o.x_adv, trained.x)[both].median()) for k, o in untargeted.items()}
    en_of = {k: float(_en(o.x_adv, trained.x)[both].median()) for k, o in untargeted.items()}
    assert l1_of["l1"] <= l1_of["en"]  # measured 1.77 vs 2.03
    assert en_of["en"] <= en_of["l1"]  # measured 0.249 vs 0.274


def test_counts_and_untouched_failures(trained) -> None:
    """At a constant too small to fool most samples, those samples come back unchanged."""
    params = ATTACKS.params_of("ead", {**SETTINGS, "c": 1e-6, "steps": 5, "search_steps": 1})
    out = ATTACKS.get("ead").obj(params)(trained.model, trained.x, trained.y)
    missed = ~out.success
    assert int(missed.sum()) > 0
    assert torch.equal(out.x_adv[missed], trained.x[missed])
    n = len(trained.x)
    assert out.forward == n * (2 * 5 + 1)  # gradient and check per step, then scoring
    assert out.backward == n * 5

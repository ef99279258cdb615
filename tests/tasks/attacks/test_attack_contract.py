"""The contract every registered attack keeps (run over the whole registry)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tasks.attacks import ATTACKS, Attack, FixedBudgetAttack, MinNormAttack
from tasks.attacks.norms import ball
from tasks.errors import InputError

# attacks on a generator need a model behind a generative purifier: their contract is in
# tests/tasks/test_generative.py
NAMES = [e.name for e in ATTACKS if not getattr(e.obj, "needs_generator", False)]
SMALL = {"eps": 0.1, "steps": 5, "step_size": 0.03, "max_queries": 300}
# attacks whose default goal is harder need a larger budget to show an effect on digits
STRONGER: dict[str, dict[str, object]] = {
    "illc": {"eps": 0.3, "steps": 20},
    "deepfool": {"steps": 50},  # on digits the box constraint needs more than 5 steps
    "autoattack": {"n_target_classes": 2},
    "cw_l2": {"steps": 30, "search_steps": 3, "lr": 0.05},
    "spsa": {"steps": 20, "samples": 32, "lr": 0.02, "max_queries": 2000},
    "fab": {"steps": 30},
    "uap": {"eps": 0.3},  # one perturbation for every input needs a larger budget
    "one_pixel": {"pixels": 5, "steps": 20, "popsize": 40},
}


def make(name: str, **overrides: object) -> Attack:
    entry = ATTACKS.get(name)
    values = {k: v for k, v in {**SMALL, **overrides}.items() if k in entry.params.model_fields}
    return entry.obj(entry.params.model_validate(values))


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_registry_lists_the_skeleton_attacks() -> None:
    assert {"fgsm", "pgd"} <= set(NAMES)
    assert all(e.summary for e in ATTACKS)


def test_output_in_range_and_inside_the_ball(name: str, trained) -> None:
    attack = make(name)
    out = attack(trained.model, trained.x, trained.y)
    assert out.x_adv.shape == trained.x.shape
    assert out.x_adv.dtype == trained.x.dtype
    assert float(out.x_adv.min()) >= 0.0
    assert float(out.x_adv.max()) <= 1.0
    if isinstance(attack, FixedBudgetAttack):  # minimum-norm attacks and corruptions: no ball
        norms = ball(attack.norm).norm(out.x_adv - trained.x)
        assert float(norms.max()) <= attack.params.eps + 1e-6


def test_input_not_mutated_and_model_state_restored(name: str, trained) -> None:
    x = trained.x.clone().requires_grad_(True)  # a caller's tensor inside a graph
    model = trained.model
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        out = make(name)(model, x, trained.y)
        assert torch.equal(x, trained.x)
        assert x.grad is None
        assert not out.x_adv.requires_grad  # detached: the caller's graph stays out
        assert model.training
        assert [p.requires_grad for p in model.parameters()].count(False) == 1
        assert all(p.grad is None for p in model.parameters())
        with pytest.raises(InputError):
            make(name)(model, x * 2, trained.y)  # out of [0, 1]: rejected, state restored
        assert model.training
        assert not frozen.requires_grad
    finally:
        frozen.requires_grad_(True)
        model.eval()


def test_deterministic_under_a_seed(name: str, trained) -> None:
    a = make(name, seed=3)(trained.model, trained.x[:64], trained.y[:64])
    b = make(name, seed=3)(trained.model, trained.x[:64], trained.y[:64])
    assert torch.equal(a.x_adv, b.x_adv)


def test_eps_zero_changes_nothing(name: str, trained) -> None:
    if issubclass(ATTACKS.get(name).obj, MinNormAttack):
        pytest.skip(f"{name} has no budget: eps lists the budgets success is counted at")
    if not issubclass(ATTACKS.get(name).obj, FixedBudgetAttack):
        pytest.skip(f"{name} has no budget (a corruption's strength is its severity)")
    out = make(name, eps=0)(trained.model, trained.x, trained.y)
    assert torch.equal(out.x_adv, trained.x)


def test_lowers_accuracy_and_scores_success_honestly(name: str, trained) -> None:
    out = make(name, **STRONGER.get(name, {}))(trained.model, trained.x, trained.y)
    with torch.inference_mode():
        pred = trained.model(out.x_adv).argmax(1)
    expected = pred == out.target if out.target is not None else pred != trained.y
    assert torch.equal(out.success, expected)
    robust = float((pred == trained.y).float().mean())
    if ATTACKS.get(name).obj.baseline:
        assert robust <= trained.clean_accuracy
        return
    assert robust < trained.clean_accuracy - 0.3
    assert out.forward >= len(trained.x)
    entry = ATTACKS.get(name).obj
    assert out.backward >= len(trained.x) or entry.baseline or entry.black_box


def test_targeted_hits_the_target_more_than_chance(name: str, trained) -> None:
    if ATTACKS.get(name).obj.baseline:
        pytest.skip(f"{name} is a baseline: it does not aim at a class")
    if ATTACKS.get(name).params.goals == "untargeted":
        with pytest.raises(ValidationError, match="untargeted"):
            make(name, targeted=True)
        return
    overrides = {"targeted": True, "eps": 0.2, **STRONGER.get(name, {})}
    out = make(name, **overrides)(trained.model, trained.x, trained.y)
    assert out.target is not None
    assert bool((out.target != trained.y).all())
    with torch.inference_mode():
        pred = trained.model(out.x_adv).argmax(1)
    assert torch.equal(out.success, pred == out.target)
    assert float(out.success.float().mean()) > 0.2  # chance is 1/9 of the other classes


def test_bad_inputs_raise(name: str, trained) -> None:
    with pytest.raises(InputError, match=r"y of shape \(N,\)"):
        make(name)(trained.model, trained.x, trained.y[:-1])
    with pytest.raises(InputError, match="int64"):
        make(name)(trained.model, trained.x, trained.y.int())
    with pytest.raises(InputError, match="float"):
        make(name)(trained.model, (trained.x * 255).to(torch.uint8), trained.y)
    nan = trained.x.clone()
    nan[0, 0, 0, 0] = float("nan")  # NaN compares False with both bounds of [0, 1]
    with pytest.raises(InputError, match="NaN"):
        make(name)(trained.model, nan, trained.y)


def test_bad_params_explain_themselves(name: str) -> None:
    if "eps" not in ATTACKS.get(name).params.model_fields:  # a corruption: a severity
        with pytest.raises(ValidationError, match="less than or equal to 5"):
            ATTACKS.params_of(name, {"severity": 6})
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            ATTACKS.params_of(name, {"eps": 0.1})
        return
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ATTACKS.params_of(name, {"eps": -1})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ATTACKS.params_of(name, {"epsilon": 0.1})
    eps = ATTACKS.params_of(name, {"eps": "8/255"}).eps
    budgets = eps if isinstance(eps, list) else [eps]  # minimum-norm attacks list budgets
    assert budgets == [pytest.approx(8 / 255)]

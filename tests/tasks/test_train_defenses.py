"""Training-time defenses: the contract for every one, each loss against its paper's formula,
the attack library's examples where a defense trains on them, and robustness gained."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from tasks import datasets, models, training
from tasks.attacks import ATTACKS
from tasks.errors import UnknownComponentError
from tasks.train_defenses import TRAINING_DEFENSES, SharedAT, TrainingDefense, build

# every registered training defense with small, quick parameters
CASES: dict[str, dict] = {
    "fgsm_at": {"eps": 0.1},
    "kurakin_at": {"eps": 0.1},
    "pgd_at": {"eps": 0.1, "steps": 2},
    "trades": {"eps": 0.1, "steps": 2},
    "fast_at": {"eps": 0.1},
    "shared_at": {"eps": 0.1, "steps": 2, "shard_size": 4},
    "gaussian_augment": {"sigma": 0.2, "fraction": 0.5},
    "gat": {"generator": {"width": 4, "top_dim": 3, "latent_channels": 2}, "steps": 2},
}


def _artifacts(name: str, data: datasets.Data) -> dict[str, torch.nn.Module]:
    """The trained parts a defense's class ``requires``: for ``gat`` an untrained generator
    of its recipe whose posterior heads (zero at first) see the input."""
    if name != "gat":
        return {}
    from tasks.defenses.generator import GeneratorParams, build_generator

    vae = build_generator(GeneratorParams(**CASES["gat"]["generator"]), data)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return {"vae": vae.eval()}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, as a train cell runs with one CPU: on these tiny tensors a second
    thread only adds synchronization (this module: 5 s on one thread, 60 s on two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> datasets.Data:
    return datasets.load("digits", datasets.params_of("digits", {}))


def _net(data: datasets.Data, seed: int = 0, arch: str = "small_cnn", **params) -> torch.nn.Module:
    params = params or {"width": 4, "hidden": 16}
    return models.build(
        arch,
        models.MODELS.params_of(arch, params),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=seed,
    )


@pytest.fixture(scope="module")
def fitted(digits) -> torch.nn.Module:
    """A small_cnn trained plainly for a few epochs (most examples classified confidently)."""
    model = _net(digits)
    training.fit(model, digits.x, digits.y, training.TrainParams(epochs=5, lr=0.01))
    return model


def _batch(data: datasets.Data, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return data.x[:n].clone(), data.y[:n].clone()


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_training_defense_has_a_contract_case() -> None:
    assert set(CASES) == set(TRAINING_DEFENSES.names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_leaves_train_mode_and_parameter_gradients_on(name: str, digits) -> None:
    model = _net(digits, arch="mlp", hidden=[16], dropout=0.5).train()
    modes: list[bool] = []
    model.register_forward_hook(lambda m, i, o: modes.append(m.training))
    x, y = _batch(digits)
    x_before = x.clone()
    step = build(name, CASES[name], **_artifacts(name, digits)).loss(model, x, y, _gen())
    assert step.loss.dim() == 0
    assert math.isfinite(float(step.loss.detach()))
    assert step.logits.shape == (len(x), 10)
    assert model.training
    assert modes[-1]  # the training forward pass ran in train mode
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(x, x_before)
    step.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads if g is not None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_changes_weights_deterministically_and_ends_in_eval_mode(name: str, digits) -> None:
    x, y = digits.x[:96], digits.y[:96]
    recipe = training.TrainParams(
        epochs=1, batch_size=32, seed=3, defense={"name": name, **CASES[name]}
    )
    before = {k: v.clone() for k, v in _net(digits).state_dict().items()}
    a, b = _net(digits), _net(digits)
    parts = _artifacts(name, digits)
    metrics = training.fit(a, x, y, recipe, artifacts=parts)
    training.fit(b, x, y, recipe, artifacts=parts)
    assert not a.training
    assert all(math.isfinite(v) for v in metrics.values())
    assert not _equal(a.state_dict(), before)
    assert _equal(a.state_dict(), b.state_dict())
    c = _net(digits)
    training.fit(c, x, y, recipe.model_copy(update={"seed": 4}), artifacts=parts)
    assert not _equal(a.state_dict(), c.state_dict())


def test_fgsm_at_loss_is_goodfellows_mixed_objective(digits) -> None:
    model, (x, y) = _net(digits).train(), _batch(digits)
    step = build("fgsm_at", {"eps": 0.1, "c": 0.3}).loss(model, x, y, _gen())
    x_in = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x_in), y), x_in)[0]
    x_adv = (x + 0.1 * grad.sign()).clamp(0, 1)
    expected = 0.3 * F.cross_entropy(model(x), y) + 0.7 * F.cross_entropy(model(x_adv), y)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("method", ["step_ll", "fgsm"])
def test_kurakin_at_weights_clean_and_adversarial_examples(method: str, digits) -> None:
    model, (x, y) = _net(digits).train(), _batch(digits, 10)
    params = {"eps": 0.1, "k_fraction": 0.3, "lam": 0.3, "method": method}
    step = build("kurakin_at", params).loss(model, x, y, _gen())
    k, m = 3, 10
    x_in = x[:k].clone().requires_grad_(True)
    logits = model(x_in)
    if method == "step_ll":  # one step down the least likely class's loss
        grad = torch.autograd.grad(F.cross_entropy(logits, logits.argmin(1)), x_in)[0]
        x_adv = (x[:k] - 0.1 * grad.sign()).clamp(0, 1)
    else:
        grad = torch.autograd.grad(F.cross_entropy(logits, y[:k]), x_in)[0]
        x_adv = (x[:k] + 0.1 * grad.sign()).clamp(0, 1)
    adv = F.cross_entropy(model(x_adv), y[:k], reduction="sum")
    clean = F.cross_entropy(model(x[k:]), y[k:], reduction="sum")
    expected = (clean + 0.3 * adv) / ((m - k) + 0.3 * k)
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kurakin_at_without_adversarial_examples_is_plain_cross_entropy(digits) -> None:
    model, (x, y) = _net(digits).train(), _batch(digits)
    step = build("kurakin_at", {"k_fraction": 0}).loss(model, x, y, _gen())
    assert torch.equal(step.loss, F.cross_entropy(model(x), y))


@pytest.mark.parametrize(
    ("name", "pgd"),
    [
        ("pgd_at", {"eps": 0.1, "steps": 3, "step_size": 0.05, "random_start": True}),
        ("pgd_at", {"eps": 1.0, "steps": 2, "norm": "l2"}),
        ("fast_at", {"eps": 0.1, "steps": 1, "step_size": 0.125, "random_start": True}),
    ],
)
def test_examples_are_the_registered_pgd_examples(name: str, pgd: dict, digits) -> None:
    """A PGD in training is the PGD of evaluation: same examples from the same generator."""
    model, (x, y) = _net(digits).train(), _batch(digits)
    values = {k: v for k, v in pgd.items() if k in TRAINING_DEFENSES.get(name).params.model_fields}
    gen_train, gen_attack = _gen(), _gen()
    step = build(name, values).loss(model, x, y, gen_train)
    attack = ATTACKS.get("pgd").obj(ATTACKS.params_of("pgd", pgd))
    x_adv = attack(model, x, y, generator=gen_attack).x_adv
    assert model.training
    assert torch.equal(step.logits, model(x_adv))
    assert torch.equal(gen_train.get_state(), gen_attack.get_state())
    assert step.loss.item() == pytest.approx(F.cross_entropy(model(x_adv), y).item(), rel=1e-6)


def test_pgd_at_fills_in_madrys_step_rule() -> None:
    p = TRAINING_DEFENSES.params_of("pgd_at", {"eps": 0.1})
    assert p.model_dump() == {
        "eps": 0.1,
        "steps": 7,
        "step_size": pytest.approx(2.5 * 0.1 / 7),
        "random_start": True,
        "norm": "linf",
    }
    assert TRAINING_DEFENSES.params_of("fast_at", {"eps": 0.2}).alpha == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["pgd_at", "fast_at", "trades", "shared_at"])
def test_a_zero_budget_is_refused_where_the_step_derives_from_it(name: str) -> None:
    """Their default step is a multiple of eps: at eps 0 it would be a zero step that the
    worker's own validation refuses, after the study was accepted."""
    with pytest.raises(ValidationError, match="greater than 0"):
        TRAINING_DEFENSES.params_of(name, {"eps": 0})


def test_trades_inner_point_raises_the_kl_term_inside_the_ball(digits) -> None:
    model, (x, _) = _net(digits).train(), _batch(digits)
    trades = build("trades", {"eps": 0.1, "steps": 5})
    x_adv = trades.perturb(model, x, _gen())
    assert model.training
    assert torch.equal(x_adv, trades.perturb(model, x, _gen()))
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0
    assert float(x_adv.max()) <= 1

    def kl(point: torch.Tensor) -> float:
        with torch.no_grad():
            p = F.softmax(model.eval()(x), 1)
            return float(F.kl_div(F.log_softmax(model(point), 1), p, reduction="sum"))

    start = (x + 0.001 * torch.randn(x.shape, generator=_gen())).clamp(0, 1)
    assert kl(x_adv) > 10 * kl(start)


def test_trades_loss_is_cross_entropy_plus_beta_kl(digits) -> None:
    model, (x, y) = _net(digits).train(), _batch(digits)
    trades = build("trades", {"eps": 0.1, "steps": 2, "beta": 2.0})
    step = trades.loss(model, x, y, _gen())
    x_adv = trades.perturb(model, x, _gen())
    logits = model(x)
    kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(logits, 1), reduction="batchmean")
    expected = F.cross_entropy(logits, y) + 2.0 * kl
    assert step.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    no_kl = build("trades", {"eps": 0.1, "steps": 2, "beta": 0}).loss(model, x, y, _gen())
    assert no_kl.loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_shared_at_shares_one_perturbation_per_shard(fitted, digits) -> None:
    model, (x, y) = fitted, _batch(digits, 10)
    x = 0.25 + 0.5 * x
    # x away from 0 and 1: no example's clipping changes its perturbation
    shared: SharedAT = build("shared_at", {"eps": 0.1, "shard_size": 4, "fraction": 1.0})
    delta = shared.perturbation(model, x, y)
    assert not model.training  # left in the mode it was found in
    assert delta.shape == (3, *x.shape[1:])  # shards of 4, 4 and 2 examples
    assert float(delta.abs().max()) == pytest.approx(0.1)
    assert not torch.equal(delta[0], delta[1])
    step = shared.loss(model, x, y, _gen())
    shard = torch.arange(10) // 4
    assert torch.equal(step.logits, model((x + delta[shard]).clamp(0, 1)))
    per_example = build("shared_at", {"eps": 0.1, "shard_size": 1}).perturbation(model, x, y)
    assert per_example.shape == x.shape


def test_shared_at_caps_each_examples_loss_in_the_ascent(fitted, digits) -> None:
    model, (x, y) = fitted, _batch(digits)
    capped = build("shared_at", {"eps": 0.1, "kappa": 1e-9}).perturbation(model, x, y)
    assert torch.equal(capped, torch.zeros_like(capped))  # every loss above the cap: no pull
    default = build("shared_at", {"eps": 0.1}).perturbation(model, x, y)
    assert bool(default.abs().sum() > 0)  # a trained model: most examples below the cap


def test_gaussian_augment_adds_seeded_clipped_noise_to_a_fraction(digits) -> None:
    model, (x, y) = _net(digits).train(), _batch(digits)
    step = build("gaussian_augment", {"sigma": 0.3, "fraction": 0.5}).loss(model, x, y, _gen())
    noise = torch.randn(x[:8].shape, generator=_gen())
    expected = torch.cat([(x[:8] + 0.3 * noise).clamp(0, 1), x[8:]])
    assert torch.equal(step.logits, model(expected))
    plain = build("gaussian_augment", {"sigma": 0.3, "fraction": 0}).loss(model, x, y, _gen())
    assert torch.equal(plain.loss, F.cross_entropy(model(x), y))


def test_unknown_names_and_bad_params_are_refused() -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'pgd_at'"):
        build("pgd_att", {})
    with pytest.raises(ValidationError, match="eps"):
        build("pgd_at", {"eps": -1})
    with pytest.raises(ValidationError, match="lam"):
        build("kurakin_at", {"lam": 0})


def test_every_training_defense_cites_its_paper() -> None:
    for entry in TRAINING_DEFENSES:
        assert issubclass(entry.obj, TrainingDefense)
        assert any(str(year) in (entry.obj.__doc__ or "") for year in range(2014, 2022))


def _robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pgd = ATTACKS.get("pgd").obj(ATTACKS.params_of("pgd", {"eps": 0.1, "steps": 10}))
    return float((pgd(model, x, y).pred == y).float().mean())


def test_pgd_training_makes_a_model_robust_to_pgd() -> None:
    """Acceptance: digits, small_cnn, 5 epochs; PGD-10 at eps 0.1 on 256 held-out samples
    (measured: 45 % robust accuracy trained plainly, 78 % with pgd_at)."""
    params = datasets.params_of("digits", {"eval_size": 256})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    x, y = data.x[split.train], data.y[split.train]
    xe, ye = data.x[split.eval], data.y[split.eval]
    results = {}
    for defense in (None, {"name": "pgd_at", "eps": 0.1}):
        net = _net(data, width=8)
        training.fit(net, x, y, training.TrainParams(epochs=5, lr=0.005, defense=defense))
        clean = float((training.predict(net, xe) == ye).float().mean())
        results[defense is not None] = (clean, _robust_accuracy(net, xe, ye))
    (plain_clean, plain_robust), (at_clean, at_robust) = results[False], results[True]
    assert plain_clean >= 0.9
    assert at_clean >= 0.9
    assert at_robust >= plain_robust + 0.2, results

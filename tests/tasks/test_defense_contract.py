"""The contract every registered defense keeps (run over the whole registry), then checks of
each input transform against what its paper or a reference implementation computes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from scipy import ndimage
from torch import nn

from tasks import datasets, models
from tasks.attacks import ATTACKS
from tasks.defenses import DEFENSES, Defended, wrap
from tasks.errors import InputError, NotDifferentiableError

NAMES = [e.name for e in DEFENSES]
# tiny images need a larger canvas than Xie's 331/299 for the draws to differ
SMALL: dict[str, dict[str, object]] = {
    "random_resize_pad": {"max_scale": 1.5},
    "latent_projection": {"restarts": 2, "steps": 3},
}
SHAPES = {"digits": (1, 8, 8), "rgb": (3, 16, 16)}


def build(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> nn.Module:
    """A small random MLP over ``shape`` images, 10 classes, in eval mode."""
    c = shape[0]
    net = models.build(
        "mlp",
        models.MODELS.params_of("mlp", {"hidden": [16]}),
        input_shape=shape,
        num_classes=10,
        mean=[0.5] * c,
        std=[0.25] * c,
        seed=0,
    )
    return net.to(dtype).eval()


# defenses whose forward is a vote over many draws of their transform, not one pass of
# model(transform(x)): their forward has no gradient, their transform may have one
VOTES = {"randomized_smoothing"}


def artifacts(model: nn.Module) -> dict[str, nn.Module]:
    """Stand-ins for the trained artifacts a defense ``requires`` (an untrained autoencoder
    over the model's channels, in its dtype): the contract does not depend on training."""
    c, dtype = model.mean.shape[1], next(model.parameters()).dtype
    dae = models.build(
        "dae",
        models.MODELS.params_of("dae", {"width": 4}),
        input_shape=(c, 8, 8),
        num_classes=10,
        mean=[0.5] * c,
        std=[0.25] * c,
        seed=0,
    )
    vae = models.build(
        "hvae",
        models.MODELS.params_of("hvae", {"width": 4, "top_dim": 3, "latent_channels": 2}),
        input_shape=(c, 8, 8),
        num_classes=0,
        mean=[0.5] * c,
        std=[0.25] * c,
        seed=0,
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # its posterior and prior heads start at zero: make them see x
        for p in vae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return {"autoencoder": dae.to(dtype).eval(), "vae": vae.to(dtype).eval()}


def needs(name: str) -> tuple[str, ...]:
    """The roles of the artifacts the defense needs with the contract's params (an
    ``mlvgm_purify`` needs its searched schedule only with ``alpha: learned``)."""
    params = DEFENSES.params_of(name, SMALL.get(name, {})).model_dump(mode="json")
    requires = getattr(DEFENSES.get(name).obj, "requires", {})
    return tuple(role for role, r in requires.items() if r.needed(params))


def defend(name: str, model: nn.Module, **overrides: object) -> nn.Module:
    params = DEFENSES.params_of(name, {**SMALL.get(name, {}), **overrides})
    if not needs(name):
        return wrap(model, name, params)
    given = {role: artifacts(model)[role] for role in needs(name)}
    return DEFENSES.get(name).obj(params, **given).wrap(model)


def transform(defended: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The defense's input transform; the identity for a model returned undefended."""
    return defended.transform(x) if isinstance(defended, Defended) else x


def inner(defended: nn.Module) -> nn.Module:
    return defended.model if isinstance(defended, Defended) else defended


def images(shape: tuple[int, ...], n: int = 6, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random images in [0, 1] whose first two are all 0 and all 1 (the bounds themselves)."""
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(0), dtype=dtype)
    x[0], x[1] = 0.0, 1.0
    return x


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[int, ...]:
    return SHAPES[request.param]


def test_registry_lists_the_input_transforms() -> None:
    expected = {"none", "jpeg", "bit_depth", "median_filter", "gaussian_blur", "random_resize_pad"}
    expected |= {"randomized_smoothing", "feature_squeezing_detector", "autoencoder_purify"}
    expected |= {"vae_purify", "mlvgm_purify"}
    assert expected <= set(NAMES)
    for entry in DEFENSES:
        assert entry.summary
        assert isinstance(entry.obj.differentiable, bool)
        assert isinstance(entry.obj.randomized, bool)
        if entry.obj.randomized:  # its randomness comes from a seeded generator
            assert "seed" in entry.params.model_fields


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_and_transformed_range(name: str, shape, dtype: torch.dtype) -> None:
    defended = defend(name, build(shape, dtype))
    x = images(shape, dtype=dtype)
    with torch.no_grad():
        assert defended(x).shape == (len(x), 10)
        x_t = transform(defended, x)
    assert x_t.shape == x.shape
    assert x_t.dtype == x.dtype
    assert x_t.device == x.device
    assert float(x_t.min()) >= 0.0
    assert float(x_t.max()) <= 1.0


def test_input_not_mutated_and_no_state_of_its_own(name: str, shape) -> None:
    model = build(shape)
    defended = defend(name, model)
    x = images(shape).requires_grad_(True)  # a caller's tensor inside a graph
    before = x.detach().clone()
    defended(x)
    transform(defended, x)
    assert torch.equal(x.detach(), before)
    assert x.grad is None
    if defended is model:
        return
    # state of its own only in the trained artifacts it requires, under their role's name
    parts = {"model": model} | {role: getattr(defended, role) for role in needs(name)}
    own = {f"{part}.{k}" for part, module in parts.items() for k in module.state_dict()}
    assert set(defended.state_dict()) == own
    assert {id(p) for p in defended.parameters()} == {
        id(p) for module in parts.values() for p in module.parameters()
    }


def test_train_and_eval_reach_the_model(name: str) -> None:
    model = build(SHAPES["digits"])
    defended = defend(name, model)
    defended.train()
    assert all(m.training for m in model.modules())
    defended.eval()
    assert not any(m.training for m in model.modules())
    defended.train()
    assert all(m.training for m in model.modules())


def _gradient_and_difference(name: str, shape) -> tuple[torch.Tensor | None, float, float]:
    """Autograd's input gradient of ``w · model(transform(x))`` along a random direction, and
    the central finite difference along it (float64; a fresh wrapper per evaluation, so a
    randomized defense makes the same draw in each)."""
    gen = torch.Generator().manual_seed(1)
    model = build(shape, torch.float64)
    x = 0.1 + 0.8 * torch.rand((4, *shape), generator=gen, dtype=torch.float64)
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 10, generator=gen, dtype=torch.float64)

    def value(z: torch.Tensor) -> torch.Tensor:
        defended = defend(name, model)
        return (inner(defended)(transform(defended, z)) * w).sum()

    z = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(value(z), z, allow_unused=True)
    h = 1e-6
    with torch.no_grad():
        difference = float((value(x + h * v) - value(x - h * v)) / (2 * h))
    slope = float((grad * v).sum()) if grad is not None else math.nan
    return grad, slope, difference


def test_differentiable_is_declared_honestly(name: str, shape) -> None:
    grad, slope, difference = _gradient_and_difference(name, shape)
    observed = (
        grad is not None
        and bool(grad.abs().sum() > 0)
        and math.isclose(slope, difference, rel_tol=1e-6, abs_tol=1e-9)
    )
    # a vote's transform is differentiable given its draw (what EOT uses); its forward
    # refuses a gradient (test_a_non_differentiable_defense_refuses_a_gradient)
    declared = DEFENSES.get(name).obj.differentiable or name in VOTES
    assert observed == declared, (
        f"{name} declares differentiable={declared}; autograd gave "
        f"{'no gradient' if grad is None else f'slope {slope:.6g}'}, finite differences "
        f"{difference:.6g}"
    )


def test_a_non_differentiable_defense_refuses_a_gradient(name: str) -> None:
    defended = defend(name, build(SHAPES["digits"]))
    x = images(SHAPES["digits"]).requires_grad_(True)
    if DEFENSES.get(name).obj.differentiable:
        (grad,) = torch.autograd.grad(defended(x).sum(), x)
        assert bool(grad.abs().sum() > 0)
        return
    with pytest.raises(NotDifferentiableError, match=rf"defense '{name}'.*BPDA"):
        torch.autograd.grad(defended(x).sum(), x)
    # BPDA: the transform forward, the identity backward
    bpda = x + (defended.transform(x) - x).detach()
    (grad,) = torch.autograd.grad(defended.model(bpda).sum(), x)
    assert bool(grad.abs().sum() > 0)


def test_forward_is_the_model_after_the_transform(name: str, shape) -> None:
    model, x = build(shape), images(shape)
    if not DEFENSES.get(name).obj.differentiable:
        assert isinstance(defend(name, model), Defended)  # BPDA needs its transform
    a, b = defend(name, model), defend(name, model)  # same seed: a randomized one draws alike
    if name in VOTES:  # the most frequent class of the model over n draws of the transform
        n = a.defense.params.n  # n · len(x) draws fit one batch, so b draws them in a's order
        with torch.no_grad():
            logits = inner(b)(transform(b, x.repeat(n, 1, 1, 1)))
        votes = F.one_hot(logits.argmax(1), 10).view(n, len(x), 10).sum(0)
        assert torch.equal(a(x).argmax(1), votes.argmax(1))
        return
    # logits averaged over `draws` calls of the transform (mlvgm_purify), or one call
    draws = getattr(getattr(getattr(a, "defense", None), "params", None), "draws", 1)
    with torch.no_grad():
        expected = torch.stack([inner(b)(transform(b, x)) for _ in range(draws)]).mean(0)
        assert torch.equal(a(x), expected)


def test_deterministic_under_a_seed(name: str, shape) -> None:
    model, x = build(shape), images(shape)

    def stream(defended: nn.Module, calls: int = 4) -> list[torch.Tensor]:
        with torch.no_grad():
            return [transform(defended, x) for _ in range(calls)]

    if not DEFENSES.get(name).obj.randomized:
        once, again = stream(defend(name, model)), stream(defend(name, model))
        assert all(torch.equal(once[0], b) for b in once + again)
        return
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            stream(defend(name, model, seed=3)), stream(defend(name, model, seed=3)), strict=True
        )
    )
    seeds = [stream(defend(name, model, seed=s)) for s in (3, 4)]
    assert not all(torch.equal(a, b) for a, b in zip(*seeds, strict=True))


def test_bad_params_and_inputs_explain_themselves(name: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DEFENSES.params_of(name, {"strength": 1})
    defended = defend(name, build(SHAPES["digits"]))
    if isinstance(defended, Defended):
        with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
            defended.transform(torch.rand(2, 64))


# --- each transform against its definition -------------------------------------------------


def test_bit_depth_keeps_2_to_the_b_levels() -> None:
    x = torch.tensor([0.0, 0.1, 0.49, 0.51, 0.9, 1.0]).view(1, 1, 2, 3)
    one = defend("bit_depth", build((1, 2, 3)), bits=1).transform(x)
    assert one.flatten().tolist() == [0, 0, 0, 1, 1, 1]
    x = images(SHAPES["digits"], n=32)
    for bits in (1, 3, 4, 8):
        levels = 2**bits - 1
        out = defend("bit_depth", build(SHAPES["digits"]), bits=bits).transform(x)
        assert len(out.unique()) <= levels + 1
        assert torch.allclose(out * levels, (out * levels).round(), atol=1e-5)
        assert float((out - x).abs().max()) <= 0.5 / levels + 1e-6
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        DEFENSES.params_of("bit_depth", {"bits": 0})


def test_median_of_a_known_patch_and_scipy() -> None:
    patch = torch.tensor([[9.0, 1, 2], [8, 5, 3], [7, 6, 4]]).div(10).view(1, 1, 3, 3)
    out = defend("median_filter", build((1, 3, 3)), size=3).transform(patch)
    assert float(out[0, 0, 1, 1]) == pytest.approx(0.5)  # the median of 1..9
    # top-left, reflected borders: 9 9 1 / 9 9 1 / 8 8 5 → sorted 1 1 5 8 8 9 9 9 9
    assert float(out[0, 0, 0, 0]) == pytest.approx(0.8)
    x = images((3, 7, 9), n=3, dtype=torch.float64)
    for size in (2, 3, 4):  # Xu et al. used scipy.ndimage.median_filter(mode="reflect")
        out = defend("median_filter", build((3, 7, 9)), size=size).transform(x)
        expected = ndimage.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
        np.testing.assert_array_equal(out.numpy(), expected)


def test_jpeg_quality_100_is_nearly_the_identity() -> None:
    params = datasets.params_of("digits", {})
    x = datasets.load("digits", params).x[:64]
    model = build(SHAPES["digits"])
    err = {q: defend("jpeg", model, quality=q).transform(x).sub(x).abs() for q in (100, 75, 10)}
    assert float(err[100].max()) <= 2 / 255 + 1e-6  # rounding to 8 bits, then the codec
    assert float(err[100].mean()) < float(err[75].mean()) < float(err[10].mean())
    out = defend("jpeg", model).transform(x)
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)  # 8-bit values
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(2, 3, 16, 16)  # smooth colour
    rgb = defend("jpeg", build(SHAPES["rgb"]), quality=100).transform(ramp.contiguous())
    assert float((rgb - ramp).abs().max()) <= 4 / 255
    with pytest.raises(InputError, match="1- or 3-channel"):
        defend("jpeg", build((2, 8, 8))).transform(torch.rand(1, 2, 8, 8))


def test_gaussian_blur_keeps_constants_and_matches_scipy() -> None:
    model = build(SHAPES["rgb"])
    flat = torch.full((2, 3, 16, 16), 0.3)
    for sigma in (0.5, 1.0, 2.0):
        out = defend("gaussian_blur", model, sigma=sigma).transform(flat)
        assert torch.allclose(out, flat, atol=1e-6)
    x = images(SHAPES["rgb"], n=2, dtype=torch.float64)
    out = defend("gaussian_blur", model, sigma=1.3).transform(x)
    expected = ndimage.gaussian_filter(
        x.numpy(), sigma=(0, 0, 1.3, 1.3), mode="reflect", truncate=3
    )
    np.testing.assert_allclose(out.numpy(), np.clip(expected, 0, 1), atol=1e-12)
    with pytest.raises(ValidationError, match="must be odd"):
        DEFENSES.params_of("gaussian_blur", {"kernel_size": 4})
    with pytest.raises(InputError, match="smaller window"):
        defend("gaussian_blur", build((1, 4, 4)), sigma=3).transform(torch.rand(1, 1, 4, 4))


def test_random_resize_pad_at_scale_one_is_the_identity_and_pads_otherwise() -> None:
    x = images(SHAPES["rgb"])
    same = defend("random_resize_pad", build(SHAPES["rgb"]), max_scale=1).transform(x)
    assert torch.equal(same, x)
    dark = torch.zeros(1, 1, 16, 16)
    padded = defend("random_resize_pad", build((1, 16, 16)), max_scale=2, fill=1.0)
    outs = [padded.transform(dark) for _ in range(8)]
    # a 16-pixel image resized to 16..32 pixels on a 32-pixel canvas: at most 3/4 is fill
    assert any(float(o.max()) > 0.5 for o in outs)
    assert all(float(o.mean()) <= 0.75 + 1e-6 for o in outs)
    assert float(torch.stack(outs).std(0).max()) > 0  # the draws differ call by call


def test_gradient_attacks_fail_clearly_and_gradient_free_ones_run() -> None:
    x = images(SHAPES["digits"], n=8)
    y = torch.arange(8) % 10
    defended = defend("jpeg", build(SHAPES["digits"]))
    fgsm = ATTACKS.get("fgsm")
    with pytest.raises(NotDifferentiableError, match="jpeg"):
        fgsm.obj(fgsm.params.model_validate({"eps": 0.1}))(defended, x, y)
    square = ATTACKS.get("square")
    out = square.obj(square.params.model_validate({"eps": 0.1, "max_queries": 20}))(defended, x, y)
    assert out.x_adv.shape == x.shape


def test_gaussian_noise_has_the_l2_norm_it_is_given() -> None:
    defended = defend("gaussian_noise", build(SHAPES["rgb"]), l2=0.5)
    x = torch.full((5, *SHAPES["rgb"]), 0.5)
    with torch.no_grad():
        noise = transform(defended, x) - x
        norms = noise.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.full((5,), 0.5), atol=1e-5)
        assert not torch.equal(noise[0], noise[1])  # one draw per image
        defended.defense.per_batch_draws = True
        shared = transform(defended, x) - x
        assert torch.equal(shared[0], shared[4])

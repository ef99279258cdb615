"""The defenses on a CUDA device: every inference defense, the adaptive surrogates over them and
every training defense run there, keep their tensors there, and agree with the CPU.

``ADVGRID_TEST_DEVICE=cpu`` runs the same bodies on the CPU (the CPU-vs-device comparisons
then compare the CPU with itself): a check of the tests' own logic on a machine without CUDA.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tasks import datasets, models, training
from tasks.defenses import DEFENSES, adaptive
from tasks.train_defenses import build as build_training_defense
from tests.tasks.test_defense_contract import (
    NAMES,
    SHAPES,
    SMALL,
    VOTES,
    artifacts,
    build,
    images,
    needs,
    transform,
)
from tests.tasks.test_train_defenses import CASES

# cuDNN and cuBLAS pick non-deterministic kernels by default; deterministic ones make "same
# seed, same result" hold on the GPU too (set before CUDA starts)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

DEVICE = torch.device(os.environ.get("ADVGRID_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
    ),
]

RANDOMIZED = [n for n in NAMES if DEFENSES.get(n).obj.randomized]
# the CPU-vs-device comparison: enough inputs that "most agree" means something
N_COMPARE = 64


@pytest.fixture(scope="module", autouse=True)
def deterministic() -> Iterator[None]:
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


@functools.cache
def _torchvision_error() -> str | None:
    """Why torchvision (jpeg's codec) does not import here, if it does not: a machine may lack
    it, or have a build for another CUDA major version than its torch's."""
    try:
        import torchvision.io  # noqa: F401
    except Exception as exc:  # any failure to import is the reason to skip
        return f"{type(exc).__name__}: {exc}"
    return None


def on(
    dev: torch.device,
    name: str,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    **overrides: object,
) -> nn.Module:
    """``name`` over the contract's small random model, built as an attack cell builds it
    (tasks.cells.worker.defended): the model and each artifact it ``requires`` moved to ``dev``
    first, then wrapped. Same weights on every device (seeded builds)."""
    if name == "jpeg" and _torchvision_error():
        pytest.skip(
            f"jpeg codes images with torchvision, which does not import: {_torchvision_error()}"
        )
    model = build(shape, dtype)
    given = {role: artifacts(model)[role].to(dev) for role in needs(name)}
    params = DEFENSES.params_of(name, {**SMALL.get(name, {}), **overrides})
    return DEFENSES.get(name).obj(params, **given).wrap(model.to(dev))


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=list(SHAPES))
def shape(request: pytest.FixtureRequest) -> tuple[int, ...]:
    return SHAPES[request.param]


# --- inference defenses ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_transform_stay_on_the_device(name: str, shape, dtype: torch.dtype) -> None:
    defended = on(DEVICE, name, shape, dtype)
    tensors = [*defended.parameters(), *defended.buffers()]
    assert tensors
    assert all(t.device.type == DEVICE.type for t in tensors)  # the artifacts too
    x = images(shape, dtype=dtype).to(DEVICE)
    with torch.no_grad():
        out = defended(x)
        x_t = transform(defended, x)
    assert out.device.type == DEVICE.type
    assert out.shape == (len(x), 10)
    assert bool(torch.isfinite(out).all())
    assert (x_t.device.type, x_t.dtype, x_t.shape) == (DEVICE.type, dtype, x.shape)
    assert float(x_t.min()) >= 0.0
    assert float(x_t.max()) <= 1.0


@pytest.mark.parametrize("name", RANDOMIZED)
def test_randomized_defenses_repeat_under_a_seed_on_the_device(name: str, shape) -> None:
    x = images(shape).to(DEVICE)

    def run(seed: int) -> list[torch.Tensor]:
        defended = on(DEVICE, name, shape, seed=seed)  # a fresh wrapper: a fresh stream
        with torch.no_grad():
            return [transform(defended, x) for _ in range(3)] + [defended(x)]

    once, again, other = run(3), run(3), run(4)
    assert all(torch.equal(a, b) for a, b in zip(once, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(once[:3], other[:3], strict=True))


def test_cpu_and_device_agree(name: str, shape) -> None:
    """Same weights, same inputs, same draws (randomized defenses draw from a CPU generator
    on every device). The logits differ only by rounding: cuDNN convolutions (the
    autoencoder, a blur) run in TF32 by default and reductions sum in another order, about
    1e-3 here. An argmax may then flip where the CPU's top two logits are that close, which
    an untrained random model does produce, so a flip is allowed only at such a near tie; a
    vote (randomized smoothing) may also move a draw lying on a decision boundary."""
    x = images(shape, n=N_COMPARE)
    cpu_defended = on(torch.device("cpu"), name, shape)
    dev_defended = on(DEVICE, name, shape)
    with torch.no_grad():
        expected = cpu_defended(x)
        got = dev_defended(x.to(DEVICE)).cpu()
    flips = got.argmax(1) != expected.argmax(1)
    if name in VOTES:
        assert int(flips.sum()) <= 3, f"{int(flips.sum())} of {len(x)} votes moved"
        return
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    top2 = expected.topk(2, 1).values
    margin = top2[:, 0] - top2[:, 1]
    assert int(flips.sum()) <= 3
    assert bool((margin[flips] < 1e-2).all()), f"flips at margins {margin[flips].tolist()}"


def test_detector_scores_on_the_device() -> None:
    shape = SHAPES["rgb"]
    x = images(shape, n=16)
    scores = {}
    for dev in (torch.device("cpu"), DEVICE):
        detected = on(dev, "feature_squeezing_detector", shape)
        threshold = detected.fit(x.to(dev))
        flags = detected.flag(x.to(dev))
        assert (flags.device.type, flags.dtype, flags.shape) == (dev.type, torch.bool, (16,))
        assert math.isfinite(threshold)
        scores[dev.type] = detected.score(x.to(dev)).cpu()
    torch.testing.assert_close(scores[DEVICE.type], scores["cpu"], rtol=1e-2, atol=1e-3)


# --- adaptive surrogates ---------------------------------------------------------------------


def methods(name: str) -> list[str]:
    """The adaptations that apply to ``name``: none (the naive gradient) always, BPDA where
    there is a transform, EOT where there are draws (alone only where differentiable)."""
    obj = DEFENSES.get(name).obj
    out = ["none"] + (["bpda"] if name != "none" else [])
    if obj.randomized:
        out += ["bpda+eot"] + (["eot"] if obj.differentiable else [])
    return out


CELLS = [(n, m) for n in NAMES for m in methods(n)]


def _input_gradient(dev: torch.device, name: str, method: str) -> torch.Tensor:
    shape = SHAPES["digits"]
    defended = on(dev, name, shape)
    attacked, _ = adaptive.surrogate(defended, {"adaptive": method, "eot_samples": 2})
    x = images(shape, n=8).to(dev).requires_grad_(True)
    y = (torch.arange(8) % 10).to(dev)
    (grad,) = torch.autograd.grad(F.cross_entropy(attacked(x).float(), y), x)
    return grad


@pytest.mark.parametrize(("name", "method"), CELLS)
def test_surrogate_gradients_on_the_device(name: str, method: str) -> None:
    grad = _input_gradient(DEVICE, name, method)
    assert (grad.device.type, grad.shape) == (DEVICE.type, (8, *SHAPES["digits"]))
    assert bool(torch.isfinite(grad).all())
    masked = method == "none" and not DEFENSES.get(name).obj.differentiable
    assert bool(grad.abs().sum() == 0) == masked  # zero exactly where autograd is blind
    # same draws on both devices; the rounding of test_cpu_and_device_agree aside
    expected = _input_gradient(torch.device("cpu"), name, method)
    got = grad.cpu()
    if name == "median_filter":
        # a window with tied values (digits have many zeros) sends its gradient to one of
        # the tied pixels, and CUDA's median picks another than the CPU's: compare what
        # the choice cannot move, each sample's total
        got, expected = got.sum((1, 2, 3)), expected.sum((1, 2, 3))
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2 * scale)


def test_evaluate_on_the_device(name: str) -> None:
    shape = SHAPES["digits"]
    x = images(shape, n=20).to(DEVICE)
    x_adv = (
        x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    ).clamp(0, 1)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return adaptive.evaluate(on(DEVICE, name, shape), x_adv, x, 8, seed=5)

    pred_adv, pred_clean = run()
    for pred in (pred_adv, pred_clean):
        assert (pred.device.type, pred.shape) == (DEVICE.type, (20,))
    again = run()
    assert torch.equal(pred_adv, again[0])
    assert torch.equal(pred_clean, again[1])
    if not DEFENSES.get(name).obj.randomized:
        with torch.no_grad():
            assert torch.equal(pred_clean, on(DEVICE, name, shape)(x).argmax(1))


# --- training defenses -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> datasets.Data:
    return datasets.load("digits", datasets.params_of("digits", {}))


def _net(data: datasets.Data) -> nn.Module:
    """A small_cnn on the device: cuDNN convolutions forward and backward."""
    net = models.build(
        "small_cnn",
        models.MODELS.params_of("small_cnn", {"width": 4, "hidden": 16}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    return net.to(DEVICE)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_step_on_the_device(name: str, digits) -> None:
    model = _net(digits).train()
    x, y = digits.x[:16].to(DEVICE), digits.y[:16].to(DEVICE)
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    step = build_training_defense(name, CASES[name]).loss(model, x, y, gen)
    assert step.loss.device.type == DEVICE.type
    assert step.loss.dim() == 0
    assert math.isfinite(float(step.loss.detach()))
    assert (step.logits.device.type, step.logits.shape) == (DEVICE.type, (16, 10))
    assert model.training
    step.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.device.type == DEVICE.type for g in grads)
    assert all(bool(torch.isfinite(g).all()) for g in grads if g is not None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_with_a_training_defense_repeats_on_the_device(name: str, digits) -> None:
    x, y = digits.x[:64].to(DEVICE), digits.y[:64].to(DEVICE)
    recipe = training.TrainParams(
        epochs=1, batch_size=32, seed=3, defense={"name": name, **CASES[name]}
    )
    a, b = _net(digits), _net(digits)
    metrics = training.fit(a, x, y, recipe)
    training.fit(b, x, y, recipe)
    assert all(math.isfinite(v) for v in metrics.values())
    assert not a.training
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # deterministic kernels, seeded draws

"""``corruption``: the common corruptions of the test set at five severities, each exactly
its formula (or the very transform the defense of the same name applies)."""

from __future__ import annotations

import pytest
import torch

from tasks.attacks import ATTACKS
from tasks.attacks.corruption import SEVERITIES
from tasks.defenses.transforms import JPEG, GaussianBlur

pytestmark = pytest.mark.usefixtures("one_thread")


def corrupt(x: torch.Tensor, kind: str, severity: int, seed: int = 0) -> torch.Tensor:
    params = ATTACKS.params_of("corruption", {"kind": kind, "severity": severity, "seed": seed})
    attack = ATTACKS.get("corruption").obj(params)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 3))
    return attack(model, x, torch.zeros(len(x), dtype=torch.long)).x_adv


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_each_kind_is_its_formula(x: torch.Tensor) -> None:
    assert torch.equal(corrupt(x, "brightness", 2), (x + 0.2).clamp(0, 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(corrupt(x, "contrast", 4), ((x - mean) * 0.1 + mean).clamp(0, 1))
    blur = GaussianBlur(GaussianBlur.Params(sigma=1.0)).transform(x, None)
    assert torch.equal(corrupt(x, "gaussian_blur", 3), blur)
    jpeg = JPEG(JPEG.Params(quality=35)).transform(x, None)
    assert torch.equal(corrupt(x, "jpeg", 4), jpeg)
    grey = torch.full((64, 1, 32, 32), 0.5)
    noise = corrupt(grey, "gaussian_noise", 1) - grey  # σ 0.08: clipping almost never bites
    assert float(noise.std()) == pytest.approx(0.08, rel=0.03)


def test_noise_replays_under_its_seed(x: torch.Tensor) -> None:
    assert torch.equal(corrupt(x, "gaussian_noise", 3, 1), corrupt(x, "gaussian_noise", 3, 1))
    assert not torch.equal(corrupt(x, "gaussian_noise", 3, 1), corrupt(x, "gaussian_noise", 3, 2))


@pytest.mark.parametrize("kind", sorted(SEVERITIES))
def test_a_higher_severity_corrupts_more(kind: str, x: torch.Tensor) -> None:
    norms = [float((corrupt(x, kind, s) - x).flatten(1).norm(dim=1).mean()) for s in range(1, 6)]
    assert norms == sorted(norms)
    assert norms[0] > 0


def test_a_corruption_cannot_be_targeted() -> None:
    with pytest.raises(ValueError, match="cannot be targeted"):
        ATTACKS.params_of("corruption", {"targeted": True})

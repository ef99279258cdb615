"""The universal perturbation: one v for every input, fit on some samples, held out on others."""

from __future__ import annotations

import pytest
import torch

from tasks.attacks import ATTACKS


def _uap(**params: object):
    return ATTACKS.get("uap").obj(ATTACKS.params_of("uap", params))


def _acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fit_on_some_samples_fools_held_out_ones(norm: str, trained) -> None:
    fit_x, x, y = trained.x[:128], trained.x[128:], trained.y[128:]
    attack = _uap(norm=norm, eps=0.3 if norm == "linf" else 2.0)
    info = attack.fit(trained.model, fit_x)
    assert info["fooling_rate"] > 0.5
    v = attack.perturbation
    assert v is not None
    assert v.shape == (1, *x.shape[1:])
    size = float(v.abs().max()) if norm == "linf" else float(v.flatten().norm())
    assert size <= attack.params.eps + 1e-6
    out = attack(trained.model, x, y)
    assert torch.allclose(out.x_adv, (x + v).clamp(0, 1), atol=1e-6)  # the same v for all
    assert _acc(trained.model, out.x_adv, y) < _acc(trained.model, x, y) - 0.3


def test_deepfool_method_runs_the_papers_loop(trained) -> None:
    attack = _uap(norm="l2", eps=2.0, method="deepfool", max_passes=2, steps=5)
    info = attack.fit(trained.model, trained.x[:64])
    assert info["backward"] > info["forward"]  # DeepFool: one backward pass per class
    assert info["fooling_rate"] > 0.2
    assert float(attack.perturbation.flatten().norm()) <= 2.0 + 1e-6


def test_fit_stops_at_the_target_fooling_rate(trained) -> None:
    attack = _uap(eps=0.3, target_fooling_rate=0.5, max_passes=10)
    info = attack.fit(trained.model, trained.x[:128])
    assert info["fooling_rate"] >= 0.5
    assert info["passes"] < 10


def test_targeted_is_rejected() -> None:
    with pytest.raises(ValueError, match="untargeted"):
        ATTACKS.params_of("uap", {"targeted": True})

"""The attacks on a CUDA device: same contract, same agreement with torchattacks."""

from __future__ import annotations

import copy

import pytest
import torch
import torchattacks

from tasks.attacks import ATTACKS
from tasks.attacks.norms import ball

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def on_cuda(trained):
    dev = torch.device("cuda")
    return copy.deepcopy(trained.model).to(dev).eval(), trained.x.to(dev), trained.y.to(dev)


@pytest.mark.parametrize("name", [e.name for e in ATTACKS])
def test_contract_on_cuda(name: str, on_cuda) -> None:
    model, x, y = on_cuda
    attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, {"eps": 0.1}))
    a = attack(model, x, y)
    b = attack(model, x, y)
    assert a.x_adv.device == x.device
    assert torch.equal(a.x_adv, b.x_adv)  # seeded generator on the device
    assert float(a.x_adv.min()) >= 0
    assert float(a.x_adv.max()) <= 1
    assert float(ball("linf").norm(a.x_adv - x).max()) <= 0.1 + 1e-6
    assert float(a.success.float().mean()) > 0.3


def test_fgsm_and_pgd_match_torchattacks_on_cuda(on_cuda) -> None:
    model, x, y = on_cuda
    ours = ATTACKS.get("fgsm").obj(ATTACKS.params_of("fgsm", {"eps": 0.1}))(model, x, y)
    assert torch.equal(ours.x_adv, torchattacks.FGSM(model, eps=0.1)(x, y))
    params = {"eps": 0.1, "steps": 10, "step_size": 0.025, "random_start": False}
    ours = ATTACKS.get("pgd").obj(ATTACKS.params_of("pgd", params))(model, x, y)
    ref = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=False)(x, y)
    assert torch.equal(ours.x_adv, ref)

"""The attacks on a CUDA device: same contract, same agreement with torchattacks."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torchattacks

from tasks.attacks import ATTACKS, MinNormAttack
from tasks.attacks.norms import ball
from tests.tasks.attacks.test_attack_contract import STRONGER

# cuDNN and cuBLAS pick non-deterministic kernels by default; attacks that use raw gradient
# values (DeepFool, C&W) then differ in the last bits between two runs. Deterministic
# kernels make "same seed, same result" hold on the GPU too (set before CUDA starts).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def on_cuda(trained):
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev = torch.device("cuda")
    try:
        yield copy.deepcopy(trained.model).to(dev).eval(), trained.x.to(dev), trained.y.to(dev)
    finally:
        torch.use_deterministic_algorithms(False)


# attacks on a generator need a purified model (tests/tasks/test_generative.py)
@pytest.mark.parametrize(
    "name", [e.name for e in ATTACKS if not getattr(e.obj, "needs_generator", False)]
)
def test_contract_on_cuda(name: str, on_cuda) -> None:
    model, x, y = on_cuda
    entry = ATTACKS.get(name)
    small = {
        "eps": 0.1,
        "max_queries": 300,
        "steps": 30,
        "step_size": 0.03,
        "n_target_classes": 2,
        **STRONGER.get(name, {}),
    }
    attack = entry.obj(
        entry.params.model_validate(
            {k: v for k, v in small.items() if k in entry.params.model_fields}
        )
    )
    a = attack(model, x, y)
    b = attack(model, x, y)
    assert a.x_adv.device == x.device
    assert torch.equal(a.x_adv, b.x_adv)  # seeded generator on the device
    assert float(a.x_adv.min()) >= 0
    assert float(a.x_adv.max()) <= 1
    if not issubclass(entry.obj, MinNormAttack):
        assert float(ball(attack.norm).norm(a.x_adv - x).max()) <= attack.params.eps + 1e-6
    if not entry.obj.baseline:
        assert float(a.success.float().mean()) > 0.3


def test_fgsm_and_pgd_match_torchattacks_on_cuda(on_cuda) -> None:
    model, x, y = on_cuda
    ours = ATTACKS.get("fgsm").obj(ATTACKS.params_of("fgsm", {"eps": 0.1}))(model, x, y)
    assert torch.equal(ours.x_adv, torchattacks.FGSM(model, eps=0.1)(x, y))
    params = {"eps": 0.1, "steps": 10, "step_size": 0.025, "random_start": False}
    ours = ATTACKS.get("pgd").obj(ATTACKS.params_of("pgd", params))(model, x, y)
    ref = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=False)(x, y)
    assert torch.equal(ours.x_adv, ref)

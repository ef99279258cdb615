"""PGD restarts: each sample keeps its first successful restart, else its highest loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.attacks import ATTACKS


def _pgd(trained, **params: object):
    attack = ATTACKS.get("pgd").obj(ATTACKS.params_of("pgd", params))
    return attack(trained.model, trained.x, trained.y)


def _loss(trained, x_adv: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return F.cross_entropy(trained.model(x_adv), trained.y, reduction="none")


def test_restarts_only_add_successes_and_never_lose_loss(trained) -> None:
    # a budget where one restart leaves many samples standing, so later restarts matter
    params = {"eps": 0.1, "steps": 3, "seed": 1}
    one = _pgd(trained, **params)
    four = _pgd(trained, **params, restarts=4)
    # the first restart of four draws the same start as the single run (same generator)
    assert not bool((one.success & ~four.success).any())
    assert int(four.success.sum()) > int(one.success.sum())
    failed = ~four.success
    assert bool(failed.any())
    gain = _loss(trained, four.x_adv)[failed] - _loss(trained, one.x_adv)[failed]
    assert float(gain.min()) >= -1e-6  # the highest-loss restart, not the last one
    assert float(gain.max()) > 0
    assert four.backward == 4 * one.backward

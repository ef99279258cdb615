"""The AutoAttack ensemble is at least as strong as each of its members."""

from __future__ import annotations

import pytest
import torch

from tasks.attacks import ATTACKS, MinNormAttack

PARAMS = {"eps": 0.08, "steps": 20, "n_target_classes": 3, "max_queries": 300}


def _robust(model, x_adv, y) -> torch.Tensor:
    with torch.inference_mode():
        return model(x_adv).argmax(1) == y


def _pred(trained) -> torch.Tensor:
    with torch.inference_mode():
        return trained.model(trained.x).argmax(1)


def test_standard_version_has_fab_t() -> None:
    params = ATTACKS.params_of("autoattack", {})
    assert params.attacks == ["apgd_ce", "apgd_t", "fab_t", "square"]


def test_ensemble_is_the_worst_case_of_its_members(trained) -> None:
    aa = ATTACKS.get("autoattack").obj(ATTACKS.params_of("autoattack", PARAMS))
    out = aa(trained.model, trained.x, trained.y)
    robust = _robust(trained.model, out.x_adv, trained.y)
    n = len(trained.y)
    # the breakdown falls member by member and ends at the ensemble's robust accuracy
    after = [out.counts[f"robust_accuracy_after_{m}"] for m in aa.params.attacks]
    assert after == sorted(after, reverse=True)
    assert after[-1] == int(robust.sum())
    first = aa.member("apgd_ce")(trained.model, trained.x, trained.y)
    # the first member runs exactly as alone: every sample it fools, the ensemble fools
    assert not bool((robust & first.success).any())
    for name in aa.params.attacks:
        member = aa.member(name)
        alone = member(trained.model, trained.x, trained.y)
        alone_robust = _robust(trained.model, alone.x_adv, trained.y)
        if isinstance(member, MinNormAttack):  # FAB-T: a success beyond eps does not count
            size = (alone.x_adv - trained.x).flatten(1).abs().amax(1)
            alone_robust = alone_robust | ((size > PARAMS["eps"]) & (trained.y == _pred(trained)))
        alone_acc = float(alone_robust.float().mean())
        # later members see other random starts on fewer samples; one sample of slack
        assert float(robust.float().mean()) <= alone_acc + 1 / n, name
    assert float(robust.float().mean()) < trained.clean_accuracy - 0.3


def test_l2_and_bad_members() -> None:
    ok = ATTACKS.params_of("autoattack", {"norm": "l2", "eps": 1.0, "attacks": ["apgd_ce"]})
    assert ok.attacks == ["apgd_ce"]
    assert "square" in ATTACKS.params_of("autoattack", {"norm": "l2"}).attacks  # L2 Square
    with pytest.raises(ValueError, match="members must be among"):
        ATTACKS.params_of("autoattack", {"attacks": ["fab"]})

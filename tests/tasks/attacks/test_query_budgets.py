"""Score-based attacks stay within their query budgets, and count every query."""

from __future__ import annotations

import pytest
import torch

from tasks.attacks import ATTACKS


def _run(trained, name: str, **params: object):
    attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, params))
    return attack(trained.model, trained.x, trained.y)


@pytest.mark.parametrize(("cap", "samples"), [(200, 16), (50, 8)])
def test_spsa_respects_max_queries(cap: int, samples: int, trained) -> None:
    out = _run(trained, "spsa", eps=0.1, steps=100, samples=samples, max_queries=cap)
    n = len(trained.y)
    assert out.backward == 0
    assert out.forward <= n * (cap + 1)  # + the final scoring pass
    full_step = 2 * samples + 1
    assert out.forward >= n * full_step  # at least one step ran for every sample


def test_spsa_probe_chunks_give_the_same_estimate(trained, monkeypatch) -> None:
    """Scoring one probe pair per forward pass draws the same probes as one big pass."""
    from tasks.attacks import spsa

    whole = _run(trained, "spsa", eps=0.1, steps=5, samples=8)
    monkeypatch.setattr(spsa, "_PROBE_BATCH", 2 * len(trained.y))
    pairs = _run(trained, "spsa", eps=0.1, steps=5, samples=8)
    assert whole.forward == pairs.forward
    assert torch.allclose(whole.x_adv, pairs.x_adv, atol=1e-5)


def test_square_and_one_pixel_count_queries(trained) -> None:
    n = len(trained.y)
    sq = _run(trained, "square", eps=0.1, max_queries=100)
    assert n < sq.forward <= n * 101
    op = _run(trained, "one_pixel", pixels=1, steps=3, popsize=10)
    assert n * 10 <= op.forward <= n * 10 * 4 + n  # popsize · (steps + 1) + scoring


def test_spsa_refuses_a_cap_that_allows_no_step() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"2·samples \+ 1 = 129 queries"):
        ATTACKS.params_of("spsa", {"samples": 64, "max_queries": 100})


def test_one_pixel_refuses_inputs_that_are_not_images(trained) -> None:
    from tasks.errors import InputError

    flat = trained.x.flatten(1)
    with pytest.raises(InputError, match=r"needs images \(N, C, H, W\)"):
        ATTACKS.get("one_pixel").obj(ATTACKS.params_of("one_pixel", {}))(
            trained.model, flat, trained.y
        )

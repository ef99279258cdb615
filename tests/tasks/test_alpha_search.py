"""``mlvgm_purify``'s ``alpha: learned``: the paper's starting points, the one-step
adversaries on the α = 0 pipeline, the search's choice and what it records, and the
purifier reading the searched schedule."""

from __future__ import annotations

import pytest
import torch

from tasks.defenses import DEFENSES
from tasks.defenses.alpha_search import (
    AlphaSearchRecipe,
    build_schedule,
    candidates,
    one_step_l2,
    score,
    starts,
)
from tasks.defenses.mlvgm import MLVGMParams, purify, schedule
from tasks.defenses.purify import MissingArtifactError
from tasks.models.generative import schedule_of
from tests.tasks.test_generative import RECIPE, Trained, trained  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

SEARCH = {"candidates": 8, "samples": 96, "eps": 1.0, "draws": 2, "seed": 3}


def learned(**search: object) -> MLVGMParams:
    return MLVGMParams.model_validate(
        {"generator": RECIPE.model_dump(), "alpha": "learned", "search": {**SEARCH, **search}}
    )


def test_the_candidates_start_at_the_papers_five_schedules() -> None:
    first = starts(3)
    assert first[0] == schedule("cosine", 3)
    assert first[1] == schedule("linear", 3)
    assert first[2] == [0.5, 0.5, 0.5]
    assert first[3] == pytest.approx([1 - a for a in schedule("linear", 3)])
    assert first[4] == pytest.approx([1 - a for a in schedule("cosine", 3)])
    pool = candidates(3, 12, seed=7)
    assert pool[:5] == first
    assert len(pool) == 12
    assert all(0 <= a <= 1 for row in pool for a in row)
    assert candidates(3, 12, seed=7) == pool  # replays
    assert candidates(3, 12, seed=8)[5:] != pool[5:]
    assert candidates(3, 2, seed=0) == first[:2]


def test_the_one_step_adversaries_are_at_the_budget_and_hurt_the_alpha_zero_pipeline(
    trained: Trained,  # noqa: F811
) -> None:
    index = trained.split.train[:128]
    x, y = trained.data.images(index), trained.data.y[index]
    adv = one_step_l2(trained.classifier, trained.vae, x, y, eps=1.0)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 1.0 + 1e-5
    assert float(norms.median()) > 0.5  # clipping to [0, 1] shortens some steps, not most
    with torch.no_grad():

        def acc(images: torch.Tensor) -> float:
            rec = purify(trained.vae, images, [0.0, 0.0, 0.0], None)
            return float((trained.classifier(rec).argmax(1) == y).double().mean())

        assert acc(adv) < acc(x) - 0.1


def test_the_search_keeps_the_best_candidate_and_records_it(trained: Trained) -> None:  # noqa: F811
    params = learned()
    values = AlphaSearchRecipe(MLVGMParams).values(params.model_dump(mode="json"))
    assert values["search"] == {**SEARCH, "batch_size": 256}
    artifacts = {"checkpoint": trained.classifier, "vae": trained.vae}
    art, metrics = AlphaSearchRecipe(MLVGMParams).fit_for(
        values, trained.data, trained.split, torch.device("cpu"), artifacts
    )
    chosen = schedule_of(art).values()
    assert chosen == [metrics[f"alpha_level_{i}"] for i in range(3)]
    # recomputed independently: the same samples, adversaries and draws give every score
    order = torch.randperm(len(trained.split.train), generator=torch.Generator().manual_seed(3))
    index = trained.split.train[order[:96]]
    x, y = trained.data.images(index), trained.data.y[index]
    adv = one_step_l2(trained.classifier, trained.vae, x, y, eps=1.0)
    scores = [
        score(trained.classifier, trained.vae, adv, y, a, params, 2) for a in candidates(3, 8, 3)
    ]
    assert metrics["search_score"] == max(scores)
    assert chosen == candidates(3, 8, 3)[scores.index(max(scores))]
    assert metrics["search_score_cosine"] == scores[0]
    assert metrics["search_score_linear"] == scores[1]
    assert metrics["search_candidates"] == 8
    assert metrics["search_eps"] == 1.0
    assert metrics["search_clean_accuracy"] >= metrics["search_score"]
    # the defense reads the searched schedule, attenuation applied
    defense = DEFENSES.get("mlvgm_purify").obj
    built = defense(learned(), vae=trained.vae, alpha_schedule=art)
    assert built.alphas() == chosen
    half = MLVGMParams.model_validate({**learned().model_dump(mode="json"), "attenuation": 0.5})
    assert defense(half, vae=trained.vae, alpha_schedule=art).alphas() == [0.5 * a for a in chosen]


def test_a_learned_schedule_is_stored_and_loaded_like_a_checkpoint() -> None:
    art = build_schedule(2)
    schedule_of(art).alpha.copy_(torch.tensor([0.25, 0.75], dtype=torch.float64))
    again = build_schedule(2)
    again.load_state_dict(art.state_dict())
    assert schedule_of(again).values() == [0.25, 0.75]
    with pytest.raises(TypeError, match="not a network"):
        again(torch.zeros(1, 1, 1, 1))


def test_a_learned_purifier_without_its_schedule_says_how_to_build_it(
    trained: Trained,  # noqa: F811
) -> None:
    defense = DEFENSES.get("mlvgm_purify").obj(learned(), vae=trained.vae)
    with pytest.raises(MissingArtifactError, match="alpha_schedule=schedule"):
        defense.wrap(trained.classifier)


def test_only_a_learned_schedule_needs_the_search() -> None:
    requires = DEFENSES.get("mlvgm_purify").obj.requires
    search = requires["alpha_schedule"]
    assert search.per_model
    assert search.needed(learned().model_dump(mode="json"))
    assert not search.needed(MLVGMParams().model_dump(mode="json"))
    ds = {"name": "digits", "params": {}}
    spec = search.train_spec(
        "alpha_schedule", ds, "mlvgm_purify", learned().model_dump(mode="json"), "cnn"
    )
    assert spec["for_model"] == "cnn"
    assert spec["model"] == {
        "name": "alpha_search",
        "arch": "alpha_schedule",
        "params": {"levels": 3},
    }
    other = learned(eps=2.0).model_dump(mode="json")
    assert search.train_spec("alpha_schedule", ds, "mlvgm_purify", other, "cnn") != spec
    # draws of the defense change the scores, so they are part of the search's recipe
    more = {**learned().model_dump(mode="json"), "draws": 4}
    assert search.train_spec("alpha_schedule", ds, "mlvgm_purify", more, "cnn") != spec

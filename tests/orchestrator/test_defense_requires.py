"""Defenses that need trained artifacts (``requires``): refused at validation unless each
requirement has a recipe the planner can turn into a train cell."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand
from tasks.defenses import Requirement
from tasks.defenses.purify import AutoencoderPurify

STUDY = """\
name: purified
datasets:
  - name: digits
    eval_size: 16
models:
  - name: mlp
    arch: mlp
    train: {epochs: 1, seed: 0}
defenses:
  - name: none
  - {name: autoencoder_purify, epochs: 2}
attacks:
  - name: fgsm
    eps: 0.1
"""


def test_a_defense_needing_an_artifact_nobody_produces_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(AutoencoderPurify, "requires", {"denoiser": Requirement("denoiser")})
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY, "study.yaml")
    assert info.value.problems == [
        "line 11: defenses[1].name: autoencoder_purify needs a trained artifact ('denoiser') "
        "that studies cannot produce yet: no cell of the plan trains it; remove this defense "
        "from the study, or evaluate it outside advgrid (see its module's docstring)"
    ]


def _plan(text: str) -> list:
    return expand(loader.parse(text, "study.yaml")).cells


def test_autoencoder_purify_is_planned_with_one_autoencoder_cell_per_dataset() -> None:
    text = STUDY.replace(
        "  - {name: autoencoder_purify, epochs: 2}\n",
        "  - {name: autoencoder_purify, epochs: 2}\n"
        "  - {name: autoencoder_purify, epochs: 2, label: same_recipe}\n",
    )
    cells = _plan(text)
    coders = [c for c in cells if "autoencoder" in c.spec]
    assert len(coders) == 1  # two entries with one recipe share the autoencoder
    (coder,) = coders
    assert coder.kind == "train"
    assert coder.spec["model"] == {
        "name": "autoencoder",
        "arch": "dae",
        "params": {"width": 16, "activation": "relu"},
    }
    assert coder.spec["autoencoder"]["epochs"] == 2
    assert coder.depends_on == ()
    purified = [
        c
        for c in cells
        if (c.spec.get("target_defense") if c.kind == "transfer" else c.spec.get("defense", {}))
        .get("name", "")
        .startswith("autoencoder")
    ]
    assert {c.kind for c in purified} == {"attack", "transfer"}
    for c in purified:
        assert c.inputs["autoencoder"] == ("cell", coder.key, "checkpoint")
        assert coder.key in c.depends_on
    others = [c for c in cells if c not in purified and c is not coder]
    assert all("autoencoder" not in c.inputs and coder.key not in c.depends_on for c in others)


def test_studies_without_it_keep_their_keys() -> None:
    with_it = _plan(STUDY)
    without = _plan(STUDY.replace("  - {name: autoencoder_purify, epochs: 2}\n", ""))
    assert {c.key for c in without} < {c.key for c in with_it}
    assert not any("autoencoder" in c.inputs for c in without)


def test_a_model_named_like_the_autoencoder_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        loader.parse(STUDY.replace("  - name: mlp\n", "  - name: autoencoder\n"), "study.yaml")
    assert info.value.problems == [
        "line 6: models[0].name: the model name 'autoencoder' is the one autoencoder_purify "
        "(defenses[1]) gives its trained part in results; rename the model"
    ]


def test_no_autoencoder_is_trained_where_no_model_is_attacked() -> None:
    text = STUDY.replace("    eval_size: 16\n", "    eval_size: 16\n  - name: synthetic\n").replace(
        "    train: {epochs: 1, seed: 0}\n",
        "    train: {epochs: 1, seed: 0}\n    datasets: [digits]\n",
    )
    coders = [c for c in _plan(text) if "autoencoder" in c.spec]
    assert [c.spec["dataset"]["label"] for c in coders] == ["digits"]

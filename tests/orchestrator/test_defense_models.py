"""A defense entry's `models:`: which models it wraps, as sources and as targets; it selects
cells and enters no key."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand

STUDY = """\
name: wraps
datasets:
  - name: digits
    eval_size: 16
models:
  - {name: mlp, arch: mlp, train: {epochs: 1, seed: 0}}
  - {name: cnn, arch: small_cnn, train: {epochs: 1, seed: 0}, splits: 2}
defenses:
  - name: none
  - {name: jpeg, adaptive: bpda}
attacks:
  - {name: fgsm, eps: 0.1}
"""


def _cells(text: str) -> dict[str, tuple]:
    """Key → (kind, source, defense label, target, target defense label) per cell."""
    out = {}
    for c in expand(loader.parse(text, "study.yaml")).cells:
        s = c.spec
        out[c.key] = (
            c.kind,
            s.get("source"),
            s.get("defense", {}).get("label"),
            s.get("target"),
            s.get("target_defense", {}).get("label"),
        )
    return out


def test_a_defense_wraps_only_the_models_it_names() -> None:
    every = _cells(STUDY)
    some = _cells(
        STUDY.replace("{name: jpeg, adaptive: bpda}", "{name: jpeg, adaptive: bpda, models: [cnn]}")
    )
    # a subset of the full grid, key for key: `models` enters no key
    assert set(some) < set(every)
    assert all(every[k] == v for k, v in some.items())
    jpeg_sources = {v[1] for v in some.values() if v[0] == "attack" and v[2] == "jpeg"}
    jpeg_targets = {v[3] for v in some.values() if v[0] == "transfer" and v[4] == "jpeg"}
    assert jpeg_sources == jpeg_targets == {"cnn_A", "cnn_B"}  # the split's parts
    undefended = {v[1] for v in some.values() if v[0] == "attack" and v[2] == "none"}
    assert undefended == {"mlp", "cnn_A", "cnn_B"}
    # what was left out is exactly what wraps mlp in jpeg
    gone = [v for k, v in every.items() if k not in some]
    assert gone
    assert all(
        (v[0] == "attack" and (v[1], v[2]) == ("mlp", "jpeg"))
        or (v[0] == "transfer" and ("mlp", "jpeg") in {(v[1], v[2]), (v[3], v[4])})
        for v in gone
    )
    part = _cells(
        STUDY.replace(
            "{name: jpeg, adaptive: bpda}", "{name: jpeg, adaptive: bpda, models: [cnn_B]}"
        )
    )
    assert {v[1] for v in part.values() if v[0] == "attack" and v[2] == "jpeg"} == {"cnn_B"}


def test_a_purifier_wrapping_no_source_model_trains_no_autoencoder() -> None:
    text = STUDY.replace(
        "  - {name: jpeg, adaptive: bpda}\n", "  - {name: autoencoder_purify, models: [mlp]}\n"
    )
    with_source = expand(loader.parse(text))
    assert sum(c.spec.get("autoencoder") is not None for c in with_source.cells) == 1
    assert with_source.counts()["attack"] == 3 + 1


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (
            "[cnn, resnet]",
            "line 10: defenses[1].models[1]: unknown model 'resnet'; the study's models are "
            "mlp, cnn, cnn_A, cnn_B",
        ),
        (
            "[]",
            "line 10: defenses[1].models: models must be a non-empty list of model names, "
            "e.g. [cnn]; got []",
        ),
        (
            "cnn",
            "line 10: defenses[1].models: models must be a non-empty list of model names, "
            "e.g. [cnn]; got 'cnn'",
        ),
    ],
)
def test_unknown_or_malformed_models_are_refused(models: str, expected: str) -> None:
    text = STUDY.replace(
        "{name: jpeg, adaptive: bpda}", f"{{name: jpeg, adaptive: bpda, models: {models}}}"
    )
    with pytest.raises(ConfigError) as info:
        loader.parse(text, "study.yaml")
    assert info.value.problems == [expected]

"""A defense's `adaptive:` and `eot_samples:`: taken out of its params, checked against the
defense's declarations and the study's attacks before anything runs, and part of the attack
cells' keys only when set."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import ConfigError
from orchestrator.study import loader
from orchestrator.study.plan import expand
from tests.conftest import Cli

STUDY = """\
name: adapt
datasets:
  - name: digits
    eval_size: 16
models:
  - name: mlp
    arch: mlp
    train: {epochs: 1, seed: 0}
defenses:
  - name: none
  - {name: jpeg, quality: 75, adaptive: bpda}
  - {name: bit_depth, bits: 2, adaptive: bpda}
attacks:
  - name: fgsm
    eps: 0.1
  - name: square
    eps: 0.1
    max_queries: 10
"""
FREE = "corruption, noise, one_pixel, spsa, square"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader.parse(text, "study.yaml")
    return info.value.problems


def test_adaptive_keys_are_not_params_and_stay_on_the_resolved_defense() -> None:
    text = STUDY.replace(
        "  - {name: bit_depth, bits: 2, adaptive: bpda}\n",
        "  - {name: bit_depth, bits: 2, adaptive: bpda}\n"
        "  - {name: random_resize_pad, label: rrp, adaptive: bpda+eot}\n"
        "  - {name: random_resize_pad, label: rrp4, adaptive: eot, eot_samples: 4}\n",
    )
    study = loader.parse(text, "study.yaml")
    got = [(d.label, d.params, d.adaptive, d.eot_samples) for d in study.defenses]
    assert got == [
        ("none", {}, "none", None),
        ("jpeg", {"quality": 75}, "bpda", None),
        ("bit_depth", {"bits": 2}, "bpda", None),
        ("rrp", {"max_scale": 331 / 299, "fill": 0.5, "seed": 0}, "bpda+eot", 10),
        ("rrp4", {"max_scale": 331 / 299, "fill": 0.5, "seed": 0}, "eot", 4),
    ]
    cells = expand(study).cells
    attacks = [c for c in cells if c.kind == "attack"]
    defenses = {json.dumps(c.spec["defense"], sort_keys=True) for c in attacks}
    assert sorted(
        (json.loads(d)["label"], json.loads(d).get("adaptive", "")) for d in defenses
    ) == [
        ("bit_depth", ""),  # the non-adaptive twins
        ("bit_depth", "bpda"),
        ("jpeg", ""),
        ("jpeg", "bpda"),
        ("none", ""),
        ("rrp", ""),
        ("rrp", "bpda+eot"),
        ("rrp4", ""),
        ("rrp4", "eot"),
    ]
    assert {json.loads(d).get("eot_samples") for d in defenses} == {None, 10, 4}
    # twins for the gradient attack (fgsm) on every adapted defense, and for square under eot
    twins = [
        (c.spec["defense"]["label"], c.spec["attack"]["name"])
        for c in attacks
        if c.spec["defense"]["name"] != "none" and "adaptive" not in c.spec["defense"]
    ]
    assert sorted(twins) == [
        ("bit_depth", "fgsm"),
        ("jpeg", "fgsm"),
        ("rrp", "fgsm"),
        ("rrp", "square"),
        ("rrp4", "fgsm"),
        ("rrp4", "square"),
    ]
    used = {k for c in cells if c.kind == "transfer" for k in c.depends_on}
    assert (
        not {
            twin.key
            for twin in attacks
            if twin.spec["defense"]["name"] != "none" and "adaptive" not in twin.spec["defense"]
        }
        & used
    )
    for c in cells:  # targets never carry how an attacker adapted
        if c.kind == "transfer":
            assert set(c.spec["target_defense"]) == {"name", "label", "params"}


def test_only_attack_cells_on_an_adapted_defense_change_their_keys() -> None:
    plain = STUDY.replace(", adaptive: bpda}", "}").replace("  - name: fgsm\n    eps: 0.1\n", "")
    adapted = STUDY.replace("  - name: fgsm\n    eps: 0.1\n", "")
    before, after = expand(loader.parse(plain)), expand(loader.parse(adapted))
    changed = {c.key for c in before.cells} - {c.key for c in after.cells}
    kinds = {(c.kind, c.spec["defense"]["name"]) for c in before.cells if c.key in changed}
    # the square cells on jpeg and bit_depth, and the transfer cells of their sets; the
    # undefended attack cell and every transfer cell from it (onto jpeg, bit_depth) stay
    assert kinds == {("attack", "jpeg"), ("attack", "bit_depth")} | {
        ("transfer", "jpeg"),
        ("transfer", "bit_depth"),
    }
    assert len(changed) == 2 + 2 * 3


def test_a_gradient_attack_through_a_non_differentiable_defense_needs_bpda() -> None:
    text = STUDY.replace("{name: jpeg, quality: 75, adaptive: bpda}", "{name: jpeg, quality: 75}")
    assert _problems(text) == [
        "line 11: defenses[1]: jpeg is not differentiable: a gradient attack through it "
        "(attacks[0] fgsm) sees no true gradient and reports obfuscated gradients as "
        "robustness; add `adaptive: bpda` (or `bpda+eot`) to the defense, attack it only "
        f"with gradient-free attacks ({FREE}), or say `adaptive: none` to record that "
        "non-adaptive number on purpose"
    ]
    gradient_free = text.replace("  - name: fgsm\n    eps: 0.1\n", "")
    assert loader.parse(gradient_free).defenses[1].adaptive == "none"


def test_adaptive_none_on_a_non_differentiable_defense_is_allowed_with_a_note() -> None:
    text = STUDY.replace(
        "{name: jpeg, quality: 75, adaptive: bpda}", "{name: jpeg, adaptive: none}"
    )
    study = loader.parse(text, "study.yaml")
    d = study.defenses[1]
    assert (d.adaptive, d.adaptive_given) == ("none", True)
    assert study.notes == [
        "line 11: defenses[1].adaptive: jpeg is not differentiable and `adaptive: none`: the "
        "gradient attacks (attacks[0] fgsm) follow autograd's masked gradient through it (zero "
        "almost everywhere), so the robust accuracy they report is the non-adaptive number, "
        "not robustness; an entry with `adaptive: bpda` (or `bpda+eot`) records both"
    ]
    # the same keys as the twins an adapted entry gets (fgsm) and its square cell
    jpeg = {
        c.key
        for c in expand(study).cells
        if c.kind == "attack" and "jpeg" in c.spec["defense"]["name"]
    }
    adapted = {c.key for c in expand(loader.parse(STUDY)).cells if c.kind == "attack"}
    assert len(jpeg) == 2
    assert len(jpeg & adapted) == 1  # fgsm's twin; square without bpda is a new key


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{name: median_filter, adaptive: eot}",
            "line 11: defenses[1].adaptive: eot averages over a defense's random draws, but "
            "median_filter is deterministic: every draw is the same, so `adaptive: eot` would "
            "cost eot_samples times as many passes for the same gradient; use `adaptive: none`",
        ),
        (
            "{name: random_resize_pad, adaptive: eot, eot_samples: 1}",
            "line 11: defenses[1].eot_samples: must be ≥ 2: one draw averages nothing (got 1)",
        ),
        (
            "{name: jpeg, adaptive: bpda, eot_samples: 5}",
            "line 11: defenses[1].eot_samples: eot_samples applies only with `adaptive: eot` "
            "or `adaptive: bpda+eot` (got adaptive: bpda)",
        ),
        (
            "{name: jpeg, adaptive: BPDA}",
            "line 11: defenses[1].adaptive: Input should be 'none', 'bpda', 'eot' or "
            "'bpda+eot' (got 'BPDA')",
        ),
        (
            "{name: none, label: again, adaptive: bpda}",
            "line 11: defenses[1].adaptive: bpda replaces a defense's input transform by the "
            "identity on the backward pass, but none is the undefended model: there is nothing "
            "to replace; remove bpda from `adaptive`",
        ),
    ],
)
def test_adaptive_settings_that_cannot_work_are_errors(entry: str, expected: str) -> None:
    text = STUDY.replace("{name: jpeg, quality: 75, adaptive: bpda}", entry)
    assert _problems(text) == [expected]


def test_eot_alone_on_a_non_differentiable_defense_is_both_wasted_and_not_enough() -> None:
    text = STUDY.replace("{name: jpeg, quality: 75, adaptive: bpda}", "{name: jpeg, adaptive: eot}")
    assert _problems(text) == [
        "line 11: defenses[1].adaptive: eot averages over a defense's random draws, but "
        "jpeg is deterministic: every draw is the same, so `adaptive: eot` would cost "
        "eot_samples times as many passes for the same gradient; use `adaptive: bpda`",
        "line 11: defenses[1]: jpeg is not differentiable: a gradient attack through it "
        "(attacks[0] fgsm) sees no true gradient and reports obfuscated gradients as "
        "robustness; add `adaptive: bpda` (or `bpda+eot`) to the defense, attack it only "
        f"with gradient-free attacks ({FREE}), or say `adaptive: none` to record that "
        "non-adaptive number on purpose",
    ]


def test_notes_say_when_a_number_is_not_adaptive(tmp_path) -> None:
    text = STUDY.replace(
        "  - {name: bit_depth, bits: 2, adaptive: bpda}\n",
        "  - {name: random_resize_pad, label: rrp}\n  - {name: gaussian_blur, adaptive: bpda}\n",
    )
    notes = [
        "line 12: defenses[2]: rrp is randomized and has no `adaptive: eot`: the gradient "
        "attacks (attacks[0] fgsm) follow one random draw per step, so the robust accuracy "
        "they report for it is not an adaptive number; add `adaptive: eot` (or `bpda+eot`) "
        "for expectation over transformation",
        "line 13: defenses[3].adaptive: gaussian_blur is differentiable: bpda replaces its "
        "true gradient by the identity's, which is usually a weaker attack than plain "
        "autograd through it",
    ]
    assert loader.parse(text, "study.yaml").notes == notes
    assert loader.parse(STUDY).notes == []
    path = tmp_path / "adapt.yaml"
    path.write_text(text)
    env = {"ADVGRID_DB": f"sqlite:///{tmp_path / 'index.db'}", "ADVGRID_STORE": str(tmp_path)}
    cli = Cli()
    planned = cli("plan", path, "--format", "json", env=env)
    assert planned.exit_code == 0
    assert json.loads(planned.output)["notes"] == notes
    dry = cli("run", path, "--dry-run", env=env)
    assert dry.exit_code == 0
    assert f"note: {path}: {notes[0]}" in dry.output  # CliRunner mixes stderr in
    assert not (tmp_path / "index.db").exists()


def test_a_list_of_eot_samples_is_one_defended_model_per_count() -> None:
    """The convergence check: every attack at each count; one non-adaptive twin and one set
    of transfer cells onto the defended model (a forward pass does not depend on the count)."""
    text = STUDY.replace(
        "  - {name: bit_depth, bits: 2, adaptive: bpda}\n",
        "  - {name: random_resize_pad, label: rrp, adaptive: eot, eot_samples: [2, 4, 8]}\n",
    ).replace("attacks:\n", "sources: all\ntargets: [mlp]\nattacks:\n")
    study = loader.parse(text, "study.yaml")
    rrp = [d for d in study.defenses if d.label == "rrp"]
    assert [d.eot_samples for d in rrp] == [2, 4, 8]
    plan = expand(study)
    assert len({c.key for c in plan.cells}) == len(plan.cells)
    on_rrp = [c for c in plan.cells if c.kind == "attack" and c.spec["defense"]["label"] == "rrp"]
    eots = sorted(
        (c.spec["attack"]["name"], c.spec["defense"].get("eot_samples", 0)) for c in on_rrp
    )
    # fgsm and square at each count, and the fgsm and square twins without adaptation (0)
    assert eots == sorted([(a, n) for a in ("fgsm", "square") for n in (0, 2, 4, 8)])
    onto = [
        c
        for c in plan.cells
        if c.kind == "transfer"
        and c.spec["target_defense"]["label"] == "rrp"
        and c.spec["defense"]["name"] == "none"
    ]
    assert len(onto) == 2  # fgsm and square crafted on the undefended mlp


@pytest.mark.parametrize(
    ("counts", "expected"),
    [("[2, 2]", "distinct counts"), ("[]", "distinct counts"), ("[1, 8]", "≥ 2")],
)
def test_a_bad_eot_samples_list_is_refused(counts: str, expected: str) -> None:
    text = STUDY.replace(
        "{name: jpeg, quality: 75, adaptive: bpda}",
        f"{{name: random_resize_pad, adaptive: eot, eot_samples: {counts}}}",
    )
    (problem,) = _problems(text)
    assert problem.startswith("line 11: defenses[1].eot_samples")
    assert expected in problem

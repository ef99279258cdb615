"""Gradient-masking flags and the `advgrid defenses` renderings, from hand-made rows."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest

from orchestrator.views import defended, masking, render
from storage.defense_queries import DefenseEvaluation

PGD = {"eps": 0.1, "norm": "linf", "steps": 10, "step_size": 0.025, "seed": 0}
SQUARE = {"eps": 0.1, "norm": "linf", "max_queries": 100, "seed": 0}


def row(
    attack: str,
    params: dict,
    robust: float,
    *,
    defense: tuple[str, str] = ("jpeg", "jpeg_75"),
    adaptive: str = "bpda",
    oblivious: float | None = 0.8,
    **metrics: float,
) -> DefenseEvaluation:
    values = {"n": 100.0, "clean_accuracy": 0.95, "robust_accuracy": robust, **metrics}
    return DefenseEvaluation(
        cell_key=f"{attack}-{json.dumps(params)}-{defense}",
        dataset="digits",
        model="mlp",
        defense=defense,
        adaptive=adaptive,
        attack=attack,
        params_json=json.dumps(params, sort_keys=True),
        metrics=values,
        oblivious_key=None if oblivious is None else "obl",
        oblivious_robust=oblivious,
        oblivious_clean=None if oblivious is None else 0.9,
    )


def names(rows: list[DefenseEvaluation]) -> list[str]:
    (found,) = masking.flags(rows).values()
    return [f.name for f in found]


def test_a_black_box_attack_beating_the_gradient_attacks_is_flagged() -> None:
    flags = masking.flags([row("pgd", PGD, 0.5), row("square", SQUARE, 0.3)])
    assert [f.to_json() for f in flags[("digits", "mlp", "jpeg_75", "bpda")]] == [
        {
            "flag": "black_box_wins",
            "reason": "square at linf eps 0.1: 30.0% robust, below the best gradient attack "
            "(pgd: 50.0%)",
        }
    ]
    # within the tolerance (2 % + one sample), at another eps or another norm: no flag
    assert names([row("pgd", PGD, 0.5), row("square", SQUARE, 0.48)]) == []
    assert names([row("pgd", PGD, 0.5), row("square", {**SQUARE, "eps": 0.2}, 0.1)]) == []
    assert names([row("pgd", {**PGD, "norm": "l2"}, 0.5), row("square", SQUARE, 0.1)]) == []
    assert names([row("pgd", PGD, 0.5), row("noise", {"eps": 0.1}, 0.2)]) == ["black_box_wins"]
    # a targeted attack's robust accuracy counts misses of its target: not compared
    targeted = {**PGD, "targeted": True}
    assert names([row("pgd", targeted, 0.85), row("square", SQUARE, 0.4)]) == []


def test_zero_or_vanishing_gradients_are_flagged() -> None:
    assert names([row("pgd", PGD, 0.5, grad_zero_fraction=0.9)]) == ["vanishing_gradient"]
    assert names([row("pgd", PGD, 0.5, grad_zero_fraction=0.5)]) == []
    undefended = row("pgd", PGD, 0.1, defense=("none", "none"), adaptive="none", grad_l1_median=1.0)
    tiny = row("pgd", PGD, 0.5, grad_l1_median=0.001)
    flags = masking.flags([undefended, tiny])
    assert flags[("digits", "mlp", "none", "none")] == []
    (flag,) = flags[("digits", "mlp", "jpeg_75", "bpda")]
    assert flag.reason == "median input-gradient L1 0.001, 0.001× the undefended model's 1"
    assert names([row("pgd", PGD, 0.5, grad_l1_median=0.02)]) == []  # no undefended model


def test_robust_accuracy_that_does_not_fall_with_eps_is_flagged() -> None:
    def curve(*values: float, attack: str = "pgd") -> list[DefenseEvaluation]:
        return [
            row(attack, {**PGD, "eps": e, "step_size": e / 4}, v)
            for e, v in zip((0.05, 0.1, 0.2), values, strict=False)
        ]

    assert names(curve(0.6, 0.3, 0.1)) == []
    assert names(curve(0.0, 0.0, 0.0)) == []  # broken at the smallest eps already
    assert names(curve(0.6, 0.59, 0.6)) == ["eps_not_monotone"]  # flat
    (flag,) = masking.flags(curve(0.6, 0.3, 0.5)).popitem()[1]
    assert flag.reason == (
        "pgd(norm=linf, steps=10): robust accuracy rises (0.05: 60.0%, 0.1: 30.0%, 0.2: 50.0%)"
    )
    assert names(curve(0.9, 0.9, attack="noise")) == []  # a baseline is not expected to


def test_randomness_is_flagged_and_says_whether_eot_was_used() -> None:
    declared = row("pgd", PGD, 0.5, adaptive="none", defense_randomized=1.0)
    (flag,) = masking.flags([declared]).popitem()[1]
    assert flag.reason == (
        "declared randomized; two forward passes differ on 0.0% of the clean inputs; "
        "attacked without EOT: not an adaptive number"
    )
    measured = row("pgd", PGD, 0.5, adaptive="eot", forward_random_fraction=0.25)
    (flag,) = masking.flags([measured]).popitem()[1]
    assert flag.reason.endswith("differ on 25.0% of the clean inputs; attacked with EOT")
    assert names([row("pgd", PGD, 0.5, defense_randomized=0.0)]) == []


def test_the_table_reports_the_gap_and_flags_in_every_format() -> None:
    twin = row("pgd", PGD, 0.93, adaptive="none", grad_zero_fraction=1.0)
    twin = dataclasses.replace(twin, cell_key="twin")
    rows = [
        row("pgd", PGD, 0.2, defense=("none", "none"), adaptive="none", oblivious=0.2),
        dataclasses.replace(row("pgd", PGD, 0.25), naive_key="twin", naive_robust=0.93),
        twin,
        row("pgd", PGD, 0.5, defense=("bit_depth", "bits_2"), oblivious=None),
    ]
    built = defended.build(rows)
    # the twin is shown in its adapted row, its flag marked as its own
    assert [(r.model, r.gap) for r in built] == [
        ("mlp", 0.0),
        ("mlp+jpeg_75", pytest.approx(0.68)),
        ("mlp+bits_2", None),
    ]
    assert defended.missing_oblivious(built) == ["mlp+bits_2"]
    first = built[1].to_json()
    assert first["non_adaptive_robust_accuracy"] == 0.93
    assert first["non_adaptive_cell_key"] == "twin"
    assert first["oblivious_robust_accuracy"] == 0.8
    assert first["adaptive_robust_accuracy"] == 0.25
    assert first["flags"][0]["flag"] == "vanishing_gradient"
    assert first["flags"][0]["reason"].startswith("without adaptation: the input gradient")
    parsed = list(csv.DictReader(io.StringIO(render.csv_text(defended.records(built)))))
    assert parsed[1]["gap"] == "0.680000"
    assert parsed[1]["non_adaptive_robust_accuracy"] == "0.930000"
    assert parsed[1]["flags"] == "vanishing_gradient"
    assert parsed[2]["oblivious_robust_accuracy"] == parsed[2]["non_adaptive_robust_accuracy"] == ""
    md = render.markdown(defended.table(built))
    pgd = "pgd(eps=0.1, norm=linf, steps=10)"
    line = f"| digits | mlp+jpeg_75 | bpda | {pgd} | 95.0 | 93.0 | 80.0 | 25.0 | +68.0 | "
    assert line + "vanishing_gradient |" in md.splitlines()
    tex = render.latex(defended.table(built))
    line = rf"digits & mlp+jpeg\_75 & bpda & {pgd} & 95.0 & 93.0 & 80.0 & 25.0 & +68.0 & "
    line += r"vanishing\_gradient \\"
    assert line in tex.splitlines()
    assert (
        r"mlp+bits\_2 & bpda & pgd(eps=0.1, norm=linf, steps=10) & 95.0 & -- & -- & 50.0 & -- &"
        in tex
    )


def test_a_randomized_defense_whose_examples_fool_fresh_draws_is_flagged() -> None:
    mlvgm = {"defense": ("mlvgm_purify", "mlvgm"), "adaptive": "eot", "defense_randomized": 1.0}
    lucky = row("pgd", PGD, 0.30, robust_accuracy_worst_of_10=0.20, **mlvgm)
    assert names([lucky]) == ["randomized", "lucky_draws"]
    (found,) = masking.flags([lucky]).values()
    assert "30.0% on one draw, 20.0% worst of 10" in found[1].reason
    # within one sample plus the tolerance: not flagged
    steady = row("pgd", PGD, 0.30, robust_accuracy_worst_of_10=0.285, **mlvgm)
    assert names([steady]) == ["randomized"]


def test_a_generator_whose_coarse_level_loses_the_class_is_flagged() -> None:
    vae = {"defense": ("vae_purify", "vae"), "adaptive": "none"}
    lost = row("pgd", PGD, 0.3, generator_recon_accuracy=0.9, generator_keep_0_accuracy=0.2, **vae)
    assert names([lost]) == ["coarse_loses_class"]
    (found,) = masking.flags([lost]).values()
    assert "20.0% of samples that keep the generator's coarsest level" in found[0].reason
    kept = row("pgd", PGD, 0.3, generator_recon_accuracy=0.9, generator_keep_0_accuracy=0.85, **vae)
    assert names([kept]) == []


def test_an_eot_number_still_falling_at_the_largest_count_is_flagged() -> None:
    mlvgm = {"defense": ("mlvgm_purify", "mlvgm"), "adaptive": "eot"}

    def at(eot: float, robust: float, params: dict = PGD) -> DefenseEvaluation:
        r = row("pgd", params, robust, eot_samples=eot, **mlvgm)
        return dataclasses.replace(r, cell_key=f"{r.cell_key}-{eot}")

    falling = [at(2, 0.40), at(8, 0.30), at(32, 0.22)]
    assert names(falling) == ["eot_not_converged"]
    (found,) = masking.flags(falling).values()
    assert "40.0% at EOT 2, 30.0% at EOT 8, 22.0% at EOT 32: still falling" in found[0].reason
    # stopped moving (within one sample plus the tolerance), or only one count: no flag
    assert names([at(2, 0.40), at(8, 0.30), at(32, 0.285)]) == []
    assert names([at(8, 0.30)]) == []
    # another attack configuration is its own curve
    other = {**PGD, "steps": 50}
    assert names([at(8, 0.30), at(32, 0.29), at(8, 0.3, other), at(32, 0.1, other)]) == [
        "eot_not_converged"
    ]
    # the table tells the rows apart by their count
    rows = defended.build(falling)
    assert [defended._adapts(r) for r in rows] == ["eot×2", "eot×8", "eot×32"]
    assert [r.to_json()["eot_samples"] for r in rows] == [2, 8, 32]

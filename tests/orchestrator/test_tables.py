"""Matrices, intervals, curves and their renderings, from rows shaped like the index returns."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from scipy.stats import binomtest

from orchestrator.errors import AdvgridError
from orchestrator.views import curves, plots, render, transfer
from storage.table_queries import AttackMetrics, TransferCount

NONE, JPEG = ("none", "none"), ("jpeg", "jpeg_75")


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 30), (7, 30), (30, 30), (1, 2), (512, 1000)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = transfer.wilson(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-9)
    assert hi == pytest.approx(ref.high, abs=1e-9)


def test_wilson_without_samples_has_no_interval() -> None:
    assert all(math.isnan(v) for v in transfer.wilson(0, 0))


def _count(src: str, tgt: str, fooled: int, n: int, tdef=NONE, params=None) -> TransferCount:
    p = json.dumps(params or {"eps": 0.1, "norm": "linf", "steps": 10}, sort_keys=True)
    return TransferCount(
        f"{src}{tgt}{tdef[1]}", "digits", "pgd", p, src, NONE, tgt, tdef, fooled, n
    )


@pytest.fixture
def matrix() -> transfer.Matrix:
    counts = [
        _count("cnn_A", "cnn_A", 40, 40),
        _count("cnn_A", "mlp", 10, 40),
        _count("cnn_A", "mlp", 30, 40, tdef=JPEG),
        _count("mlp", "mlp", 0, 0),
        _count("mlp", "cnn_A", 5, 50),
        _count("mlp", "mlp", 1, 9, params={"eps": 0.2, "norm": "linf", "steps": 10}),
    ]
    ms = transfer.matrices(counts, "source_success")
    assert len(ms) == 2  # one per attack configuration
    return ms[0]


def test_matrix_layout_and_json(matrix: transfer.Matrix) -> None:
    assert matrix.sources == ["cnn_A", "mlp"]
    assert matrix.targets == ["cnn_A", "mlp", "mlp+jpeg_75"]
    doc = matrix.to_json()
    assert doc["matrix"] == [[1.0, 0.25, 0.75], [0.1, None, None]]
    assert doc["n"] == [[40, 40, 40], [50, 0, None]]
    assert doc["fooled"] == [[40, 10, 30], [5, 0, None]]
    lo, hi = doc["ci95"][0][1]
    assert lo < 0.25 < hi
    assert doc["ci95"][1][1] is None  # n = 0: no interval
    assert doc["eps"] == 0.1


def test_csv_has_counts_and_intervals(matrix: transfer.Matrix) -> None:
    rows = list(csv.DictReader(io.StringIO(render.csv_text(transfer.records([matrix])))))
    assert len(rows) == 6
    entry = next(r for r in rows if r["source"] == "cnn_A" and r["target"] == "mlp")
    assert (entry["rate"], entry["n"], entry["fooled"]) == ("0.250000", "40", "10")
    assert float(entry["ci95_low"]) == pytest.approx(transfer.wilson(10, 40)[0], abs=1e-6)
    missing = next(r for r in rows if r["source"] == "mlp" and r["target"] == "mlp+jpeg_75")
    assert missing["rate"] == missing["n"] == ""


def test_markdown_and_latex(matrix: transfer.Matrix) -> None:
    md = render.markdown(transfer.table(matrix))
    assert "| cnn_A | 100.0 [91.2, 100.0] | 25.0 [14.2, 40.2] | 75.0 [59.8, 85.8] |" in md
    assert "denominator source_success (the examples that fooled the source)" in md
    tex = render.latex(transfer.table(matrix))
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"cnn\_A & 100.0 {\scriptsize [91.2, 100.0]} & 25.0" in tex
    assert r"mlp+jpeg\_75 \\" in tex
    assert r"mlp & 10.0 {\scriptsize [4.3, 21.4]} & n=0 & -- \\" in tex
    assert tex.count(r"\\") == 3  # header and two rows


def test_latex_escapes_every_special_character() -> None:
    assert render.latex_escape(r"a_b%c&d#e$f{g}h~i^j\k") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


def _attack(key: str, params: dict, metrics: dict, defense=NONE) -> AttackMetrics:
    return AttackMetrics(
        key, "digits", "cnn", defense, params.pop("_name", "pgd"), json.dumps(params), metrics
    )


def test_curves_average_over_seeds() -> None:
    rows = [
        _attack(
            f"k{eps}{seed}",
            {"eps": eps, "steps": 10, "seed": seed},
            {
                "clean_accuracy": 0.9 + seed / 100,
                "robust_accuracy": 0.5 - eps + seed / 10,
            },
        )
        for eps in (0.1, 0.2)
        for seed in (0, 1, 2)
    ]
    rows.append(_attack("other", {"eps": 0.1, "steps": 40, "seed": 0}, {"robust_accuracy": 0.1}))
    found = curves.build(rows, "eps")
    # steps=40 has one point and no clean accuracy to start from: not a curve
    (c,) = found
    assert c.params == {"steps": 10}
    assert [p.x for p in c.points] == [0.0, 0.1, 0.2]
    assert c.points[0].mean == pytest.approx(0.91)
    assert c.points[1].mean == pytest.approx(0.5)
    assert c.points[1].std == pytest.approx(0.1)
    assert c.points[1].seeds == 3
    doc = c.to_json()
    assert doc["points"][2]["values"] == pytest.approx([0.3, 0.4, 0.5])


def test_curve_over_steps_needs_two_values_and_skips_single_points() -> None:
    rows = [
        _attack("s10", {"eps": 0.1, "steps": 10, "seed": 0}, {"robust_accuracy": 0.4}),
        _attack("s40", {"eps": 0.1, "steps": 40, "seed": 0}, {"robust_accuracy": 0.3}),
        _attack("lone", {"eps": 0.2, "steps": 40, "seed": 0}, {"robust_accuracy": 0.1}),
    ]
    (c,) = curves.build(rows, "steps")
    assert [(p.x, p.mean, p.std) for p in c.points] == [(10.0, 0.4, None), (40.0, 0.3, None)]


def test_one_attack_in_two_norms_is_two_curves() -> None:
    rows = [
        _attack(f"{norm}{eps}", {"eps": eps, "norm": norm, "step_size": eps / 4, "seed": 0},
                {"robust_accuracy": 0.5 - eps / 10})
        for norm, budgets in (("linf", (0.05, 0.1)), ("l2", (0.5, 1.0)))
        for eps in budgets
    ]  # fmt: skip
    found = curves.build(rows, "eps")
    assert [(c.params["norm"], [p.x for p in c.points]) for c in found] == [
        ("linf", [0.05, 0.1]),
        ("l2", [0.5, 1.0]),
    ]


def test_a_corruption_curve_runs_over_its_severity_one_curve_per_kind() -> None:
    rows = [
        _attack(
            f"{kind}{sev}",
            {"_name": "corruption", "kind": kind, "severity": sev, "norm": "l2", "seed": 0},
            {"robust_accuracy": 0.9 - sev / 10 - (kind == "jpeg") / 10},
        )
        for kind in ("jpeg", "contrast")
        for sev in (1, 3, 5)
    ]
    found = curves.build(rows, "severity")
    assert [c.params["kind"] for c in found] == ["jpeg", "contrast"]
    assert [(p.x, round(p.mean, 6)) for p in found[0].points] == [(1, 0.7), (3, 0.5), (5, 0.3)]
    assert curves.build(rows, "eps") == []  # no budget: no eps curve


def test_minimum_norm_attacks_give_a_point_per_budget() -> None:
    row = _attack(
        "cw",
        {"_name": "cw_l2", "eps": [0.5, 1.0], "steps": 100, "seed": 0},
        {"clean_accuracy": 0.95, "robust_accuracy_eps_0.5": 0.6, "robust_accuracy_eps_1": 0.2},
    )
    (c,) = curves.build([row], "eps")
    assert [(p.x, p.mean) for p in c.points] == [(0.0, 0.95), (0.5, 0.6), (1.0, 0.2)]


def test_curve_renderings() -> None:
    rows = [
        _attack(
            f"k{eps}{s}", {"eps": eps, "seed": s}, {"clean_accuracy": 1.0, "robust_accuracy": r}
        )
        for eps, s, r in ((0.1, 0, 0.5), (0.1, 1, 0.7))
    ]
    found = curves.build(rows, "eps")
    md = render.markdown(curves.table(found))
    assert "| digits | cnn | pgd | 100.0 ± 0.0 | 60.0 ± 14.1 |" in md
    assert r"60.0 $\pm$ 14.1" in render.latex(curves.table(found))
    lines = render.csv_text(curves.records(found)).strip().splitlines()
    assert lines[0] == "dataset,model,attack,params,x_axis,x,mean,std,seeds"
    assert lines[2].endswith(",eps,0.1,0.600000,0.141421,2")


def test_plots_write_png_and_svg(tmp_path, matrix: transfer.Matrix) -> None:
    rows = [
        _attack("a", {"eps": 0.1}, {"clean_accuracy": 0.9, "robust_accuracy": 0.4}),
        _attack("b", {"eps": 0.2}, {"clean_accuracy": 0.9, "robust_accuracy": 0.2}),
    ]
    figs = [plots.heatmap(matrix), *plots.curve_figures(curves.build(rows, "eps"))]
    written = plots.save_all(figs, tmp_path / "out.png")
    assert [p.name for p in written] == ["out.png", "out-2.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    svg = plots.svg_text(plots.heatmap(matrix))
    assert svg.startswith("<svg")
    assert "mlp+jpeg_75" in svg
    with pytest.raises(AdvgridError, match=r"unknown image type '\.gif'"):
        plots.save_all(figs, tmp_path / "out.gif")


def test_a_default_that_follows_eps_does_not_split_the_curve() -> None:
    rows = [
        _attack(
            f"k{eps}{s}",
            {"eps": eps, "step_size": eps / 4, "steps": st, "seed": s},
            {
                "clean_accuracy": 0.9,
                "robust_accuracy": 0.5 - eps,
            },
        )
        for eps in (0.1, 0.2)
        for st in (10, 20)  # varied on its own: two curves
        for s in (0, 1)
    ]
    found = curves.build(rows, "eps")
    assert sorted(c.params["steps"] for c in found) == [10, 20]
    assert all("step_size" not in c.params for c in found)
    assert all([p.x for p in c.points] == [0.0, 0.1, 0.2] for c in found)

"""Attack strength: advgrid vs torchattacks on the same trained model, inputs and budget.

Trains the small CNN of the test suite on scikit-learn's digits (15 epochs, seed 0), takes
256 held-out samples, and runs every attack both libraries have with the same settings.
Fixed-budget attacks report robust accuracy (lower is stronger; random ones as the mean over
three seeds); minimum-norm attacks report the success rate and the median perturbation norm
over the samples both fool. The tests in ``tests/tasks/attacks/test_attack_reference.py``
pin these numbers; this script prints them all in one table.

    python benchmarks/agreement.py

Writes ``benchmarks/results/agreement-digits.json`` and ``.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchattacks as ta

from tasks import datasets, models, training
from tasks.attacks import ATTACKS

RESULTS = Path(__file__).parent / "results"
SEEDS = (0, 1, 2)


def _trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.set_num_threads(2)  # the thread count changes float sums, hence the trained model
    params = datasets.params_of("digits", {"eval_size": 256})
    data = datasets.load("digits", params)
    split = datasets.split(len(data.y), params)
    net = models.build(
        "small_cnn",
        models.MODELS.params_of("small_cnn", {"width": 8}),
        input_shape=data.input_shape,
        num_classes=10,
        mean=data.mean,
        std=data.std,
        seed=0,
    )
    recipe = training.TrainParams(epochs=15, lr=0.005)
    training.fit(net, data.images(split.train), data.y[split.train], recipe)
    return net.eval(), data.images(split.eval), data.y[split.eval]


# (label, advgrid name, params, torchattacks factory(model, seed), kind, norm, seeded)
Case = tuple[str, str, dict[str, Any], Callable[[Any, int], Any], str, str, bool]
E = 0.1
CASES: list[Case] = [
    ("fgsm L∞ 0.1", "fgsm", {"eps": E}, lambda m, s: ta.FGSM(m, eps=E), "robust", "linf", False),
    (
        "bim L∞ 0.1, 10 steps",
        "bim",
        {"eps": E, "step_size": E / 4, "steps": 10},
        lambda m, s: ta.BIM(m, eps=E, alpha=E / 4, steps=10),
        "robust",
        "linf",
        False,
    ),
    (
        "pgd L∞ 0.1, 10 steps, random start",
        "pgd",
        {"eps": E, "steps": 10, "step_size": E / 4},
        lambda m, s: ta.PGD(m, eps=E, alpha=E / 4, steps=10, random_start=True),
        "robust",
        "linf",
        True,
    ),
    (
        "pgd L2 0.5, 10 steps, random start",
        "pgd",
        {"norm": "l2", "eps": 0.5, "steps": 10, "step_size": 0.125},
        lambda m, s: ta.PGDL2(m, eps=0.5, alpha=0.125, steps=10, random_start=True),
        "robust",
        "l2",
        True,
    ),
    (
        "mim L∞ 0.1, 10 steps",
        "mim",
        {"eps": E, "step_size": E / 10, "steps": 10},
        lambda m, s: ta.MIFGSM(m, eps=E, alpha=E / 10, steps=10, decay=1.0),
        "robust",
        "linf",
        False,
    ),
    (
        "apgd_ce L∞ 0.1, 20 steps",
        "apgd_ce",
        {"eps": E, "steps": 20},
        lambda m, s: ta.APGD(m, eps=E, steps=20, loss="ce", seed=s),
        "robust",
        "linf",
        True,
    ),
    (
        "apgd_dlr L∞ 0.1, 20 steps",
        "apgd_dlr",
        {"eps": E, "steps": 20},
        lambda m, s: ta.APGD(m, eps=E, steps=20, loss="dlr", seed=s),
        "robust",
        "linf",
        True,
    ),
    (
        "apgd_t L∞ 0.1, 20 steps, 9 targets",
        "apgd_t",
        {"eps": E, "steps": 20},
        lambda m, s: ta.APGDT(m, eps=E, steps=20, n_classes=10, seed=s),
        "robust",
        "linf",
        True,
    ),
    (
        "fab_t L∞ 0.1, 20 steps, 9 targets",
        "fab_t",
        {"eps": [E], "steps": 20},
        lambda m, s: ta.FAB(m, eps=E, steps=20, multi_targeted=True, seed=s),
        "robust",
        "linf",
        False,
    ),
    (
        "fab L2 0.5, 20 steps",
        "fab",
        {"norm": "l2", "eps": [0.5], "steps": 20},
        lambda m, s: ta.FAB(m, norm="L2", eps=0.5, steps=20, seed=s),
        "robust",
        "l2",
        False,
    ),
    (
        "square L∞ 0.1, 1000 queries",
        "square",
        {"eps": E, "max_queries": 1000},
        lambda m, s: ta.Square(m, eps=E, n_queries=1000, p_init=0.8, seed=s),
        "robust",
        "linf",
        True,
    ),
    (
        "square L2 0.8, 300 queries",
        "square",
        {"norm": "l2", "eps": 0.8, "max_queries": 300},
        lambda m, s: ta.Square(m, norm="L2", eps=0.8, n_queries=300, p_init=0.8, seed=s),
        "robust",
        "l2",
        True,
    ),
    (
        "spsa L∞ 0.1, 30 steps, 64 pairs",
        "spsa",
        {"eps": E, "steps": 30, "samples": 64, "delta": 0.01, "lr": 0.01},
        lambda m, s: ta.SPSA(m, eps=E, delta=0.01, lr=0.01, nb_iter=30, nb_sample=64),
        "robust",
        "linf",
        True,
    ),
    (
        "one_pixel 3 pixels, 10 generations",
        "one_pixel",
        {"pixels": 3, "steps": 10, "popsize": 39},
        lambda m, s: ta.OnePixel(m, pixels=3, steps=10, popsize=40),
        "robust",
        "l0",
        True,
    ),
    (
        "jsma untargeted, gamma 0.1",
        "jsma",
        {"gamma": 0.1},
        lambda m, s: ta.JSMA(m, theta=1.0, gamma=0.1),
        "robust",
        "l0",
        False,
    ),
    (
        "deepfool L2, 50 steps",
        "deepfool",
        {"steps": 50},
        lambda m, s: ta.DeepFool(m, steps=50, overshoot=0.02),
        "minnorm",
        "l2",
        False,
    ),
    (
        "cw_l2 c=1, 100 steps, one round",
        "cw_l2",
        {"c": 1.0, "steps": 100, "search_steps": 1},
        lambda m, s: ta.CW(m, c=1, kappa=0, steps=100, lr=0.01),
        "minnorm",
        "l2",
        False,
    ),
    (
        "ead L1 rule, 50 steps, 4 rounds",
        "ead",
        {"steps": 50, "search_steps": 4, "decision": "l1"},
        lambda m, s: ta.EADL1(m, kappa=0, lr=0.01, max_iterations=50, binary_search_steps=4),
        "minnorm",
        "l1",
        False,
    ),
]


def _norms(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return {
        "linf": flat.abs().amax(1),
        "l2": flat.norm(dim=1),
        "l1": flat.abs().sum(1),
        "l0": flat.ne(0).sum(1).float(),
    }[norm]


def main() -> None:
    model, x, y = _trained()
    with torch.inference_mode():
        clean = model(x).argmax(1)
    rows = []
    began = time.perf_counter()
    for label, name, params, make_ref, kind, norm, seeded in CASES:
        seeds = SEEDS if seeded else (0,)
        ours_stats, ref_stats, both_norms = [], [], []
        t_ours = t_ref = 0.0
        for seed in seeds:
            attack = ATTACKS.get(name).obj(ATTACKS.params_of(name, {**params, "seed": seed}))
            start = time.perf_counter()
            ours = attack(model, x, y).x_adv
            t_ours += time.perf_counter() - start
            torch.manual_seed(seed)
            np.random.seed(seed)
            start = time.perf_counter()
            ref = make_ref(model, seed)(x, y)
            t_ref += time.perf_counter() - start
            for adv, stats in ((ours, ours_stats), (ref, ref_stats)):
                with torch.inference_mode():
                    pred = model(adv).argmax(1)
                fooled = pred != y
                if kind == "robust" and name.startswith("fab"):
                    fooled &= _norms(adv - x, norm) <= params["eps"][0] + 1e-6
                stats.append(
                    float(((clean == y) & ~fooled).float().mean())
                    if kind == "robust"
                    else float(fooled.float().mean())
                )
            if kind == "minnorm":
                with torch.inference_mode():
                    both = (model(ours).argmax(1) != y) & (model(ref).argmax(1) != y)
                both_norms.append(
                    (
                        float(_norms(ours - x, norm)[both].median()),
                        float(_norms(ref - x, norm)[both].median()),
                    )
                )
        row: dict[str, Any] = {
            "attack": label,
            "kind": kind,
            "seeds": len(seeds),
            "advgrid": sum(ours_stats) / len(seeds),
            "torchattacks": sum(ref_stats) / len(seeds),
            "advgrid_s": t_ours / len(seeds),
            "torchattacks_s": t_ref / len(seeds),
        }
        if both_norms:
            row["advgrid_median_norm"], row["torchattacks_median_norm"] = both_norms[0]
            row["norm"] = norm
        rows.append(row)
        print(json.dumps(row), flush=True)
    _write(rows, time.perf_counter() - began, float((clean == y).float().mean()))


def _write(rows: list[dict[str, Any]], total_s: float, clean_accuracy: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "torchattacks": ta.__version__,
        "clean_accuracy": clean_accuracy,
        "samples": 256,
        "total_s": total_s,
    }
    stem = RESULTS / "agreement-digits"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# Attack strength vs torchattacks {ta.__version__} (digits small CNN, 256 held-out "
        f"samples, clean accuracy {clean_accuracy:.1%})",
        "",
        "Fixed budget: robust accuracy (lower is stronger; random attacks: mean over 3 seeds). "
        "Minimum norm: success rate (higher is stronger) and the median norm over samples "
        f"both fool. Whole run: {total_s / 60:.1f} min.",
        "",
        "| attack | measure | advgrid | torchattacks | Δ (points) | median norm advgrid / "
        "torchattacks | advgrid s | torchattacks s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        measure = "robust acc." if r["kind"] == "robust" else "success"
        norms = (
            f"{r['advgrid_median_norm']:.3g} / {r['torchattacks_median_norm']:.3g} ({r['norm']})"
            if "norm" in r
            else ""
        )
        lines.append(
            f"| {r['attack']} | {measure} | {r['advgrid']:.1%} | {r['torchattacks']:.1%} | "
            f"{100 * (r['advgrid'] - r['torchattacks']):+.1f} | {norms} | "
            f"{r['advgrid_s']:.2f} | {r['torchattacks_s']:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Gradient-masking flags per defended model, from what its attack cells recorded.

Warning signs after Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of
Security" (ICML 2018), Section 3.1, and the checks of Croce & Hein, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks" (ICML 2020), which
flag a defense whose gradient-based evaluation a black-box attack beats. A defended model is
one dataset × model × defense entry (label) × adaptive setting; every rule reads only that
model's done attack cells (and, for (b), the same model undefended). A flag is a reason to
look closer, not a verdict.

Rules (``tol`` is :data:`TOLERANCE` plus one sample, ``1/n``, so a one-sample difference
never flags):

- ``black_box_wins`` (a): at one budget and norm, a gradient-free attack (black-box, or the
  ``noise`` baseline) leaves a robust accuracy more than ``tol`` below the lowest of the
  gradient attacks: the gradients the white-box attacks follow are not the model's.
  Targeted attacks are left out (their success is hitting a target, not any error).
- ``vanishing_gradient`` (b): on the clean inputs, the input gradient of the loss through
  what the attack ran on (``grad_zero_fraction``, ``grad_l1_median``; see
  :mod:`tasks.defenses.adaptive`) is exactly zero for more than :data:`ZERO_FRACTION` of the
  samples, or its median L1 norm is below :data:`VANISHING_RATIO` of the same model's
  undefended median.
- ``eps_not_monotone`` (c): along one attack configuration over eps (an attack that is not
  a baseline; the same parameters
  but ``eps`` and ``seed``; parameters that follow eps, like PGD's default ``step_size``,
  do not split it), robust accuracy at a larger eps is more than ``tol`` above that at a
  smaller one, or it does not fall by more than ``tol`` from the smallest eps to the
  largest while above ``tol`` at the smallest. A larger ball contains the smaller one, so
  a working attack does at least as well there.
- ``randomized`` (d): the defense declares randomness (``defense_randomized``), or two
  forward passes on the same clean input gave different logits for some samples
  (``forward_random_fraction`` > 0). Its number needs EOT to be adaptive; the reason says
  whether the cells used it.
- ``lucky_draws`` (e): for a randomized defense, an attack's robust accuracy on the one draw
  it was scored on is more than ``tol`` above its worst case over 10 fresh draws
  (``robust_accuracy_worst_of_10``): an attacker who submits an example again fools more.
- ``coarse_loses_class`` (f): for a generative purifier, the classifier's accuracy on "keep
  the coarsest level, resample the rest" samples (``generator_keep_0_accuracy``) is more
  than :data:`COARSE_GAP` below its accuracy on reconstructions: the coarse code does not
  carry the class, so resampling the finer levels cannot defend (Serez et al. 2025 rely on it).
- ``eot_not_converged`` (g): one attack configuration run at several EOT counts (an entry's
  ``eot_samples: [2, 8, 32]``) leaves a robust accuracy at the largest count more than
  ``tol`` below the next largest: the number has not stopped moving, so the largest count
  is not yet the adaptive number (attack with more draws).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.views import curves
from orchestrator.views.labels import attack_title, fmt_num
from storage.defense_queries import DefenseEvaluation
from storage.table_queries import AttackMetrics
from tasks.attacks import ATTACKS, MinNormAttack

TOLERANCE = 0.02
ZERO_FRACTION = 0.5
VANISHING_RATIO = 0.01
COARSE_GAP = 0.10

Group = tuple[str, str, str, str]  # dataset, model, defense label, adaptive


@dataclass(frozen=True)
class Flag:
    """One warning sign: its rule's name and what was seen."""

    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"flag": self.name, "reason": self.reason}


def group_of(row: DefenseEvaluation) -> Group:
    """The defended model a row belongs to."""
    return (row.dataset, row.model, row.defense[1], row.adaptive)


def flags(rows: Iterable[DefenseEvaluation]) -> dict[Group, list[Flag]]:
    """Every defended model's flags (an empty list where none applies)."""
    groups: dict[Group, list[DefenseEvaluation]] = defaultdict(list)
    for r in rows:
        groups[group_of(r)].append(r)
    undefended = {
        (g[0], g[1]): _median(rs, "grad_l1_median")
        for g, rs in groups.items()
        if rs[0].defense[0] == "none"
    }
    out = {}
    for g, rs in groups.items():
        reference = None if rs[0].defense[0] == "none" else undefended.get((g[0], g[1]))
        found = [
            *_black_box_wins(rs),
            *_vanishing(rs, reference),
            *_not_monotone(rs),
            *_randomized(rs),
            *_lucky_draws(rs),
            *_coarse_loses_class(rs),
            *_eot_not_converged(rs),
        ]
        out[g] = found
    return out


def _tol(rows: list[DefenseEvaluation]) -> float:
    n = min((r.metrics.get("n", 0.0) for r in rows), default=0.0)
    return TOLERANCE + (1 / n if n else 0.0)


def _median(rows: list[DefenseEvaluation], metric: str) -> float | None:
    values = [r.metrics[metric] for r in rows if metric in r.metrics]
    return statistics.median(values) if values else None


def _kind(attack: str) -> str | None:
    """``gradient``, ``free`` or None (not registered here, or not a fixed budget)."""
    if attack not in ATTACKS:
        return None
    cls = ATTACKS.get(attack).obj
    if issubclass(cls, MinNormAttack):
        return None
    return "free" if cls.black_box or cls.baseline else "gradient"


def _black_box_wins(rows: list[DefenseEvaluation]) -> list[Flag]:
    best: dict[tuple[float, str, str], tuple[float, str]] = {}
    for r in rows:
        kind, params = _kind(r.attack), json.loads(r.params_json)
        eps, value = params.get("eps"), r.metrics.get("robust_accuracy")
        if kind is None or not isinstance(eps, int | float) or value is None:
            continue
        norm = params.get("norm", ATTACKS.get(r.attack).params.model_fields["norm"].default)
        if params.get("targeted"):  # a targeted attack's success is not comparable
            continue
        key = (float(eps), str(norm), kind)
        if key not in best or value < best[key][0]:
            best[key] = (value, r.attack)
    out, tol = [], _tol(rows)
    for (eps, norm, kind), (free, name) in sorted(best.items()):
        grad = best.get((eps, norm, "gradient"))
        if kind == "free" and grad is not None and free < grad[0] - tol:
            out.append(
                Flag(
                    "black_box_wins",
                    f"{name} at {norm} eps {fmt_num(eps)}: {_pct(free)} robust, below "
                    f"the best gradient attack ({grad[1]}: {_pct(grad[0])})",
                )
            )
    return out


def _vanishing(rows: list[DefenseEvaluation], reference: float | None) -> list[Flag]:
    zero, median = _max(rows, "grad_zero_fraction"), _median(rows, "grad_l1_median")
    if zero is not None and zero > ZERO_FRACTION:
        reason = f"the input gradient is exactly zero on {_pct(zero)} of the clean inputs"
        return [Flag("vanishing_gradient", reason)]
    if median is not None and reference and median < VANISHING_RATIO * reference:
        return [
            Flag(
                "vanishing_gradient",
                f"median input-gradient L1 {median:.3g}, {median / reference:.2g}× the "
                f"undefended model's {reference:.3g}",
            )
        ]
    return []


def _not_monotone(rows: list[DefenseEvaluation]) -> list[Flag]:
    as_curve = [  # baselines (noise) are not expected to fall with eps
        AttackMetrics(r.cell_key, r.dataset, r.model, r.defense, r.attack, r.params_json, r.metrics)
        for r in rows
        if _kind(r.attack) is not None and not ATTACKS.get(r.attack).obj.baseline
    ]
    out, tol = [], _tol(rows)
    for c in curves.build(as_curve, "eps"):
        points = [(p.x, p.mean) for p in c.points if p.x > 0]
        if len(points) < 2:
            continue
        rises = any(b[1] > a[1] + tol for i, a in enumerate(points) for b in points[i + 1 :])
        flat = points[0][1] > tol and points[-1][1] >= points[0][1] - tol
        if rises or flat:
            shown = ", ".join(f"{fmt_num(x)}: {_pct(v)}" for x, v in points)
            what = "rises" if rises else "does not fall"
            title = attack_title(c.attack, c.params)
            out.append(Flag("eps_not_monotone", f"{title}: robust accuracy {what} ({shown})"))
    return out


def _randomized(rows: list[DefenseEvaluation]) -> list[Flag]:
    declared = _max(rows, "defense_randomized") or 0.0
    measured = _max(rows, "forward_random_fraction") or 0.0
    if not declared and not measured:
        return []
    seen = "declared randomized" if declared else "not declared randomized"
    seen += f"; two forward passes differ on {_pct(measured)} of the clean inputs"
    eot = "eot" in rows[0].adaptive
    seen += "; attacked with EOT" if eot else "; attacked without EOT: not an adaptive number"
    return [Flag("randomized", seen)]


def _lucky_draws(rows: list[DefenseEvaluation]) -> list[Flag]:
    tol, seen = _tol(rows), []
    for r in rows:
        worst, once = r.metrics.get("robust_accuracy_worst_of_10"), r.metrics.get("robust_accuracy")
        if worst is not None and once is not None and once - worst > tol:
            title = attack_title(r.attack, json.loads(r.params_json))
            seen.append(f"{title}: {_pct(once)} on one draw, {_pct(worst)} worst of 10")
    return [Flag("lucky_draws", "; ".join(seen))] if seen else []


def _coarse_loses_class(rows: list[DefenseEvaluation]) -> list[Flag]:
    keep, rec = _max(rows, "generator_keep_0_accuracy"), _max(rows, "generator_recon_accuracy")
    if keep is None or rec is None or keep >= rec - COARSE_GAP:
        return []
    reason = (
        f"the classifier is right on {_pct(keep)} of samples that keep the generator's coarsest "
        f"level and resample the rest, against {_pct(rec)} of its reconstructions: the coarse "
        "code does not keep the class"
    )
    return [Flag("coarse_loses_class", reason)]


def _eot_not_converged(rows: list[DefenseEvaluation]) -> list[Flag]:
    by_attack: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for r in rows:
        eot, robust = r.metrics.get("eot_samples"), r.metrics.get("robust_accuracy")
        if eot is not None and robust is not None:
            by_attack[r.attack, r.params_json][eot] = robust
    tol, seen = _tol(rows), []
    for (attack, params), curve in sorted(by_attack.items()):
        counts = sorted(curve)
        if len(counts) >= 2 and curve[counts[-1]] < curve[counts[-2]] - tol:
            shown = ", ".join(f"{_pct(curve[c])} at EOT {fmt_num(c)}" for c in counts)
            seen.append(f"{attack_title(attack, json.loads(params))}: {shown}")
    if not seen:
        return []
    return [Flag("eot_not_converged", "; ".join(seen) + ": still falling, attack with more draws")]


def _max(rows: list[DefenseEvaluation], metric: str) -> float | None:
    values = [r.metrics[metric] for r in rows if metric in r.metrics]
    return max(values) if values else None


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"

"""Metrics of attack and transfer cells, computed from stored per-sample values.

Denominators are part of the names:

- ``clean_accuracy``, ``robust_accuracy``: over all ``n`` evaluated samples.
- ``success_rate``: over all samples (untargeted: misclassified; targeted: hit the target).
- ``success_rate_on_correct``: over the ``n_correct`` samples the model classified correctly
  when clean (the attack success rate most papers report).
- Transfer: ``fooled_<d>`` / ``n_<d>`` and ``transfer_rate_<d>`` for each denominator ``d``:
  ``all`` (every adversarial example), ``source_success`` (those that fooled the source),
  ``target_correct`` (those whose clean sample the target classified correctly). A rate whose
  denominator is zero is left out rather than stored as a made-up number.
"""

from __future__ import annotations

import torch


def _norm_stats(delta: torch.Tensor) -> dict[str, float]:
    flat = delta.flatten(1)
    out = {}
    for name, values in (
        ("l0", (flat.abs() > 1e-12).sum(1).float()),
        ("l2", flat.norm(p=2, dim=1)),
        ("linf", flat.abs().amax(1)),
    ):
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_median"] = float(values.median())
    return out


def budget_metrics(
    x: torch.Tensor, t: dict[str, torch.Tensor], norm: str, budgets: list[float]
) -> dict[str, float]:
    """Minimum-norm attacks: the median norm of successful perturbations and the robust
    accuracy at each budget (correct when clean and not fooled within the budget)."""
    flat = (t["x_adv"] - x).flatten(1)
    norms = {
        "l2": flat.norm(p=2, dim=1),
        "linf": flat.abs().amax(1),
        "l1": flat.abs().sum(1),
        "l0": (flat.abs() > 1e-12).sum(1).float(),
    }[norm]
    success, correct = t["success"].bool(), t["pred_clean"] == t["labels"]
    out = {}
    if success.any():
        out[f"adv_{norm}_median"] = float(norms[success].median())
    for b in budgets:
        fooled = success & (norms <= b + 1e-9)
        out[f"robust_accuracy_eps_{b:g}"] = float((correct & ~fooled).float().mean())
    return out


def attack_metrics(
    x: torch.Tensor, t: dict[str, torch.Tensor], *, wall_s: float
) -> dict[str, float]:
    """Metrics of an attack cell from clean inputs ``x`` and its artifact tensors ``t``."""
    labels, success = t["labels"], t["success"]
    n = len(labels)
    correct = t["pred_clean"] == labels
    metrics = {
        "n": float(n),
        "n_correct": float(correct.sum()),
        "clean_accuracy": float(correct.float().mean()),
        "robust_accuracy": float((t["pred_adv"] == labels).float().mean()),
        "success_rate": float(success.float().mean()),
        "wall_s": wall_s,
        "samples_per_s": n / wall_s if wall_s > 0 else 0.0,
        **_norm_stats(t["x_adv"] - x),
    }
    if correct.any():
        metrics["success_rate_on_correct"] = float(success[correct].float().mean())
    return metrics


def transfer_metrics(
    adv: dict[str, torch.Tensor], pred_clean: torch.Tensor, pred_adv: torch.Tensor
) -> dict[str, float]:
    """Metrics of a transfer cell: target predictions on clean and adversarial inputs."""
    labels = adv["labels"]
    fooled = pred_adv != labels
    masks = {
        "all": torch.ones_like(fooled),
        "source_success": adv["success"].bool(),
        "target_correct": pred_clean == labels,
    }
    metrics = {
        "target_clean_accuracy": float((pred_clean == labels).float().mean()),
        "target_robust_accuracy": float((~fooled).float().mean()),
    }
    for name, mask in masks.items():
        n = int(mask.sum())
        metrics[f"n_{name}"] = float(n)
        metrics[f"fooled_{name}"] = float((fooled & mask).sum())
        if n:
            metrics[f"transfer_rate_{name}"] = float((fooled & mask).sum()) / n
    if "target" in adv:
        metrics["target_hit_rate"] = float((pred_adv == adv["target"]).float().mean())
    return metrics

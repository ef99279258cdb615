"""How the tables name things: a defended model (``mlp+jpeg_75``), an attack configuration
(``pgd(norm=linf, eps=0.03137, steps=10)``) and a number."""

from __future__ import annotations

from typing import Any


def model_label(model: str, defense: tuple[str, str]) -> str:
    """``model`` or ``model+defense label`` for a defended model."""
    name, label = defense
    return model if name == "none" else f"{model}+{label}"


def attack_title(attack: str, params: dict[str, Any]) -> str:
    """``pgd(norm=linf, eps=0.03137, steps=10)``: the parameters a reader tells apart."""
    shown = {
        k: v
        for k, v in params.items()
        if k in ("norm", "eps", "steps", "max_queries", "kind", "severity")
        or (k == "targeted" and v)
        or (k == "levels" and v != "all")
        or (k == "restarts" and v != 1)
        or (k == "seed" and v != 0)
    }
    if not shown:
        return attack
    return f"{attack}({', '.join(f'{k}={fmt_num(v)}' for k, v in shown.items())})"


def fmt_num(v: Any) -> str:
    """A float to four significant digits; anything else as ``str`` has it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)

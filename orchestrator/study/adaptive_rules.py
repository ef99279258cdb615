"""Adaptive evaluation in a study file: a defense's ``adaptive:`` and ``eot_samples:`` keys.

They say how attack cells adapt to the defense (``none``, ``bpda``, ``eot``, ``bpda+eot``;
:mod:`tasks.defenses.adaptive` does the work) and are not defense parameters: :func:`take`
removes them before the defense's params model sees the entry. The rules, checked before
anything runs against what each defense declares (``differentiable``, ``randomized``, an
input transform) and the study's attacks (a *gradient attack* is any attack that is neither
black-box nor a baseline; ``square``, ``spsa``, ``one_pixel`` and ``noise`` are
gradient-free):

Errors:
    - A gradient attack against a defense that is not differentiable, without ``bpda``:
      autograd has no true gradient through it, so the attack would report obfuscated
      gradients as robustness (Athalye, Carlini & Wagner, ICML 2018). An explicit
      ``adaptive: none`` runs it anyway, to record that non-adaptive number on purpose
      (with a note); the planner records it by itself beside every adapted attack cell.
    - ``eot`` on a deterministic defense: every draw is the same, so EOT would cost
      ``eot_samples`` times as many passes for the very same gradient. An error rather than
      a warning because it also changes cell keys: such cells would be computed again, at
      that cost, for nothing.
    - ``bpda`` on a defense without an input transform (``none``, model wrappers): there is
      no transform to replace by the identity.
    - ``eot_samples`` without ``eot``; ``eot_samples`` below 2 (one draw averages nothing).

``eot_samples`` may be a list of distinct counts (``[2, 8, 32]``): the entry is then one
defended model per count under one label, every attack run at each, and ``advgrid defenses``
flags ``eot_not_converged`` where the number still falls at the largest count.

Notes (printed by ``advgrid plan`` and ``advgrid run``, never errors):
    - ``adaptive: none`` said on a non-differentiable defense under gradient attacks: their
      robust accuracy is the non-adaptive number, not robustness.
    - A randomized defense without ``eot`` under gradient attacks: allowed, but each step
      follows one random draw, so its robust accuracy is not an adaptive number.
    - ``bpda`` on a differentiable defense: the identity replaces the true gradient, which
      is usually a weaker attack.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, field_validator

from orchestrator.study.problems import Problems
from orchestrator.study.schema import Resolved
from tasks.attacks import ATTACKS
from tasks.defenses import DEFENSES
from tasks.defenses.adaptive import DEFAULT_EOT_SAMPLES

KEYS = ("adaptive", "eot_samples")
INVALID = "invalid"


class AdaptiveChoice(BaseModel):
    """The adaptive keys of one defense entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    adaptive: Literal["none", "bpda", "eot", "bpda+eot"] | None = None
    eot_samples: StrictInt | list[StrictInt] | None = None

    @field_validator("eot_samples")
    @classmethod
    def _counts(cls, value: int | list[int] | None) -> int | list[int] | None:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(
                "a list of eot_samples is a convergence check: give distinct counts, e.g. "
                "[2, 8, 32]"
            )
        for n in value if isinstance(value, list) else [] if value is None else [value]:
            if n < 2:
                raise ValueError("must be ≥ 2: one draw averages nothing")
        return value


def take(values: dict, loc: tuple, problems: Problems) -> tuple[str, tuple[int | None, ...], bool]:
    """Remove the adaptive keys from a defense entry's ``values``; ``(adaptive,
    eot_samples, given)``: ``eot_samples`` one count per defended model the entry makes (a
    list ``[2, 8, 32]`` is three, the EOT convergence check), defaulting to 10 under eot and
    None otherwise; ``given`` whether the entry says ``adaptive:`` at all."""
    keys = {k: values.pop(k) for k in KEYS if k in values}
    try:
        choice = AdaptiveChoice.model_validate(keys)
    except ValidationError as exc:
        problems.add_pydantic(exc, loc, AdaptiveChoice)
        return INVALID, (None,), True  # the study is refused; no rule is checked on it
    method, given = choice.adaptive or "none", choice.adaptive is not None
    if "eot" not in method:
        if choice.eot_samples is not None:
            problems.add(
                loc + ("eot_samples",),
                "eot_samples applies only with `adaptive: eot` or `adaptive: bpda+eot` "
                f"(got adaptive: {method})",
            )
        return method, (None,), given
    counts = choice.eot_samples or DEFAULT_EOT_SAMPLES
    return method, tuple(counts) if isinstance(counts, list) else (counts,), given


def gradient_free() -> list[str]:
    """Registered attacks that use no gradient: black-box attacks and baselines."""
    return sorted(e.name for e in ATTACKS if e.obj.black_box or e.obj.baseline)


def check(
    defenses: list[tuple[int, Resolved]],
    attacks: list[tuple[int, str]],
    problems: Problems,
    notes: Problems,
) -> None:
    """Check each defense's adaptive keys against its declarations and the study's attacks.

    Args:
        defenses: ``(entry index, resolved defense)`` for every valid defense entry.
        attacks: ``(entry index, registry name)`` for every attack entry with a known name.
        problems: Where errors go.
        notes: Where notes go (see the module docstring).
    """
    grads = [(j, name) for j, name in attacks if is_gradient(name)]
    for i, d in defenses:
        if d.adaptive != INVALID:
            _errors(i, d, grads, problems)
            _notes(i, d, grads, notes)


def is_gradient(name: str) -> bool:
    """Whether the registered attack ``name`` follows the defended model's gradients
    (neither black-box, nor a baseline, nor one that never runs the defense)."""
    cls = ATTACKS.get(name).obj
    return not (cls.black_box or cls.baseline) and sees_defense(name)


def sees_defense(name: str) -> bool:
    """Whether the registered attack ``name`` runs the defended model while it searches;
    ``on_range`` reads the generator and the classifier off it and never runs the defense,
    so BPDA and EOT change nothing it does (its cells need no adaptive twin)."""
    return bool(getattr(ATTACKS.get(name).obj, "sees_defense", True))


def _names(grads: list[tuple[int, str]]) -> str:
    return ", ".join(f"attacks[{j}] {name}" for j, name in grads)


def _errors(i: int, d: Resolved, grads: list[tuple[int, str]], problems: Problems) -> None:
    cls = DEFENSES.get(d.name).obj
    bpda, eot = "bpda" in d.adaptive, "eot" in d.adaptive
    loc, at = ("defenses", i), ("defenses", i, "adaptive")
    if bpda and not callable(getattr(cls, "transform", None)):
        what = "is the undefended model" if d.name == "none" else "has no input transform"
        problems.add(
            at,
            "bpda replaces a defense's input transform by the identity on the backward pass, "
            f"but {d.name} {what}: there is nothing to replace; remove bpda from `adaptive`",
        )
    if eot and not cls.randomized:
        problems.add(
            at,
            f"eot averages over a defense's random draws, but {d.name} is deterministic: every "
            f"draw is the same, so `adaptive: {d.adaptive}` would cost eot_samples times as "
            "many passes for the same gradient; use "
            + ("`adaptive: bpda`" if bpda or not cls.differentiable else "`adaptive: none`"),
        )
    on_purpose = d.adaptive == "none" and d.adaptive_given
    if grads and not cls.differentiable and not bpda and not on_purpose:
        problems.add(
            loc,
            f"{d.name} is not differentiable: a gradient attack through it ({_names(grads)}) "
            "sees no true gradient and reports obfuscated gradients as robustness; add "
            "`adaptive: bpda` (or `bpda+eot`) to the defense, attack it only with "
            f"gradient-free attacks ({', '.join(gradient_free())}), or say `adaptive: none` "
            "to record that non-adaptive number on purpose",
        )


def _notes(i: int, d: Resolved, grads: list[tuple[int, str]], notes: Problems) -> None:
    cls = DEFENSES.get(d.name).obj
    bpda, eot = "bpda" in d.adaptive, "eot" in d.adaptive
    loc, at = ("defenses", i), ("defenses", i, "adaptive")
    if grads and cls.randomized and not eot:
        notes.add(
            loc,
            f"{d.label} is randomized and has no `adaptive: eot`: the gradient attacks "
            f"({_names(grads)}) follow one random draw per step, so the robust accuracy they "
            "report for it is not an adaptive number; add `adaptive: eot` (or `bpda+eot`) "
            "for expectation over transformation",
        )
    if grads and not cls.differentiable and d.adaptive == "none" and d.adaptive_given:
        notes.add(
            at,
            f"{d.label} is not differentiable and `adaptive: none`: the gradient attacks "
            f"({_names(grads)}) follow autograd's masked gradient through it (zero almost "
            "everywhere), so the robust accuracy they report is the non-adaptive number, not "
            "robustness; an entry with `adaptive: bpda` (or `bpda+eot`) records both",
        )
    if bpda and cls.differentiable and d.name != "none":
        notes.add(
            at,
            f"{d.label} is differentiable: bpda replaces its true gradient by the identity's, "
            "which is usually a weaker attack than plain autograd through it",
        )

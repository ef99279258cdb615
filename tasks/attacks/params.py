"""Params models of attacks: the fields every attack shares, the two kinds of budget, and the
rule that gives an unset ``step_size`` its value.

``eps`` means one thing per kind: one budget for a fixed-budget attack
(:class:`FixedBudgetParams`), the list of budgets at which success is counted for a
minimum-norm or sparse attack (:class:`MinNormParams`). ``norm`` is a field of every attack
(its type lists the norms that attack supports) and which goals an attack serves is the
``goals`` of its params model: each is declared once, where a study's values are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from tasks.params import Budget, Norm, Number
from tasks.registry import Params

Goals = Literal["either", "untargeted", "targeted"]


class AttackParams(Params):
    """Parameters every attack shares; ``eps`` is declared by the two kinds of budget."""

    targeted: bool = False
    target: Literal["random", "least_likely"] | int = Field(
        "random", description="target class rule for targeted attacks"
    )
    seed: int = 0
    norm: Norm = "linf"  # narrowed by each attack to the norms it supports

    # whether ``targeted`` may be true, false or either; ``refusal`` says why not
    goals: ClassVar[Goals] = "either"
    refusal: ClassVar[str] = ""

    @field_validator("targeted")
    @classmethod
    def _goal_served(cls, value: bool) -> bool:
        if cls.goals != "either" and value != (cls.goals == "targeted"):
            raise ValueError(cls.refusal)
        return value


# The budgets sit in mixins listed after AttackParams so that pydantic, which orders fields
# from the most basic class up, puts ``eps`` first: params dumps (and so study files, cell
# params and `advgrid list attacks`) keep the order they have always had.
class _OneBudget(Params):
    eps: Number = Field(8 / 255, ge=0, description="perturbation budget in [0, 1] pixel units")


class _Budgets(Params):
    eps: list[Budget] = Field(
        default_factory=list, description="budgets at which success is counted"
    )

    @field_validator("eps", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return value if isinstance(value, list) else [value]


class FixedBudgetParams(AttackParams, _OneBudget):
    """Attacks with a fixed budget: ``eps`` is the radius of the ball, in the attack's norm."""


class MinNormParams(AttackParams, _Budgets):
    """Attacks without a fixed budget (minimum-norm, sparse): ``eps`` lists the budgets, in
    the attack's norm, at which success is counted; a single number is one budget."""


class StepRule(Params):
    """Params whose ``step_size`` may be left unset, with the one rule that then sets it.

    Code reads :attr:`resolved_step_size`, always a float. A subclass gives the rule
    (:meth:`default_step_size`) and says with ``fill_step_size`` whether validation also
    writes it into ``step_size``: where it always has (PGD, MI-FGSM, the training
    defenses), the params dump, and with it the cell key, shows the step taken; where it
    has not (UAP), an unset ``step_size`` stays null in the dump.
    """

    if TYPE_CHECKING:  # declared by each subclass, in its own order and with its defaults
        eps: float
        step_size: float | None

    fill_step_size: ClassVar[bool] = True

    def default_step_size(self) -> float:
        """The step taken when ``step_size`` is unset."""
        raise NotImplementedError

    @property
    def resolved_step_size(self) -> float:
        """``step_size``, or the default rule's value when it is unset."""
        return self.default_step_size() if self.step_size is None else float(self.step_size)

    @model_validator(mode="after")
    def _fill_step_size(self) -> Self:
        if self.fill_step_size and self.step_size is None:
            object.__setattr__(self, "step_size", self.default_step_size())
        return self


class PGDStepRule(StepRule):
    """An unset ``step_size`` is ``2.5 · eps / steps`` (Madry et al.'s rule), filled in."""

    if TYPE_CHECKING:
        steps: int

    def default_step_size(self) -> float:
        return 2.5 * self.eps / self.steps

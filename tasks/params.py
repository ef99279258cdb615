"""Shared parameter types: one name and one parser per quantity."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_number(value: object) -> object:
    """Accept ``8/255``-style fractions and numeric strings as floats; leave the rest.

    Only ``a/b`` with two non-negative literals is understood: nothing is evaluated.
    """
    if isinstance(value, str):
        text = value.strip()
        match = _FRACTION.match(text)
        if match:
            num, den = float(match.group(1)), float(match.group(2))
            if den == 0:
                raise ValueError(f"division by zero in {value!r}")
            return num / den
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"expected a number or a fraction such as 8/255, got {value!r}"
            ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(parse_number)]
"""A float that also accepts ``"8/255"``."""

Budget = Annotated[float, BeforeValidator(parse_number), Field(ge=0)]
"""A non-negative :data:`Number`: one budget of a list of budgets."""

Norm = Literal["linf", "l2", "l1", "l0"]

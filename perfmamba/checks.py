"""Argument checks shared by the configs: each error names the value, what is allowed and what it got.

`error` lets a file reader raise its own ValueError subclass with the same wording.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any


def check_at_least(name: str, value: Any, minimum: float = 1, *, integer: bool = True, optional: bool = False,
                   why: str = "", error: type[ValueError] = ValueError) -> None:
    """`value` >= `minimum` (an int, not a bool, when `integer`; or None when `optional`)."""
    if optional and value is None:
        return
    wrong_type = integer and (isinstance(value, bool) or not isinstance(value, int))
    if wrong_type or not _is_number(value) or not value >= minimum:
        kind = "an integer " if integer else ""
        none = "None or " if optional else ""
        raise error(f"{name} must be {none}{kind}>= {minimum}{why}, got {value!r}")


def check_in_range(name: str, value: Any, low: float, high: float, *, closed: str = "[)", why: str = "",
                   error: type[ValueError] = ValueError) -> None:
    """`value` a finite number within low..high, each end closed ("[", "]") or open ("(", ")")."""
    ok = _is_number(value) and math.isfinite(value)
    above = ok and (value >= low if closed[0] == "[" else value > low)
    below = ok and (value <= high if closed[1] == "]" else value < high)
    if not (above and below):
        raise error(f"{name} must be in {closed[0]}{low:g}, {high:g}{closed[1]}{why}, got {value!r}")


def check_choice(name: str, value: Any, choices: Collection[Any], *, error: type[ValueError] = ValueError) -> None:
    """`value` one of `choices`."""
    if value not in choices:
        raise error(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_relative_change(name: str, value: Any, *, error: type[ValueError] = ValueError) -> float:
    """A tolerated relative change (0.02 = 2%), as the gate and the thresholds file take one; returned as a float."""
    if not _is_number(value) or not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}")
    check_in_range(name, value, 0, 10, why=" (a relative change: 0.02 = 2%)", error=error)
    return float(value)

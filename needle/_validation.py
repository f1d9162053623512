"""Argument checks shared by the layers, optimizers and schedulers.

Each raises where the user passed the value, naming the owner (layer or optimizer),
the argument, the value and the accepted range.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


def check_positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` as an int > 0, or a ValueError naming ``owner`` and ``name``.

    >>> check_positive_int("Linear", "in_features", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_real(owner: str, name: str, value: Any, *, low: float = -math.inf,
               high: float = math.inf, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float within [low, high] (ends excluded where ``*_open``).

    NaN is always rejected. A non-number raises TypeError, a value out of range ValueError.

    >>> check_real("Adam", "beta1", 0.9, low=0.0, high=1.0, high_open=True)
    0.9
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or math.isnan(value):
        left = "(" if low_open or low == -math.inf else "["
        right = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{owner}: {name} must be in {left}{low}, {high}{right}, got {value!r}")
    return value

"""Argument checks shared by the layers, optimizers and schedulers.

Each raises where the user passed the value, naming the owner (layer or optimizer),
the argument, the value and the accepted range.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` as an int > 0, or a ValueError naming ``owner`` and ``name``.

    >>> check_positive_int("Linear", "in_features", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_real(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
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


#: The largest product of an array's dimensions: element indices, strides and offsets are
#: int64 in the compiled kernels, so a bigger shape could only fail later in the binding.
MAX_ELEMENTS = 2**63 - 1


def check_shape(owner: str, shape: Any) -> tuple[int, ...]:
    """``shape`` (an int or a sequence of ints) as a tuple of ints >= 0 that int64 can index.

    A non-integer entry raises TypeError (as NumPy's); a negative one, or dimensions whose
    product (zeros left out, so that every stride fits too) exceeds :data:`MAX_ELEMENTS`,
    a ValueError naming ``owner`` and the shape.

    >>> check_shape("empty", [2, 3])
    (2, 3)
    """
    if type(shape) is not tuple:  # a tuple is the common case: skip the ABC checks
        if isinstance(shape, numbers.Integral):
            shape = (shape,)
        elif not hasattr(shape, "__iter__"):
            raise TypeError(
                f"{owner}: shape must be an int or a sequence of ints, got {type(shape).__name__}"
            )
        shape = tuple(shape)
    span, plain = 1, True
    for dim in shape:  # one pass: the NDArray's broadcasts check their shape on every op
        if type(dim) is not int:
            if not isinstance(dim, numbers.Integral):
                raise TypeError(f"{owner}: shape entries must be ints, got {dim!r} in {shape!r}")
            plain = False
        if dim < 0:
            raise ValueError(
                f"{owner}: negative dimension in shape {shape}; dimensions must be >= 0"
            )
        if dim:
            span *= dim
    if span > MAX_ELEMENTS:
        raise ValueError(
            f"{owner}: shape {shape} is too large: its dimensions multiply to {span}, more than "
            f"int64 indices reach ({MAX_ELEMENTS})"
        )
    return shape if plain else tuple(int(dim) for dim in shape)


def check_indices(owner: str, what: str, values: Any, limit: int, context: str = "") -> np.ndarray:
    """``values`` (integral numbers, any shape) as an int64 array, each in [0, ``limit``).

    Floats are accepted when integral (token batches are float32 tensors). The range is
    checked on the values as passed, before the cast to int64, so one that int64 cannot
    hold (``1e20``, ``2**64``) is reported as itself rather than as its wrapped-around cast.
    Raises TypeError for non-numbers and ValueError naming ``owner``, ``what`` (e.g.
    "labels"), the offending values and the valid range (``context`` follows the range).

    >>> check_indices("one_hot", "labels", [2.0, 0], 3).tolist()
    [2, 0]
    """
    array = np.asarray(values)
    # NumPy keeps Python ints beyond uint64 as objects; they compare exactly below
    big_ints = array.dtype.kind == "O" and all(isinstance(v, numbers.Integral) for v in array.flat)
    if array.dtype.kind not in "iuf" and not big_ints:
        raise TypeError(f"{owner}: {what} must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ValueError(f"{owner}: {what} must be integers, got {array.reshape(-1)[:8]!r}")
    bad = array[(array < 0) | (array >= limit)]
    if bad.size:
        raise ValueError(
            f"{owner}: {what} must be in [0, {limit}){context}, got "
            f"{np.unique(bad)[:8].tolist()} (out of range)"
        )
    return array.astype(np.int64)

"""The five element types of an NDArray and how scalars and dtypes combine (NumPy's rules)."""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np


class DType(str):
    """A dtype name (``"float32"``, ``"float64"``, ``"int32"``, ``"int64"``, ``"bool"``) that
    also equals NumPy's spellings.

    ``a.dtype == "float32"``, ``== np.float32`` and ``== np.dtype("float32")`` all hold.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.__eq__(self, other) or _spelled(other) == str(self)
        return _spelled(other) == str(self)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


def _spelled(value: Any) -> str | None:
    try:
        return np.dtype(value).name
    except TypeError:
        return None


_FLOAT32, _FLOAT64 = DType("float32"), DType("float64")
_INT32, _INT64, _BOOL = DType("int32"), DType("int64"), DType("bool")
_DTYPES: dict[str, DType] = {d: d for d in (_FLOAT32, _FLOAT64, _INT32, _INT64, _BOOL)}


def _dtype(dtype: Any) -> DType:
    """``dtype`` as one of the supported DTypes, or a TypeError naming them."""
    try:  # the common case: "float32"/"float64" strings (the handles' own dtype)
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        pass
    name = _spelled(dtype) if dtype is not None else None
    if name is None or name not in _DTYPES:
        raise TypeError(
            f"NDArray: dtype {dtype!r} is not supported; use float32, float64, int32, int64 or "
            f"bool (convert other data with dtype='float32' or dtype='int64')"
        )
    return _DTYPES[name]


def _is_float(dtype: DType) -> bool:
    return dtype is _FLOAT32 or dtype is _FLOAT64


def _scalar_value(owner: str, value: Any) -> float | int | bool:
    """A Python/NumPy real scalar as a Python float, int or bool, else a TypeError."""
    if type(value) is float:  # the hot path: no ABC check
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray):
        raise TypeError(
            f"NDArray {owner}: got a NumPy array operand of shape {value.shape}; wrap it with "
            f"nd.array(x, device=...) first"
        )
    raise TypeError(
        f"NDArray {owner}: expected an NDArray or a real scalar, got {type(value).__name__}"
    )


def _cast_scalar(value: float | int | bool, dtype: DType) -> float | int | bool:
    """``value`` converted to ``dtype``'s Python type as NumPy casts it (1.5 -> 1 for ints)."""
    if _is_float(dtype):
        return float(value)
    return np.dtype(dtype).type(value).item()


@functools.lru_cache(maxsize=64)
def _promoted(a: DType, b: DType) -> DType:
    """NumPy's common dtype of two supported dtypes (float32 with int32 gives float64)."""
    return _DTYPES[np.promote_types(a, b).name]

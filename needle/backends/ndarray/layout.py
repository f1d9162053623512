"""Shape and stride arithmetic of strided arrays: broadcasting, axes, views and reshapes.

Pure functions of shapes and strides (tuples of ints, in elements); no buffers.
"""

from __future__ import annotations

import builtins
import functools
import math
import numbers
from collections.abc import Iterable
from typing import Any

from ..._validation import MAX_ELEMENTS, check_shape

Shape = tuple[int, ...]


def prod(values: Iterable[int]) -> int:
    """The integer product of ``values``; 1 when empty.

    >>> prod((2, 3, 4)), prod(())
    (24, 1)
    """
    result = 1
    for value in values:
        result *= value
    return result


@functools.lru_cache(maxsize=4096)
def _compact_strides(shape: Shape) -> Shape:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _normalize_axes(owner: str, axes: Any, ndim: int) -> tuple[int, ...]:
    """``axes`` (None: all; an int; a tuple/list) as non-negative ints in the given order."""
    if axes is None:
        return tuple(range(ndim))
    if type(axes) is int or isinstance(axes, numbers.Integral):
        axes = (axes,)
    result = []
    for axis in axes:
        integral = type(axis) is int or isinstance(axis, numbers.Integral)
        if not integral or not -ndim <= axis < ndim:
            raise ValueError(
                f"{owner}: axis {axis!r} is out of range for an array with {ndim} dimensions"
            )
        result.append(int(axis) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"{owner}: repeated axis in {tuple(axes)}")
    return tuple(result)


def _broadcast_shape(owner: str, a: Shape, b: Shape) -> Shape:
    """NumPy's broadcast of two shapes, or a ValueError naming both."""
    if a == b:
        return a
    ndim = builtins.max(len(a), len(b))
    a1, b1 = (1,) * (ndim - len(a)) + a, (1,) * (ndim - len(b)) + b
    out = []
    for x, y in zip(a1, b1):
        if x != y and x != 1 and y != 1:
            raise ValueError(
                f"NDArray {owner}: shapes {a} and {b} cannot be broadcast together "
                f"(dimensions must be equal or 1)"
            )
        out.append(y if x == 1 else x)
    if math.prod(out) > MAX_ELEMENTS:  # each shape fits, their broadcast may not
        raise ValueError(
            f"NDArray {owner}: shapes {a} and {b} broadcast to {tuple(out)}, more elements "
            f"than int64 indices reach ({MAX_ELEMENTS})"
        )
    return tuple(out)


def _check_view(owner: str, shape: Shape, strides: Shape, offset: int, size: int) -> None:
    """A ValueError unless the view ``(shape, strides, offset)`` stays inside a buffer of
    ``size`` elements (an empty view reaches nothing)."""
    if len(strides) != len(shape) or not all(isinstance(s, numbers.Integral) for s in strides):
        raise ValueError(
            f"{owner}: strides {strides} must be one int per dimension of shape {shape}"
        )
    if not isinstance(offset, numbers.Integral):
        raise ValueError(f"{owner}: offset must be an int, got {offset!r}")
    if not prod(shape):
        return
    low = offset + builtins.sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    high = offset + builtins.sum((n - 1) * s for n, s in zip(shape, strides) if s > 0)
    if low < 0 or high >= size:
        raise ValueError(
            f"{owner}: shape {shape}, strides {strides} at offset {offset} reach elements "
            f"{low}..{high} of a buffer of {size}"
        )


def _distinct_elements(shape: Shape, strides: Shape) -> bool:
    """True when no two indices of the view reach the same element: sorted by |stride|, each
    axis steps past everything the smaller axes span."""
    span = 1
    for step, size in sorted((abs(st), n) for n, st in zip(shape, strides) if n > 1):
        if step < span:
            return False
        span = step * size
    return True


def _broadcasts_to(shape: Shape, target: Shape) -> bool:
    """Whether a setitem value of ``shape`` broadcasts to ``target`` (NumPy's rule, which
    also ignores extra leading length-1 axes of the value)."""
    extra = len(shape) - len(target)
    if extra > 0 and any(n != 1 for n in shape[:extra]):
        return False
    return all(n == t or n == 1 for n, t in zip(reversed(shape), reversed(target)))


def _numpy_index_shape(shape: Shape, index: Any) -> Shape:
    """NumPy's shape of ``a[index]`` given the NDArray's ``shape`` for it: the axes indexed
    by an int dropped."""
    index = index if isinstance(index, tuple) else (index,)
    return tuple(
        n
        for n, idx in zip(shape, index + (slice(None),) * (len(shape) - len(index)))
        if isinstance(idx, slice)
    )


def _resolve_reshape(shape: Shape, new_shape: Any) -> Shape:
    """``new_shape`` with its -1 resolved, holding as many elements as ``shape``."""
    new_shape = _shape_tuple_allowing_minus_one(new_shape)
    size = prod(shape)
    known = prod(s for s in new_shape if s != -1)
    if new_shape.count(-1) > 1:
        raise ValueError(f"reshape: at most one -1 in {new_shape}")
    if -1 in new_shape:
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape {shape} ({size} elements) to {new_shape}")
        new_shape = tuple(size // known if s == -1 else s for s in new_shape)
    elif known != size:
        raise ValueError(
            f"reshape: cannot reshape {shape} ({size} elements) to {new_shape} ({known} elements)"
        )
    if not size:  # no elements: the equal count bounds no dimension
        check_shape("reshape", new_shape)
    return new_shape


def _shape_tuple_allowing_minus_one(shape: Any) -> Shape:
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    if any(not isinstance(s, numbers.Integral) or s < -1 for s in shape):
        raise ValueError(f"reshape: the new shape {shape} must hold ints >= 0 (one may be -1)")
    return tuple(int(s) for s in shape)

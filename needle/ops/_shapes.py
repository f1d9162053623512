"""Shape rules shared by the ops: validation with clear errors, and broadcasting.

Everything here is plain shape arithmetic on tuples (no arrays), so it serves every
backend. Errors are raised in the op's *function*, before anything is computed, and
name the op, the shapes received and what was expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .._types import Shape
from .._validation import check_shape


def broadcast_shapes(op_name: str, *shapes: Shape) -> Shape:
    """The NumPy broadcast of ``shapes``, or a ValueError naming ``op_name`` and the shapes.

    >>> broadcast_shapes("add", (2, 1), (3,))
    (2, 3)
    """
    ndim = max(len(s) for s in shapes)
    result = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            shown = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(
                f"{op_name}: shapes {shown} cannot be broadcast together (axis {axis} has sizes "
                f"{sorted(sizes)}); each dimension must match or be 1 — reshape or "
                f"broadcast_to first"
            )
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def check_broadcastable_to(op_name: str, shape: Shape, target: Shape) -> None:
    """Raise unless ``shape`` broadcasts to exactly ``target`` (NumPy's broadcast_to rule)."""
    ok = len(target) >= len(shape) and all(
        s == t or s == 1 for s, t in zip(reversed(shape), reversed(target))
    )
    if not ok:
        raise ValueError(
            f"{op_name}: cannot broadcast shape {tuple(shape)} to {tuple(target)}; "
            f"trailing dimensions must be equal or 1"
        )


def normalize_axes(op_name: str, axes, ndim: int) -> tuple[int, ...]:
    """``axes`` (None: all; an int; a tuple) as a sorted tuple of non-negative axes.

    >>> normalize_axes("summation", -1, 3)
    (2,)
    """
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, numbers.Integral) or not hasattr(axes, "__iter__"):
        axes = (axes,)
    result = []
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"{op_name}: axes must be ints, got {axis!r} in {axes!r}")
        if not -ndim <= int(axis) < ndim:
            raise ValueError(
                f"{op_name}: axis {axis!r} is out of range for a tensor with {ndim} dimensions "
                f"(valid: {-ndim} to {ndim - 1})"
            )
        result.append(int(axis) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"{op_name}: repeated axis in {tuple(axes)}")
    return tuple(sorted(result))


def keepdims_shape(shape: Shape, axes: Sequence[int]) -> Shape:
    """``shape`` with each axis in ``axes`` set to 1 (the shape of a reduction with keepdims)."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def reshape_target(op_name: str, shape: Shape, target: Shape) -> Shape:
    """``target`` with a ``-1`` resolved, or a ValueError if the sizes differ."""
    size = 1
    for s in shape:
        size *= s
    target = tuple(target)
    if any(not isinstance(t, numbers.Integral) or t < -1 for t in target):
        raise ValueError(
            f"{op_name}: the new shape {target} must hold ints >= 0 (one of them may be -1)"
        )
    target = tuple(int(t) for t in target)
    if target.count(-1) > 1:
        raise ValueError(f"{op_name}: at most one -1 is allowed in the new shape {target}")
    known = 1
    for t in target:
        if t != -1:
            known *= t
    if -1 in target:
        if known == 0 or size % known:
            raise ValueError(
                f"{op_name}: cannot reshape {tuple(shape)} ({size} elements) to {target}"
            )
        target = tuple(size // known if t == -1 else t for t in target)
    elif known != size:
        raise ValueError(
            f"{op_name}: cannot reshape {tuple(shape)} ({size} elements) to {target} "
            f"({known} elements); the number of elements must stay the same"
        )
    return check_shape(op_name, target) if not size else target


def python_scalar(op_name: str, value) -> int | float:
    """A real number as a plain Python int/float (so float32 tensors stay float32).

    NumPy 2 promotes ``float32_array * np.float64(2)`` to float64 but keeps float32 for
    a Python float, so scalars are converted before they meet an array. A NumPy array
    of one element counts as a scalar (course code passes ``np.random.randn(1)``).
    """
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shape = f" of shape {value.shape}" if isinstance(value, np.ndarray) else ""
        raise TypeError(
            f"{op_name}: expected a real scalar, got {type(value).__name__}{shape}; "
            f"for tensors use the elementwise op (e.g. a + b with b a Tensor)"
        )
    return int(value) if isinstance(value, numbers.Integral) else float(value)

"""The NDArray module's functions: the course's (``array``, ``empty``, ``broadcast_to``, ...)
and the NumPy-named ones the ops call (``sum``, ``matmul``, ``stack``, ``where``, ...), so that
op bodies run unchanged on NDArrays or on NumPy arrays.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .dtypes import (
    _BOOL,
    _FLOAT32,
    _FLOAT64,
    _INT32,
    _INT64,
    DType,
    _dtype,
    _is_float,
    _promoted,
)
from .layout import Shape, _normalize_axes
from .ndarray import (
    BackendDevice,
    NDArray,
    _matmul,
    _matmul_strided,
    _require_float,
    default_device,
)

# ----- module functions (the course's, then NumPy-named helpers for the ops) -------------------


def array(a: Any, dtype: Any = "float32", device: BackendDevice | None = None) -> NDArray:
    """A new array holding ``a`` (``dtype=None`` means float32 for non-NDArray data)."""
    if dtype is None and not isinstance(a, NDArray):
        dtype = _FLOAT32
    return NDArray(a, device=device, dtype=dtype)


def asarray(a: Any, dtype: Any = None, device: BackendDevice | None = None) -> NDArray:
    """``a`` itself when it is an NDArray of that dtype and device, else :func:`array`."""
    if (
        isinstance(a, NDArray)
        and (dtype is None or _dtype(dtype) == a.dtype)
        and (device is None or device == a.device)
    ):
        return a
    return NDArray(a, device=device, dtype=dtype)


def empty(shape: Shape, dtype: Any = "float32", device: BackendDevice | None = None) -> NDArray:
    """An uninitialised array of ``shape``."""
    return (default_device() if device is None else device).empty(shape, dtype)


def full(
    shape: Shape, fill_value: float, dtype: Any = "float32", device: BackendDevice | None = None
) -> NDArray:
    """An array of ``shape`` filled with ``fill_value``."""
    return (default_device() if device is None else device).full(shape, fill_value, dtype)


def zeros(shape: Shape, dtype: Any = "float32", device: BackendDevice | None = None) -> NDArray:
    """Zeros of ``shape`` (a tuple)."""
    return (default_device() if device is None else device).zeros(shape, dtype=dtype)


def ones(shape: Shape, dtype: Any = "float32", device: BackendDevice | None = None) -> NDArray:
    """Ones of ``shape`` (a tuple)."""
    return (default_device() if device is None else device).ones(shape, dtype=dtype)


def zeros_like(a: NDArray, dtype: Any = None, shape: Shape | None = None) -> NDArray:
    """Zeros on ``a``'s device, of its dtype and shape unless given (np.zeros_like)."""
    return full_like(a, 0.0, dtype, shape)


def full_like(
    a: NDArray, fill_value: float, dtype: Any = None, shape: Shape | None = None
) -> NDArray:
    """``fill_value`` on ``a``'s device, of its dtype and shape unless given (np.full_like)."""
    return full(
        a.shape if shape is None else shape,
        fill_value,
        a.dtype if dtype is None else dtype,
        a.device,
    )


def broadcast_to(a: NDArray, shape: Shape) -> NDArray:
    """A broadcast view of ``a``."""
    return a.broadcast_to(shape)


def reshape(a: NDArray, shape: Shape) -> NDArray:
    """``a`` in ``shape``."""
    return a.reshape(shape)


def maximum(a: NDArray, b: Any) -> NDArray:
    """Elementwise maximum of ``a`` and an array or scalar ``b``."""
    return a.maximum(b)


def clip(a: NDArray, a_min: float, a_max: float) -> NDArray:
    """``a`` limited to [a_min, a_max] (scalars), as np.clip."""
    return -((-a.maximum(a_min)).maximum(-a_max))


def log(a: NDArray) -> NDArray:
    """Natural logarithm elementwise."""
    return a.log()


def exp(a: NDArray) -> NDArray:
    """Exponential elementwise."""
    return a.exp()


def tanh(a: NDArray) -> NDArray:
    """Hyperbolic tangent elementwise."""
    return a.tanh()


def power(a: NDArray, b: Any) -> NDArray:
    """``a ** b`` elementwise (array or scalar exponent)."""
    return a**b


def multiply(a: NDArray, b: Any, out: NDArray | None = None) -> NDArray:
    """``a * b`` elementwise, into ``out`` when given (np.multiply)."""
    return a * b if out is None else a._into(b, out, "ewise_mul", "scalar_mul")


def divide(a: NDArray, b: Any, out: NDArray | None = None) -> NDArray:
    """``a / b`` elementwise, into ``out`` when given (np.divide)."""
    return a / b if out is None else a._into(b, out, "ewise_div", "scalar_div")


def sqrt(a: NDArray, out: NDArray | None = None) -> NDArray:
    """Square root elementwise (``a ** 0.5``), into ``out`` when given (np.sqrt)."""
    return a**0.5 if out is None else a._into(0.5, out, "ewise_power", "scalar_power")


def sum(a: NDArray, axis: Any = None, keepdims: bool = False) -> NDArray:  # noqa: A001
    """Sum over ``axis``."""
    return a.sum(axis=axis, keepdims=keepdims)


def max(a: NDArray, axis: Any = None, keepdims: bool = False) -> NDArray:  # noqa: A001
    """Maximum over ``axis``."""
    return a.max(axis=axis, keepdims=keepdims)


def flip(a: NDArray, axes: Any) -> NDArray:
    """``a`` reversed along ``axes``."""
    return a.flip(axes)


def pad(a: NDArray, axes: Sequence[tuple[int, int]]) -> NDArray:
    """``a`` zero-padded by ``(before, after)`` per dimension."""
    return a.pad(axes)


def matmul(a: NDArray, b: NDArray) -> NDArray:
    """NumPy's ``matmul`` for the ops: ``a @ b`` straight to the BLAS (project extra).

    Shapes as ``a @ b`` (batch dimensions broadcast), but it never takes the tiled path of
    ``@`` (the course's tiled layout), and an operand whose last two axes are a transposed
    or row-sliced view of a compact matrix (``swapaxes(w, 0, 1)``) is handed to the BLAS as
    it is, with no copy. Other layouts are compacted first. The ops call this; ``@`` stays the
    course's.

    >>> a = array([[1.0, 2.0], [3.0, 4.0]])
    >>> matmul(a, swapaxes(a, 0, 1)).numpy().tolist()
    [[5.0, 11.0], [11.0, 25.0]]
    """
    return _matmul("matmul", a, b, _matmul_strided)


def swapaxes(a: NDArray, axis1: int, axis2: int) -> NDArray:
    """A view with two axes exchanged."""
    axes = list(range(a.ndim))
    i, j = _normalize_axes("swapaxes", (axis1, axis2), a.ndim) if axis1 != axis2 else (0, 0)
    axes[i], axes[j] = axes[j], axes[i]
    return a.permute(axes)


def transpose(a: NDArray, axes: Sequence[int] | None = None) -> NDArray:
    """A view with all axes permuted (reversed when ``axes`` is None)."""
    return a.permute(tuple(reversed(range(a.ndim))) if axes is None else axes)


def stack(arrays: Sequence[NDArray], axis: int = 0) -> NDArray:
    """Arrays of one shape joined along a new ``axis``."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("stack: needs at least one array")
    shape = arrays[0].shape
    if any(x.shape != shape for x in arrays):
        raise ValueError(f"stack: all arrays need one shape, got {[x.shape for x in arrays]}")
    (axis,) = _normalize_axes("stack", axis, len(shape) + 1)
    out_shape = shape[:axis] + (len(arrays),) + shape[axis:]
    out = empty(out_shape, _result_dtype(arrays), arrays[0].device)
    lead = (slice(None),) * axis
    for i, x in enumerate(arrays):
        out[lead + (i,)] = x.reshape(shape[:axis] + (1,) + shape[axis:])
    return out


def _result_dtype(arrays: Sequence[NDArray]) -> DType:
    return functools.reduce(_promoted, (x._dtype for x in arrays))


#: The dtypes, under NumPy's names (equal to their strings and to NumPy's dtypes).
float32, float64, int32, int64 = _FLOAT32, _FLOAT64, _INT32, _INT64
bool_ = _BOOL

#: Positive infinity (NumPy's name), for ops that build -inf fills.
inf = math.inf


class errstate:
    """NumPy's floating-point warning context; NDArray kernels never warn, so it does nothing."""

    def __init__(self, **kwargs: str) -> None:
        self.kwargs = kwargs

    def __enter__(self) -> errstate:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def finfo(dtype: Any) -> np.finfo:
    """Machine limits of ``dtype`` (NumPy's ``finfo``)."""
    return np.finfo(_dtype(dtype))


# ----- NumPy functions the ops need that have no kernel: computed through NumPy ----------------
# Each takes and returns NDArrays with NumPy's semantics, so one op body serves both backends.
# Those marked "through NumPy" copy their operands to the host and the result back.


def _through_numpy(result: np.ndarray, like: NDArray) -> NDArray:
    """A NumPy result as an NDArray on ``like``'s device (its own dtype)."""
    result = np.asarray(result, order="C")  # (np.ascontiguousarray would make 0-d 1-d)
    return NDArray(result, device=like.device, dtype=result.dtype)


def _float_through_numpy(name: str, fn: Callable, a: NDArray) -> NDArray:
    _require_float(name, a)
    with np.errstate(all="ignore"):  # NDArray math gives inf/nan without warnings
        return _through_numpy(fn(a.numpy()), a)


def sin(a: NDArray) -> NDArray:
    """Sine elementwise (np.sin; through NumPy)."""
    return _float_through_numpy("sin", np.sin, a)


def cos(a: NDArray) -> NDArray:
    """Cosine elementwise (np.cos; through NumPy)."""
    return _float_through_numpy("cos", np.cos, a)


def log1p(a: NDArray) -> NDArray:
    """``log(1 + a)``, accurate for small ``a`` (np.log1p; through NumPy)."""
    return _float_through_numpy("log1p", np.log1p, a)


def expm1(a: NDArray) -> NDArray:
    """``exp(a) - 1``, accurate for small ``a`` (np.expm1; through NumPy)."""
    return _float_through_numpy("expm1", np.expm1, a)


def where(condition: NDArray, x: NDArray, y: NDArray) -> NDArray:
    """``x`` where ``condition`` is true, else ``y`` (np.where with three arrays, broadcast;
    through NumPy)."""
    return _through_numpy(np.where(condition.numpy(), x.numpy(), y.numpy()), x)


def argmax(a: NDArray, axis: int | None = None, keepdims: bool = False) -> NDArray:
    """int64 index of the first maximum along ``axis`` (None: of the flattened array), as
    np.argmax (through NumPy)."""
    return _through_numpy(np.asarray(np.argmax(a.numpy(), axis=axis, keepdims=keepdims)), a)


def argmin(a: NDArray, axis: int | None = None, keepdims: bool = False) -> NDArray:
    """int64 index of the first minimum along ``axis``, as np.argmin (through NumPy)."""
    return _through_numpy(np.asarray(np.argmin(a.numpy(), axis=axis, keepdims=keepdims)), a)


def reduce_prod(a: NDArray, axis: Any = None, keepdims: bool = False) -> NDArray:
    """Product over ``axis`` (None, an int or a tuple), as np.prod (through NumPy). Not named
    ``prod``: that is the course's product of a shape's sizes."""
    return _through_numpy(np.asarray(np.prod(a.numpy(), axis=axis, keepdims=keepdims)), a)


def concatenate(arrays: Sequence[NDArray], axis: int = 0) -> NDArray:
    """Arrays joined along an existing ``axis`` (np.concatenate): one strided copy each."""
    arrays = list(arrays)
    (axis,) = _normalize_axes("concatenate", axis, arrays[0].ndim)
    shape = list(arrays[0].shape)
    shape[axis] = builtins.sum(x.shape[axis] for x in arrays)
    out = empty(tuple(shape), _result_dtype(arrays), arrays[0].device)
    start, lead = 0, (slice(None),) * axis
    for x in arrays:
        out[lead + (slice(start, start + x.shape[axis]),)] = x
        start += x.shape[axis]
    return out


def take(a: NDArray, indices: np.ndarray) -> NDArray:
    """Elements of the flattened ``a`` at the int64 ``indices`` (np.take with no axis): an
    array of ``indices.shape``. Float arrays use the device's ``take_rows`` kernel; other
    dtypes go through NumPy."""
    indices = np.asarray(indices, dtype=np.int64)
    kernel = getattr(a.device, "take_rows", None)
    if kernel is None or not _is_float(a.dtype):
        return _through_numpy(np.take(a.numpy(), indices), a)
    out = empty(indices.shape, a.dtype, a.device)
    kernel(a.compact()._handle, np.ascontiguousarray(indices.reshape(-1)), out._handle, a.size, 1)
    return out


def put(a: NDArray, indices: np.ndarray, values: NDArray) -> None:
    """``a.flat[indices] = values`` in place (np.put; the last of repeated indices wins;
    through NumPy)."""
    host = a.numpy()
    np.put(host, np.asarray(indices, dtype=np.int64), values.numpy())
    a[()] = NDArray(host, device=a.device, dtype=a.dtype)


__all__ = [
    "array",
    "asarray",
    "empty",
    "full",
    "zeros",
    "ones",
    "zeros_like",
    "full_like",
    "broadcast_to",
    "reshape",
    "maximum",
    "clip",
    "log",
    "exp",
    "tanh",
    "power",
    "sqrt",
    "multiply",
    "divide",
    "sum",
    "max",
    "flip",
    "pad",
    "matmul",
    "swapaxes",
    "transpose",
    "stack",
    "inf",
    "errstate",
    "finfo",
    "float32",
    "float64",
    "int32",
    "int64",
    "bool_",
    "sin",
    "cos",
    "log1p",
    "expm1",
    "where",
    "argmax",
    "argmin",
    "reduce_prod",
    "concatenate",
    "take",
    "put",
]

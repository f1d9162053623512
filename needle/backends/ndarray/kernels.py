"""needle's fused computations on NDArrays, and the NDArray spelling of the array operations
the two array types spell differently.

This is :data:`needle.backends.kernels` under the NDArray backend: each function allocates
its outputs and makes one call to the device's kernel of the same name (compiled C++ on
``cpu()``, ``ndarray_backend_numpy`` on ``cpu_numpy()``), passing compact buffers. Apart from
:mod:`.ndarray` this is the only module that hands buffers to a device's kernels.
:mod:`needle.backends.numpy.kernels` has the same functions with the same signatures (and
the formulas the NumPy kernels compute).

Every fused forward returns what its backward needs; nothing is kept here between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import functions, ndarray
from .functions import empty, take
from .ndarray import BackendDevice, NDArray, default_device


def _handles(*arrays: NDArray) -> list:
    """The compact buffers of ``arrays``, for a kernel call."""
    return [a.compact()._handle for a in arrays]


def _empty_like(like: NDArray, shape: tuple) -> NDArray:
    return empty(shape, dtype=like.dtype, device=like.device)


# ----- fused layers ------------------------------------------------------------------------


def add_row(a: NDArray, row: NDArray) -> NDArray:
    """``a + row`` for a (N, D) and a (1, D) or (D,) row: the Linear layer's bias, added to
    every row in one pass (the (N, D) broadcast of the row is never made)."""
    if row.dtype != a.dtype:
        return a + row  # promotes as NumPy does
    out = _empty_like(a, a.shape)
    a.device.add_row(*_handles(a, row, out), *a.shape)
    return out


def batchnorm_forward(
    x: NDArray, weight: NDArray, bias: NDArray, eps: float
) -> tuple[NDArray, ...]:
    """Training batch norm of x (N, D) per column with weight and bias (D,).

    Returns ``(out, xhat, mean, var, inv_std)``: out and ``xhat = (x - mean) * inv_std``
    (N, D); the column mean, biased variance and ``inv_std = (var + eps) ** -0.5`` (D,).
    """
    n, d = x.shape
    out, xhat = _empty_like(x, (n, d)), _empty_like(x, (n, d))
    mean, var, inv_std = (_empty_like(x, (d,)) for _ in range(3))
    x.device.batchnorm_forward(*_handles(x, weight, bias, out, xhat, mean, var, inv_std), n, d, eps)
    return out, xhat, mean, var, inv_std


def batchnorm_backward(
    g: NDArray, xhat: NDArray, weight: NDArray, inv_std: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """``(grad_x (N, D), grad_weight (D,), grad_bias (D,))`` of :func:`batchnorm_forward`."""
    return _norm_backward("batchnorm_backward", g, xhat, weight, inv_std)


def _norm_backward(
    kernel: str, g: NDArray, xhat: NDArray, weight: NDArray, inv_std: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """A norm kernel's ``(grad_x (N, D), grad_weight (D,), grad_bias (D,))``."""
    n, d = g.shape
    grads = (_empty_like(g, (n, d)), _empty_like(g, (d,)), _empty_like(g, (d,)))
    getattr(g.device, kernel)(*_handles(g, xhat, weight, inv_std, *grads), n, d)
    return grads


def layernorm_forward(
    x: NDArray, weight: NDArray, bias: NDArray, eps: float
) -> tuple[NDArray, NDArray, NDArray]:
    """Layer norm of the rows of x (N, D) with weight and bias (D,).

    Returns ``(out, xhat, inv_std)``: out and ``xhat`` (N, D), ``inv_std`` per row (N,).
    """
    n, d = x.shape
    out, xhat, inv_std = _empty_like(x, (n, d)), _empty_like(x, (n, d)), _empty_like(x, (n,))
    x.device.layernorm_forward(*_handles(x, weight, bias, out, xhat, inv_std), n, d, eps)
    return out, xhat, inv_std


def layernorm_backward(
    g: NDArray, xhat: NDArray, weight: NDArray, inv_std: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """``(grad_x, grad_weight, grad_bias)`` of :func:`layernorm_forward` for out_grad g."""
    return _norm_backward("layernorm_backward", g, xhat, weight, inv_std)


def softmax_cross_entropy(logits: NDArray, labels: np.ndarray) -> tuple[NDArray, NDArray]:
    """Mean softmax cross-entropy of logits (N, K) against int labels (N,) in [0, K).

    Returns ``(loss, unit_grad)``: the 0-d loss in logits' dtype and its gradient
    ``(softmax - one_hot) * (1 / N)`` (N, K), the gradient for out_grad 1.
    """
    n, k = logits.shape
    unit_grad, loss = _empty_like(logits, (n, k)), _empty_like(logits, ())
    logits.device.softmax_cross_entropy(*_handles(logits), labels, *_handles(unit_grad, loss), n, k)
    return loss, unit_grad


def dropout(x: NDArray, draws: np.ndarray, keep: float) -> tuple[NDArray, NDArray]:
    """``(x * mask, mask)`` with ``mask = [draws <= keep] / keep`` computed in
    :data:`DRAW_DTYPE`, float32 (draws and keep rounded to it, as the course's float32 ``rand``
    makes them), cast to x's dtype; ``draws`` float64 of x's shape."""
    out, mask = _empty_like(x, x.shape), _empty_like(x, x.shape)
    x.device.dropout(np.ascontiguousarray(draws, dtype=np.float64), *_handles(x, mask, out), keep)
    return out, mask


def relu_backward(g: NDArray, x: NDArray) -> NDArray:
    """ReLU's gradient ``g * [x > 0]`` (0 at the kink)."""
    if g.dtype != x.dtype:
        return g * (x > 0)  # promotes as NumPy does
    out = _empty_like(g, g.shape)
    g.device.relu_backward(*_handles(g, x, out))
    return out


def take_rows(table: NDArray, ids: np.ndarray) -> NDArray:
    """``table[ids]``: rows of table (n, D) picked by int ids → ``ids.shape + (D,)``."""
    out = _empty_like(table, ids.shape + (table.shape[1],))
    table.device.take_rows(*_handles(table), _flat_ids(ids), *_handles(out), *table.shape)
    return out


def add_rows(rows: NDArray, ids: np.ndarray, num_rows: int) -> NDArray:
    """Scatter-add into zeros (num_rows, D): ``out[ids[k]] += rows[k]`` in the order of ids
    (repeats accumulate); rows has shape ``ids.shape + (D,)``."""
    width = rows.shape[-1]
    out = _empty_like(rows, (num_rows, width))
    rows.device.add_rows(*_handles(rows), _flat_ids(ids), *_handles(out), num_rows, width)
    return out


def _flat_ids(ids: np.ndarray) -> np.ndarray:
    """``ids`` as the flat C-contiguous int64 array the row kernels take."""
    return np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)


def _common_float(*arrays: NDArray) -> list[NDArray]:
    """``arrays`` in the dtype arithmetic would promote them to (float64 if any is): the
    kernels take buffers of one dtype."""
    dtype = "float64" if any(a.dtype == "float64" for a in arrays) else "float32"
    return [a.astype(dtype, copy=False) for a in arrays]


def lstm_cell_forward(pre: NDArray, c: NDArray) -> tuple[NDArray, ...]:
    """One LSTM step's gates from the pre-activation (B, 4H), blocks i, f, g, o, and c (B, H).

    Returns ``(h', c', act, tanh(c'))`` with ``act`` the activated gates (B, 4H):
    σ(i), σ(f), tanh(g), σ(o); ``c' = f·c + i·g`` and ``h' = o·tanh(c')``.
    """
    pre, c = _common_float(pre, c)
    batch, hidden = c.shape
    act = _empty_like(c, pre.shape)
    h_new, c_new, tanh_c = (_empty_like(c, (batch, hidden)) for _ in range(3))
    c.device.lstm_cell_forward(*_handles(pre, c, act, h_new, c_new, tanh_c), batch, hidden)
    return h_new, c_new, act, tanh_c


def lstm_cell_backward(
    grad_h: NDArray, grad_c: NDArray, c: NDArray, act: NDArray, tanh_c: NDArray
) -> tuple[NDArray, NDArray]:
    """``(gradient of the pre-activation (B, 4H), gradient of c (B, H))`` of
    :func:`lstm_cell_forward` from the gradients of h' and c'."""
    grad_h, grad_c, c, act, tanh_c = _common_float(grad_h, grad_c, c, act, tanh_c)
    batch, hidden = c.shape
    grad_pre, grad_c_prev = _empty_like(c, act.shape), _empty_like(c, (batch, hidden))
    c.device.lstm_cell_backward(
        *_handles(grad_h, grad_c, c, act, tanh_c, grad_pre, grad_c_prev), batch, hidden
    )
    return grad_pre, grad_c_prev


# ----- fused optimizer updates ---------------------------------------------------------------


def sgd_update(
    params: Sequence[NDArray],
    grads: Sequence[NDArray],
    u: Sequence[NDArray],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> list[NDArray]:
    """needle's SGD step for lists of parameters, gradients and momentum buffers ``u``:
    ``g = grad + wd·p``; ``u = m·u + (1 - m)·g`` (in place); returns the new parameters
    ``p - lr·u`` (the inputs are not modified). One kernel call per device."""
    return _update("sgd_update", params, grads, (u,), (lr, momentum, weight_decay))


def adam_update(
    params: Sequence[NDArray],
    grads: Sequence[NDArray],
    m: Sequence[NDArray],
    v: Sequence[NDArray],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias1: float,
    bias2: float,
) -> list[NDArray]:
    """needle's Adam step for lists of parameters, gradients and moments ``m``, ``v`` (updated
    in place); returns the new parameters (see the NumPy backend's ``adam_update`` for the
    formula). One kernel call per device."""
    scalars = (lr, beta1, beta2, eps, weight_decay, bias1, bias2)
    return _update("adam_update", params, grads, (m, v), scalars)


def _update(
    kernel: str, params: Sequence[NDArray], grads: Sequence[NDArray], slots: tuple, scalars: tuple
) -> list[NDArray]:
    """Run the list kernel ``kernel`` over the parameters, one call per device (a Python
    loop over the parameters would pay a kernel call per parameter); the new parameters in
    order."""
    news: list = [None] * len(params)
    for device in dict.fromkeys(p.device for p in params):
        picked = [i for i, p in enumerate(params) if p.device == device]
        outs = [_empty_like(params[i], params[i].shape) for i in picked]
        slot_lists = ([slot[i].compact()._handle for i in picked] for slot in slots)
        getattr(device, kernel)(
            [params[i].compact()._handle for i in picked],
            [grads[i].compact()._handle for i in picked],
            *slot_lists,
            [out._handle for out in outs],
            *scalars,
        )
        for i, out in zip(picked, outs):
            news[i] = out
    return news


# ----- array operations the two array types spell differently --------------------------------

#: The dtype of this backend's uniform draws (``device.rand``): dropout compares in it.
DRAW_DTYPE = "float32"

#: Whether a view at an offset into a flat buffer is as good as its own array (an NDArray
#: view at an offset is strided, not compact: ops copy it).
OFFSET_VIEWS_ARE_COMPACT = False


def uniform_draws(shape: tuple[int, ...]) -> np.ndarray:
    """``np.random.rand(*shape)``'s float64 draws, leaving NumPy's global generator where that
    call would; large draws made by the compiled module (:func:`ndarray.uniform_draws`)."""
    return ndarray.uniform_draws(shape)


def strided_view(a: NDArray, shape: tuple, strides: tuple) -> NDArray:
    """A view of ``a`` (compacted first) with ``shape`` and ``strides`` in elements of that
    compact layout."""
    return a.compact().as_strided(shape, strides)


def reduce_prod(a: NDArray, axis: Any = None, keepdims: bool = False) -> NDArray:
    """The product of the elements over ``axis`` (the module's ``prod`` is the course's
    product of a shape's sizes, so the array product has its own name)."""
    return functions.reduce_prod(a, axis=axis, keepdims=keepdims)


def take_flat(a: NDArray, positions: np.ndarray) -> NDArray:
    """The elements of ``a`` at flat (row-major) ``positions``, in the shape of positions."""
    return take(a, positions)


def basic_view(a: NDArray, items: tuple) -> NDArray:
    """The strided view ``a[items]`` for a normalised basic index: ints (non-negative), slices
    and None, one item per axis of ``a`` apart from the Nones (NumPy's result shape)."""
    # The NDArray's own slices take positive steps and keep int axes: slice each axis down to
    # its first element there (which moves the offset), then lay out the result's strides.
    first, shape, strides = [], [], []
    axis = 0
    for item in items:
        if item is None:
            shape.append(1)
            strides.append(0)
            continue
        if isinstance(item, int):
            first.append(slice(item, item + 1))
        else:
            start, stop, step = item.indices(a.shape[axis])
            count = len(range(start, stop, step))
            first.append(slice(start, start + 1) if count else slice(0, 0))
            shape.append(count)
            strides.append(a.strides[axis] * step)
        axis += 1
    return a[tuple(first)].as_strided(tuple(shape), tuple(strides))


def draws(device: BackendDevice, kind: str, shape: tuple, dtype: str) -> NDArray:
    """``device.rand``/``randn`` draws of ``shape`` for a tensor of ``dtype``: cast to the dtype
    before any scaling, which then runs in that dtype."""
    return getattr(device, kind)(*shape, dtype=dtype)


def make_array(data: Any, device: BackendDevice | None, dtype: str | None) -> NDArray:
    """A new array holding a copy of ``data`` on ``device`` (default: an NDArray's own, else
    the default device); ``dtype`` None keeps an NDArray's dtype, else float32."""
    if device is None:
        device = data.device if isinstance(data, NDArray) else default_device()
    return functions.array(data, device=device, dtype=dtype)


def share_numpy(array: np.ndarray) -> NDArray:
    """``array`` as an NDArray. NDArray buffers are the backend's own, so this is a copy."""
    return NDArray(array, device=default_device(), dtype=array.dtype)


class _BufferView:
    """NumPy's array interface over an NDArray's buffer, holding the buffer's handle so that
    the buffer lives as long as any NumPy array made from it."""

    def __init__(self, array: NDArray) -> None:
        self.handle = array._handle
        itemsize = np.dtype(array.dtype).itemsize
        self.__array_interface__ = {
            "version": 3,
            "typestr": np.dtype(array.dtype).str,
            "shape": tuple(array.shape),
            "strides": tuple(s * itemsize for s in array.strides),
            "data": (array._handle.ptr() + array._offset * itemsize, False),
        }


def shared_numpy(array: NDArray) -> np.ndarray:
    """A NumPy array over ``array``'s own buffer, strides and offset: no copy, so writes
    show on both sides, and the buffer lives while the NumPy array does."""
    if array.size == 0:  # no buffer to point at
        return np.empty(array.shape, dtype=array.dtype)
    return np.asarray(_BufferView(array))


def to_numpy(array: NDArray) -> np.ndarray:
    """The array as a new NumPy array."""
    return array.numpy()


def device_of(array: NDArray) -> BackendDevice:
    """The device an array lives on."""
    return array.device

"""needle's fused computations as NumPy formulas, and the NumPy spelling of the array
operations the two array types spell differently.

This is :data:`needle.backends.kernels` under the NumPy backend, and the arithmetic of the
NDArray backend's flat-buffer NumPy module (``ndarray_backend_numpy``), which views its
buffers as arrays and calls these functions. The compiled kernels run the same float
operations in the same order, so the three give the same bits (the kernel tests check it).
:mod:`needle.backends.ndarray.kernels` has the same functions with the same signatures.

Every fused forward returns what its backward needs; nothing is kept here between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .devices import Device, cpu

# ----- fused layers ------------------------------------------------------------------------


def add_row(a: np.ndarray, row: np.ndarray) -> np.ndarray:
    """``a + row`` for a (N, D) and a (1, D) or (D,) row: the Linear layer's bias."""
    return a + row


def batchnorm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float
) -> tuple[np.ndarray, ...]:
    """Training batch norm of x (N, D) per column with weight and bias (D,).

    Returns ``(out, xhat, mean, var, inv_std)``: out and ``xhat = (x - mean) * inv_std``
    (N, D); the column mean, biased variance and ``inv_std = (var + eps) ** -0.5`` (D,).
    """
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    centred = x - mean
    var = (centred * centred).sum(axis=0) / n
    inv_std = (var + eps) ** -0.5
    xhat = centred * inv_std
    return xhat * weight + bias, xhat, mean, var, inv_std


def batchnorm_backward(
    g: np.ndarray, xhat: np.ndarray, weight: np.ndarray, inv_std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grad_x (N, D), grad_weight (D,), grad_bias (D,))`` of :func:`batchnorm_forward` for
    out_grad g: ``grad_x = (g·n − grad_bias − xhat·grad_weight) · (weight·inv_std / n)``."""
    # With statistics per column, the general norm gradient's sums of g·weight and
    # g·weight·xhat are weight·grad_bias and weight·grad_weight: already computed.
    n = g.shape[0]
    grad_bias = g.sum(axis=0)
    grad_weight = (g * xhat).sum(axis=0)
    centred_grad = g * n - grad_bias - xhat * grad_weight
    return centred_grad * (weight * inv_std / n), grad_weight, grad_bias


def layernorm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layer norm of the rows of x (N, D) with weight and bias (D,).

    Returns ``(out, xhat, inv_std)``: out and ``xhat`` (N, D), ``inv_std`` per row (N,).
    """
    d = x.shape[1]
    centred = x - x.sum(axis=1, keepdims=True) / d
    inv_std = ((centred * centred).sum(axis=1) / d + eps) ** -0.5
    xhat = centred * inv_std[:, None]
    return xhat * weight + bias, xhat, inv_std


def layernorm_backward(
    g: np.ndarray, xhat: np.ndarray, weight: np.ndarray, inv_std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grad_x, grad_weight, grad_bias)`` of :func:`layernorm_forward` for out_grad g."""
    # d/dx of (x - mean) * inv_std applied to gx = g * weight, per row:
    # inv_std / d * (d * gx - sum(gx) - xhat * sum(gx * xhat)).
    d = g.shape[1]
    grad_bias = g.sum(axis=0)
    grad_weight = (g * xhat).sum(axis=0)
    gx = g * weight
    sum_gx = gx.sum(axis=1, keepdims=True)
    sum_gx_xhat = (gx * xhat).sum(axis=1, keepdims=True)
    grad_x = (gx * d - sum_gx - xhat * sum_gx_xhat) * (inv_std[:, None] / d)
    return grad_x, grad_weight, grad_bias


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax cross-entropy of logits (N, K) against int labels (N,) in [0, K).

    Returns ``(loss, unit_grad)``: the 0-d loss in logits' dtype and its gradient
    ``(softmax - one_hot) * (1 / N)`` (N, K), the gradient for out_grad 1.
    """
    n = logits.shape[0]
    scalar = logits.dtype.type  # 1 / n rounded in the dtype, as out_grad / n would be
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    total = exps.sum(axis=1)
    softmax = exps / total[:, None]
    # A -inf logit clips to the dtype's lowest finite value (shifted is <= 0 elsewhere).
    picked = np.maximum(shifted[rows, labels], -np.finfo(logits.dtype).max)
    loss = np.asarray((np.log(total) - picked).sum() / scalar(n), dtype=logits.dtype)
    softmax[rows, labels] -= 1
    return loss, softmax * (scalar(1) / scalar(n))


def dropout(x: np.ndarray, draws: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x * mask, mask)`` with ``mask = [draws <= keep] / keep`` computed in
    :data:`DRAW_DTYPE`, float64 (the course's NumPy framework compares its float64 draws), cast
    to x's dtype. The NDArray backend computes in float32, its ``rand``'s dtype."""
    mask = ((draws <= keep) / keep).astype(x.dtype, copy=False)
    return x * mask, mask


def relu_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ReLU's gradient ``g * [x > 0]`` (0 at the kink)."""
    return g * (x > 0)


def take_rows(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``table[ids]``: rows of table (n, D) picked by int ids → ``ids.shape + (D,)``."""
    return table[ids]


def add_rows(rows: np.ndarray, ids: np.ndarray, num_rows: int) -> np.ndarray:
    """Scatter-add into zeros (num_rows, D): ``out[ids[k]] += rows[k]`` in the order of ids
    (repeats accumulate); rows has shape ``ids.shape + (D,)``."""
    width = rows.shape[-1]
    out = np.zeros((num_rows, width), dtype=rows.dtype)
    np.add.at(out, ids.reshape(-1), rows.reshape((ids.size, width)))
    return out


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic function, overflow-safe: with ``e = exp(-|a|)``, ``1 / (1 + e)`` for
    a >= 0 and ``e / (1 + e)`` below (``ops.sigmoid``'s formula, in its order)."""
    e = np.exp(-np.maximum(a, -a))
    positive = (a >= 0).astype(a.dtype, copy=False)
    return (positive + (1 - positive) * e) / (1 + e)


def lstm_cell_forward(pre: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """One LSTM step's gates from the pre-activation (B, 4H), blocks i, f, g, o, and c (B, H).

    Returns ``(h', c', act, tanh(c'))`` with ``act`` the activated gates (B, 4H):
    σ(i), σ(f), tanh(g), σ(o); ``c' = f·c + i·g`` and ``h' = o·tanh(c')``.
    """
    batch, hidden = c.shape
    gates = pre.reshape(batch, 4, hidden)
    act = _sigmoid(gates)
    act[:, 2] = np.tanh(gates[:, 2])
    i, f, g, o = (act[:, k] for k in range(4))
    c_new = f * c + i * g
    tanh_c = np.tanh(c_new)
    return o * tanh_c, c_new, act.reshape(batch, 4 * hidden), tanh_c


def lstm_cell_backward(
    grad_h: np.ndarray, grad_c: np.ndarray, c: np.ndarray, act: np.ndarray, tanh_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(gradient of the pre-activation (B, 4H), gradient of c (B, H))`` of
    :func:`lstm_cell_forward` from the gradients of h' and c'."""
    batch, hidden = c.shape
    i, f, g, o = (act.reshape(batch, 4, hidden)[:, k] for k in range(4))
    total = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
    grad_pre = np.empty((batch, 4, hidden), dtype=total.dtype)
    # through σ' = σ(1 - σ) and tanh' = 1 - tanh², in block order i, f, g, o
    grad_pre[:, 0] = total * g * i * (1 - i)
    grad_pre[:, 1] = total * c * f * (1 - f)
    grad_pre[:, 2] = total * i * (1 - g * g)
    grad_pre[:, 3] = grad_h * tanh_c * o * (1 - o)
    return grad_pre.reshape(batch, 4 * hidden), total * f


# ----- fused optimizer updates ---------------------------------------------------------------


def sgd_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    u: Sequence[np.ndarray],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> list[np.ndarray]:
    """needle's SGD step for lists of parameters, gradients and momentum buffers ``u``:
    ``g = grad + wd·p``; ``u = m·u + (1 - m)·g`` (in place); returns the new parameters
    ``p - lr·u`` (the inputs are not modified)."""
    return [_sgd_one(p, g, u_p, lr, momentum, weight_decay) for p, g, u_p in zip(params, grads, u)]


def _sgd_one(
    p: np.ndarray, grad: np.ndarray, u: np.ndarray, lr: float, momentum: float, weight_decay: float
) -> np.ndarray:
    # in place on one scratch array: fresh temporaries of a model's size cost page faults
    g = p * weight_decay
    g += grad
    u *= momentum
    g *= 1 - momentum
    u += g
    np.multiply(u, lr, out=g)
    return p - g


def adam_update(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    m: Sequence[np.ndarray],
    v: Sequence[np.ndarray],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias1: float,
    bias2: float,
) -> list[np.ndarray]:
    """needle's Adam step for lists of parameters, gradients and moments ``m``, ``v`` (updated
    in place): ``g = grad + wd·p``; ``m = b1·m + (1 - b1)·g``; ``v = b2·v + (1 - b2)·g²``;
    returns the new parameters ``p - lr·(m / bias1) / (sqrt(v / bias2) + eps)``, where
    ``bias1 = 1 - b1**t`` and ``bias2 = 1 - b2**t`` are the bias corrections."""
    return [
        _adam_one(p, g, m_p, v_p, lr, beta1, beta2, eps, weight_decay, bias1, bias2)
        for p, g, m_p, v_p in zip(params, grads, m, v)
    ]


def _adam_one(
    p: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias1: float,
    bias2: float,
) -> np.ndarray:
    # The course's formula, operation for operation, on two scratch arrays.
    g = p * weight_decay
    g += grad
    scratch = g * (1 - beta1)
    m *= beta1
    m += scratch
    np.multiply(g, g, out=g)
    g *= 1 - beta2
    v *= beta2
    v += g
    m_hat = np.divide(m, bias1, out=scratch)
    v_hat = np.divide(v, bias2, out=g)
    np.sqrt(v_hat, out=v_hat)
    v_hat += eps
    m_hat *= lr
    m_hat /= v_hat
    return p - m_hat


# ----- array operations the two array types spell differently --------------------------------

#: The dtype of this backend's uniform draws (``device.rand``): dropout compares in it.
DRAW_DTYPE = "float64"

#: Whether a view at an offset into a flat buffer is as good as its own array (a NumPy view
#: at an offset is an ordinary array).
OFFSET_VIEWS_ARE_COMPACT = True


def strided_view(a: np.ndarray, shape: tuple, strides: tuple) -> np.ndarray:
    """A read-only view of ``a`` (made contiguous first) with ``shape`` and ``strides`` in
    elements of that contiguous layout (NumPy's ``as_strided`` takes bytes)."""
    a = np.ascontiguousarray(a)
    return np.lib.stride_tricks.as_strided(
        a, shape, tuple(s * a.itemsize for s in strides), writeable=False
    )


def reduce_prod(a: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """The product of the elements over ``axis``."""
    return np.prod(a, axis=axis, keepdims=keepdims)


def take_flat(a: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The elements of ``a`` at flat (row-major) ``positions``, in the shape of positions."""
    return a.reshape(-1)[positions]


def basic_view(a: np.ndarray, items: tuple) -> np.ndarray:
    """The view ``a[items]`` for a normalised basic index: ints (non-negative), slices and
    None, one item per axis of ``a`` apart from the Nones."""
    return a[items + (Ellipsis,)]  # the ellipsis keeps a 0-d result an array


def uniform_draws(shape: tuple[int, ...]) -> np.ndarray:
    """``np.random.rand(*shape)``: float64 draws from NumPy's global generator."""
    return np.random.rand(*shape)


def draws(device: Device, kind: str, shape: tuple, dtype: str) -> np.ndarray:
    """``device.rand``/``randn`` draws of ``shape`` for a tensor of ``dtype``: float64, as the
    course's NumPy framework scales them before casting."""
    return getattr(device, kind)(*shape)


def make_array(data: Any, device: Device | None, dtype: str | None) -> np.ndarray:
    """A new array holding a copy of ``data``; NumPy infers the dtype when it is None."""
    return np.array(data, dtype=dtype)


def share_numpy(array: np.ndarray) -> np.ndarray:
    """``array`` as this backend's array, sharing its memory: the array itself."""
    return array


def shared_numpy(array: np.ndarray) -> np.ndarray:
    """The array itself (NumPy memory already)."""
    return array


def to_numpy(array: np.ndarray) -> np.ndarray:
    """The array as NumPy: itself (no copy)."""
    return array


def device_of(array: np.ndarray) -> Device:
    """The needle device an array lives on: the NumPy backend's one CPU."""
    return cpu()

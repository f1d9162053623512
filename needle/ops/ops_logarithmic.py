"""Numerically stable log-sum-exp and log-softmax."""

from __future__ import annotations

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api
from ._shapes import keepdims_shape, normalize_axes
from .ops_mathematic import _check_tensor, broadcast_to, exp, reshape, summation


def _stable_logsumexp(a: NDArray, axes: tuple) -> NDArray:
    """log(sum(exp(a))) over ``axes`` with the reduced axes kept (size 1).

    Subtracting the max keeps exp() from overflowing at inputs ~1e5. A max that is not
    finite (a slice of all -inf) is clipped to the dtype's finite range so that
    -inf - -inf does not make nan: the slice's result is then log(0) + max = -inf, as it
    should be (and +inf stays +inf). Finite maxima are unchanged.
    """
    if any(a.shape[axis] == 0 for axis in axes):
        return array_api.full_like(a, -array_api.inf, shape=keepdims_shape(a.shape, axes))
    big = float(array_api.finfo(a.dtype).max)
    peak = array_api.clip(a.max(axis=axes, keepdims=True), -big, big)
    with array_api.errstate(divide="ignore"):
        total = array_api.log(array_api.exp(a - peak).sum(axis=axes, keepdims=True))
    return total + peak


class LogSumExp(TensorOp):
    """``log(sum(exp(a), axes))``, stable; the reduced axes are dropped."""

    def __init__(self, axes: tuple | None = None):
        self.axes = axes

    def _axes(self, ndim: int) -> tuple:
        return tuple(range(ndim)) if self.axes is None else self.axes

    def compute(self, a: NDArray):
        axes = self._axes(a.ndim)
        out = _stable_logsumexp(a, axes)
        return out.reshape(tuple(s for i, s in enumerate(a.shape) if i not in axes))

    def gradient(self, out_grad: Tensor, node: Tensor):
        # d lse / d a = softmax(a) = exp(a - lse(a)), broadcast back over the reduced axes.
        a = node.inputs[0]
        kept = keepdims_shape(a.shape, self._axes(len(a.shape)))
        softmax = exp(a - broadcast_to(reshape(node, kept), a.shape))
        return broadcast_to(reshape(out_grad, kept), a.shape) * softmax


def logsumexp(a: Tensor, axes=None) -> Tensor:
    """Stable log-sum-exp over ``axes`` (None: all; an int; a tuple); reduced axes dropped."""
    _check_tensor("logsumexp", a)
    if axes is not None:
        axes = normalize_axes("logsumexp", axes, len(a.shape))
    return LogSumExp(axes)(a)


class LogSoftmax(TensorOp):
    """``a - logsumexp(a)`` over the last axis, stable."""

    def compute(self, a: NDArray):
        return a - _stable_logsumexp(a, (a.ndim - 1,))

    def gradient(self, out_grad: Tensor, node: Tensor):
        # d/da: out_grad - softmax * sum(out_grad) along the last axis.
        shape = node.shape
        kept = keepdims_shape(shape, (len(shape) - 1,))
        total = broadcast_to(reshape(summation(out_grad, (len(shape) - 1,)), kept), shape)
        return out_grad - exp(node) * total


def logsoftmax(a: Tensor) -> Tensor:
    """Log-softmax over the last axis; for the course's 2-D (batch, classes) input and any n-D."""
    _check_tensor("logsoftmax", a)
    if len(a.shape) < 1:
        raise ValueError(f"logsoftmax: needs at least 1 dimension, got shape {a.shape}")
    return LogSoftmax()(a)


def log_softmax(a: Tensor, dim: int = -1) -> Tensor:
    """``a - logsumexp(a, dim)`` (torch.log_softmax), stable; over the last axis it is
    :class:`LogSoftmax`, over another axis a composition with :class:`LogSumExp`."""
    _check_tensor("log_softmax", a)
    if len(a.shape) < 1:
        raise ValueError(f"log_softmax: needs at least 1 dimension, got shape {a.shape}")
    (axis,) = normalize_axes("log_softmax", dim, len(a.shape))
    if axis == len(a.shape) - 1:
        return LogSoftmax()(a)
    kept = keepdims_shape(a.shape, (axis,))
    return a - broadcast_to(reshape(logsumexp(a, axis), kept), a.shape)


def softmax(a: Tensor, dim: int = -1) -> Tensor:
    """``exp(a) / sum(exp(a), dim)`` (torch.softmax), as ``exp(log_softmax(a, dim))``."""
    return exp(log_softmax(a, dim))


__all__ = ["LogSumExp", "logsumexp", "LogSoftmax", "logsoftmax", "log_softmax", "softmax"]

"""More elementwise ops, with PyTorch's names: comparisons, abs, sign, sqrt, the trigonometric
and ``log1p``/``expm1`` functions, clipping, and the maximum/minimum of two tensors.

Comparisons return **bool** tensors, which never require grad. Piecewise ops differentiate
with a constant mask made by a comparison (their second derivative is 0 away from the kinks).
"""

from __future__ import annotations

import operator

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api
from ._shapes import broadcast_shapes, python_scalar
from .ops_mathematic import _broadcast_pair, _check_tensor, power_scalar

# ----- comparisons -----------------------------------------------------------------------------

_COMPARISONS = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


class Compare(TensorOp):
    """``a <op> b`` (or ``a <op> scalar``) elementwise as a bool array, broadcasting; ``kind``
    is one of eq, ne, lt, le, gt, ge. Its result is bool, so it is never differentiated."""

    takes_integers = True

    def __init__(self, kind: str, scalar=None):
        self.kind = kind
        self.scalar = scalar

    def compute(self, a: NDArray, b: NDArray | None = None):
        result = _COMPARISONS[self.kind](a, self.scalar if b is None else b)
        return result.astype("bool", copy=False)  # the NDArray compares to 1/0 in the dtype


def _compare(kind: str, a: Tensor, b) -> Tensor:
    _check_tensor(kind, a)
    if isinstance(b, Tensor):
        broadcast_shapes(kind, a.shape, b.shape)  # a clear error before computing
        return Compare(kind)(a, b)
    return Compare(kind, python_scalar(kind, b))(a)


def eq(a: Tensor, b) -> Tensor:
    """``a == b`` elementwise (``b`` a tensor, broadcast, or a scalar): a bool tensor."""
    return _compare("eq", a, b)


def ne(a: Tensor, b) -> Tensor:
    """``a != b`` elementwise: a bool tensor."""
    return _compare("ne", a, b)


def lt(a: Tensor, b) -> Tensor:
    """``a < b`` elementwise: a bool tensor."""
    return _compare("lt", a, b)


def le(a: Tensor, b) -> Tensor:
    """``a <= b`` elementwise: a bool tensor."""
    return _compare("le", a, b)


def gt(a: Tensor, b) -> Tensor:
    """``a > b`` elementwise: a bool tensor."""
    return _compare("gt", a, b)


def ge(a: Tensor, b) -> Tensor:
    """``a >= b`` elementwise: a bool tensor."""
    return _compare("ge", a, b)


def _mask(condition: Tensor, dtype) -> Tensor:
    """A bool tensor as a constant 1/0 tensor of ``dtype`` (a gradient mask)."""
    return condition.astype(dtype)


# ----- unary -----------------------------------------------------------------------------------


class Abs(TensorOp):
    """``|a|``; the gradient is ``sign(a)`` (0 at 0, as in PyTorch)."""

    takes_integers = True

    def compute(self, a: NDArray):
        return array_api.maximum(a, -a) + 0  # + 0 turns the -0.0 that maximum may keep into 0.0

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * sign(node.inputs[0])


def abs(a: Tensor) -> Tensor:  # noqa: A001  (PyTorch's and NumPy's name)
    """``|a|`` elementwise (torch.abs)."""
    _check_tensor("abs", a)
    return Abs()(a)


class Sign(TensorOp):
    """-1, 0 or 1 by the sign of ``a``, in its dtype; the gradient is 0."""

    takes_integers = True

    def compute(self, a: NDArray):
        return (a > 0).astype(a.dtype) - (a < 0).astype(a.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * 0


def sign(a: Tensor) -> Tensor:
    """The sign of ``a`` elementwise (torch.sign), a constant."""
    _check_tensor("sign", a)
    return Sign()(a)


class Sqrt(TensorOp):
    """``a ** 0.5``; the gradient ``1 / (2 sqrt(a))`` is inf at 0."""

    def compute(self, a: NDArray):
        return array_api.sqrt(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / (node * 2)


def sqrt(a: Tensor) -> Tensor:
    """Square root elementwise (torch.sqrt); negative inputs give nan."""
    _check_tensor("sqrt", a)
    return Sqrt()(a)


def rsqrt(a: Tensor) -> Tensor:
    """``1 / sqrt(a)`` elementwise (torch.rsqrt), as ``a ** -0.5``."""
    _check_tensor("rsqrt", a)
    return power_scalar(a, -0.5)


class Sin(TensorOp):
    """Sine."""

    def compute(self, a: NDArray):
        return array_api.sin(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * cos(node.inputs[0])


def sin(a: Tensor) -> Tensor:
    """Sine elementwise (torch.sin)."""
    _check_tensor("sin", a)
    return Sin()(a)


class Cos(TensorOp):
    """Cosine."""

    def compute(self, a: NDArray):
        return array_api.cos(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return -(out_grad * sin(node.inputs[0]))


def cos(a: Tensor) -> Tensor:
    """Cosine elementwise (torch.cos)."""
    _check_tensor("cos", a)
    return Cos()(a)


class Log1p(TensorOp):
    """``log(1 + a)``, accurate for small ``a``."""

    def compute(self, a: NDArray):
        return array_api.log1p(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / (node.inputs[0] + 1)


def log1p(a: Tensor) -> Tensor:
    """``log(1 + a)`` elementwise (torch.log1p)."""
    _check_tensor("log1p", a)
    return Log1p()(a)


class Expm1(TensorOp):
    """``exp(a) - 1``, accurate for small ``a``."""

    def compute(self, a: NDArray):
        return array_api.expm1(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * (node + 1)


def expm1(a: Tensor) -> Tensor:
    """``exp(a) - 1`` elementwise (torch.expm1)."""
    _check_tensor("expm1", a)
    return Expm1()(a)


class Clip(TensorOp):
    """``a`` limited to ``[low, high]`` (scalars; None: unbounded). The gradient passes where
    ``low <= a <= high`` (bounds included, as in PyTorch) and is 0 outside."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def compute(self, a: NDArray):
        low = -array_api.inf if self.low is None else self.low
        high = array_api.inf if self.high is None else self.high
        return array_api.clip(a, low, high)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a = node.inputs[0]
        inside = out_grad
        if self.low is not None:
            inside = inside * _mask(ge(a, self.low), out_grad.dtype)
        if self.high is not None:
            inside = inside * _mask(le(a, self.high), out_grad.dtype)
        return inside


def clip(a: Tensor, min=None, max=None) -> Tensor:  # noqa: A002  (PyTorch's argument names)
    """``a`` limited to ``[min, max]`` elementwise (torch.clamp / np.clip). Scalar bounds, or
    tensors (broadcast; then it is ``minimum(maximum(a, min), max)``); None leaves a side open."""
    _check_tensor("clip", a)
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = a if min is None else maximum(a, min)
        return out if max is None else minimum(out, max)
    low = None if min is None else python_scalar("clip", min)
    high = None if max is None else python_scalar("clip", max)
    return Clip(low, high)(a)


clamp = clip


# ----- binary ----------------------------------------------------------------------------------


class Maximum(TensorOp):
    """The elementwise maximum of two tensors of one shape. Where they are equal the
    gradient is split evenly between them (PyTorch's rule)."""

    def compute(self, a: NDArray, b: NDArray):
        return array_api.maximum(a, b)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        share_a = _mask(gt(a, b), out_grad.dtype) + _mask(eq(a, b), out_grad.dtype) * 0.5
        return out_grad * share_a, out_grad * (1 - share_a)


def maximum(a: Tensor, b) -> Tensor:
    """Elementwise maximum of ``a`` and a tensor (broadcast) or scalar (torch.maximum)."""
    if not isinstance(b, Tensor):
        _check_tensor("maximum", a)
        return clip(a, min=b)
    return Maximum()(*_broadcast_pair("maximum", a, b))


def minimum(a: Tensor, b) -> Tensor:
    """Elementwise minimum (torch.minimum), as ``-maximum(-a, -b)``; ties split evenly."""
    if not isinstance(b, Tensor):
        _check_tensor("minimum", a)
        return clip(a, max=b)
    _broadcast_pair("minimum", a, b)  # the error names minimum
    return -maximum(-a, -b)


__all__ = [
    "Compare",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "Abs",
    "abs",
    "Sign",
    "sign",
    "Sqrt",
    "sqrt",
    "rsqrt",
    "Sin",
    "sin",
    "Cos",
    "cos",
    "Log1p",
    "log1p",
    "Expm1",
    "expm1",
    "Clip",
    "clip",
    "clamp",
    "Maximum",
    "maximum",
    "minimum",
]

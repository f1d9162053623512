"""Elementwise, shape and linear-algebra ops.

Each op is a :class:`TensorOp` subclass with ``compute`` (forward on backend arrays)
and ``gradient`` (built from needle ops, so it is differentiable too) side by side,
and the lowercase function right below it. The function validates its arguments
and raises a clear error before anything is computed.
"""

from __future__ import annotations

from .._validation import check_shape
from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api, check_dtype, kernels
from ._shapes import (
    broadcast_shapes,
    check_broadcastable_to,
    keepdims_shape,
    normalize_axes,
    python_scalar,
    reshape_target,
)


def _check_tensor(op_name: str, value, arg: str = "a") -> None:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{op_name}: argument {arg} must be a needle.Tensor, got {type(value).__name__}"
        )


def _check_same_device(op_name: str, a: Tensor, b: Tensor) -> None:
    if a.device != b.device:
        raise ValueError(
            f"{op_name}: operands are on different devices, {a.device} and {b.device}; "
            f"move one with .to(device) first, e.g. b.to({a.device})"
        )


def _check_same_shape(op_name: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op_name}: shapes {a.shape} and {b.shape} differ; expected one shape")


def _broadcast_pair(op_name: str, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Insert BroadcastTo nodes so both operands have the common shape.

    Broadcasting is made explicit in the graph, so every elementwise gradient already
    has its operand's shape and BroadcastTo's gradient sums it back.
    """
    _check_tensor(op_name, a, "a")
    _check_tensor(op_name, b, "b")
    _check_same_device(op_name, a, b)
    if a.shape == b.shape:
        return a, b
    shape = broadcast_shapes(op_name, a.shape, b.shape)  # validated here, once
    if a.shape != shape:
        a = BroadcastTo(shape)(a)
    if b.shape != shape:
        b = BroadcastTo(shape)(b)
    return a, b


def unbroadcast(grad: Tensor, shape: tuple) -> Tensor:
    """Sum ``grad`` back to ``shape``: over new leading axes and axes broadcast from 1.

    The one place that undoes broadcasting in gradients.
    """
    if grad.shape == shape:
        return grad
    lead = len(grad.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1
    )
    if axes:
        grad = summation(grad, axes)
    return reshape(grad, shape)


# ----- elementwise binary ----------------------------------------------------------------


class EWiseAdd(TensorOp):
    """``a + b`` elementwise (same shapes; broadcasting is made explicit by :func:`add`)."""

    takes_integers = True

    def compute(self, a: NDArray, b: NDArray):
        return a + b

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad, out_grad


def add(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise sum with NumPy broadcasting: ``a.shape``, ``b.shape`` → the broadcast shape."""
    return EWiseAdd()(*_broadcast_pair("add", a, b))


class AddScalar(TensorOp):
    """``a + scalar``."""

    takes_integers = True

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray):
        return a + self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad


def add_scalar(a: Tensor, scalar) -> Tensor:
    """``a + scalar`` elementwise; same shape as ``a``."""
    _check_tensor("add_scalar", a)
    return AddScalar(python_scalar("add_scalar", scalar))(a)


class EWiseMul(TensorOp):
    """``a * b`` elementwise."""

    takes_integers = True

    def compute(self, a: NDArray, b: NDArray):
        return a * b

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        return out_grad * b, out_grad * a


def multiply(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise product with NumPy broadcasting."""
    return EWiseMul()(*_broadcast_pair("multiply", a, b))


class MultiplyConstant(TensorOp):
    """``a * c`` for a fixed array ``c`` of ``a``'s shape (a dropout mask): ``c`` takes no
    gradient, so the backward pass is one product, where ``multiply(a, Tensor.make_const(c))``
    also computes the gradient of the constant and throws it away."""

    def __init__(self, c: NDArray):
        self.c = c

    def compute(self, a: NDArray):
        return a * self.c

    def gradient(self, out_grad: Tensor, node: Tensor):
        return MultiplyConstant(self.c)(out_grad)


def multiply_constant(a: Tensor, c: NDArray) -> Tensor:
    """``a * c`` for a backend array ``c`` of ``a``'s shape, differentiable in ``a`` only."""
    _check_tensor("multiply_constant", a)
    if isinstance(c, Tensor):
        c = c.realize_cached_data()
    if tuple(c.shape) != a.shape:
        raise ValueError(
            f"multiply_constant: the constant has shape {tuple(c.shape)}, the tensor {a.shape}; "
            f"expected one shape"
        )
    if kernels.device_of(c) != a.device:
        raise ValueError(
            f"multiply_constant: the constant is on {c.device}, the tensor on {a.device}; "
            f"move one with .to(device) first"
        )
    return MultiplyConstant(c)(a)


class MulScalar(TensorOp):
    """``a * scalar``."""

    takes_integers = True

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray):
        return a * self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * self.scalar


def mul_scalar(a: Tensor, scalar) -> Tensor:
    """``a * scalar`` elementwise; same shape as ``a``."""
    _check_tensor("mul_scalar", a)
    return MulScalar(python_scalar("mul_scalar", scalar))(a)


class EWisePow(TensorOp):
    """``a ** b`` elementwise (``a`` > 0 where the gradient in ``b`` is needed)."""

    def compute(self, a: NDArray, b: NDArray):
        return a**b

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        grad_a = out_grad * b * power(a, b - 1)
        grad_b = out_grad * node * log(a)
        return grad_a, grad_b


def power(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a ** b`` with NumPy broadcasting."""
    return EWisePow()(*_broadcast_pair("power", a, b))


class PowerScalar(TensorOp):
    """``a ** scalar`` for any real exponent (e.g. 0.5 for a square root)."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray):
        return a**self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        if self.scalar == 0:
            return out_grad * 0
        a = node.inputs[0]
        return out_grad * (power_scalar(a, self.scalar - 1) * self.scalar)


def power_scalar(a: Tensor, scalar) -> Tensor:
    """``a ** scalar`` elementwise; same shape as ``a``."""
    _check_tensor("power_scalar", a)
    return PowerScalar(python_scalar("power_scalar", scalar))(a)


class EWiseDiv(TensorOp):
    """``a / b`` elementwise (division by zero gives inf/nan, as in NumPy)."""

    def compute(self, a: NDArray, b: NDArray):
        return a / b

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        return out_grad / b, -(out_grad * a) / (b * b)


def divide(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise ``a / b`` with NumPy broadcasting."""
    return EWiseDiv()(*_broadcast_pair("divide", a, b))


class DivScalar(TensorOp):
    """``a / scalar``."""

    def __init__(self, scalar):
        self.scalar = scalar

    def compute(self, a: NDArray):
        return a / self.scalar

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / self.scalar


def divide_scalar(a: Tensor, scalar) -> Tensor:
    """``a / scalar`` elementwise; same shape as ``a``."""
    _check_tensor("divide_scalar", a)
    return DivScalar(python_scalar("divide_scalar", scalar))(a)


# ----- elementwise unary ---------------------------------------------------------------------


class Negate(TensorOp):
    """``-a``."""

    takes_integers = True

    def compute(self, a: NDArray):
        return -a

    def gradient(self, out_grad: Tensor, node: Tensor):
        return -out_grad


def negate(a: Tensor) -> Tensor:
    """``-a`` elementwise."""
    _check_tensor("negate", a)
    return Negate()(a)


class AsType(TensorOp):
    """``a`` converted to ``dtype`` (a copy; float to integer truncates, as NumPy does)."""

    takes_integers = True

    def __init__(self, dtype: str):
        self.dtype = dtype

    def compute(self, a: NDArray):
        return a.astype(self.dtype)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return astype(out_grad, node.inputs[0].dtype)


def astype(a: Tensor, dtype) -> Tensor:
    """``a`` as ``dtype`` (one of ``needle.backends.DTYPES``), same shape; differentiable
    between float dtypes, and an integer or bool result never requires grad.

    >>> import needle as ndl
    >>> ndl.Tensor([1.7, -2.5]).astype("int32").numpy().tolist()
    [1, -2]
    """
    _check_tensor("astype", a)
    return AsType(check_dtype("astype", dtype))(a)


class Log(TensorOp):
    """Natural logarithm (``log(0) = -inf``, negative inputs give nan, as in NumPy)."""

    def compute(self, a: NDArray):
        return array_api.log(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad / node.inputs[0]


def log(a: Tensor) -> Tensor:
    """Natural logarithm elementwise."""
    _check_tensor("log", a)
    return Log()(a)


class Exp(TensorOp):
    """``e ** a``."""

    def compute(self, a: NDArray):
        return array_api.exp(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * node  # d/da exp(a) = exp(a), which is this node's value


def exp(a: Tensor) -> Tensor:
    """Exponential elementwise."""
    _check_tensor("exp", a)
    return Exp()(a)


class ReLU(TensorOp):
    """``max(a, 0)``."""

    def compute(self, a: NDArray):
        return array_api.maximum(a, 0)

    def gradient(self, out_grad: Tensor, node: Tensor):
        # The derivative at exactly 0 is taken as 0 (input > 0 passes the gradient).
        return ReLUGradient(node.inputs[0].realize_cached_data())(out_grad)


class ReLUGradient(TensorOp):
    """``out_grad * [x > 0]`` for a fixed array ``x``: the adjoint ReLU passes back.

    The values of the course's ``out_grad * Tensor(x > 0)``, without building the mask: one
    kernel pass on an NDArray device (``relu_backward``). Linear in ``out_grad``, so its own
    gradient is itself; ``x`` is data, not an input (its derivative is 0 wherever it exists).
    """

    def __init__(self, x: NDArray):
        self.x = x

    def compute(self, out_grad: NDArray):
        return kernels.relu_backward(out_grad, self.x)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return ReLUGradient(self.x)(out_grad)


def relu_gradient(out_grad: Tensor, x: Tensor) -> Tensor:
    """``out_grad * [x > 0]``, differentiable in ``out_grad`` only; both of one shape."""
    _check_tensor("relu_gradient", out_grad, "out_grad")
    _check_tensor("relu_gradient", x, "x")
    _check_same_shape("relu_gradient", out_grad, x)
    _check_same_device("relu_gradient", out_grad, x)
    return ReLUGradient(x.realize_cached_data())(out_grad)


def relu(a: Tensor) -> Tensor:
    """Rectified linear unit elementwise."""
    _check_tensor("relu", a)
    return ReLU()(a)


class Tanh(TensorOp):
    """Hyperbolic tangent."""

    def compute(self, a: NDArray):
        return array_api.tanh(a)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * (1 - node * node)


def tanh(a: Tensor) -> Tensor:
    """Hyperbolic tangent elementwise."""
    _check_tensor("tanh", a)
    return Tanh()(a)


class Sigmoid(TensorOp):
    """Logistic sigmoid ``1 / (1 + e^-a)``."""

    def compute(self, a: NDArray):
        # 1/(1+e^-a) overflows e^-a for a << 0, and (tanh(a/2)+1)/2 rounds to 0 below
        # a ~ -19. With e = e^-|a| (never overflows): 1/(1+e) for a >= 0, e/(1+e) below.
        e = array_api.exp(-array_api.maximum(a, -a))
        positive = (a >= 0).astype(a.dtype, copy=False)
        return (positive + (1 - positive) * e) / (1 + e)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return out_grad * node * (1 - node)


def sigmoid(a: Tensor) -> Tensor:
    """Logistic sigmoid elementwise."""
    _check_tensor("sigmoid", a)
    return Sigmoid()(a)


# ----- shape ops ---------------------------------------------------------------------------------


class Transpose(TensorOp):
    """Swap two axes (the last two when ``axes`` is None)."""

    takes_integers = True

    def __init__(self, axes: tuple | None = None):
        self.axes = axes

    def _pair(self, ndim: int) -> tuple[int, int]:
        return (ndim - 2, ndim - 1) if self.axes is None else self.axes

    def compute(self, a: NDArray):
        i, j = self._pair(a.ndim)
        return array_api.swapaxes(a, i, j)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return transpose(out_grad, self.axes)


def transpose(a: Tensor, axes: tuple | None = None) -> Tensor:
    """Swap two axes: the last two by default, else the two given in ``axes``."""
    _check_tensor("transpose", a)
    ndim = len(a.shape)
    if axes is None:
        if ndim < 2:
            raise ValueError(f"transpose: needs at least 2 dimensions, got shape {a.shape}")
    else:
        if len(axes) != 2:
            raise ValueError(
                f"transpose: axes must name exactly two axes to swap, got {axes!r} "
                f"(to reorder all axes use permute-like reshapes)"
            )
        for axis in axes:
            if not -ndim <= axis < ndim:
                raise ValueError(f"transpose: axis {axis} out of range for shape {a.shape}")
        axes = tuple(int(x) % ndim for x in axes)
    return Transpose(axes)(a)


class Reshape(TensorOp):
    """The same elements in a new shape."""

    takes_integers = True

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def compute(self, a: NDArray):
        return a.reshape(self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return reshape(out_grad, node.inputs[0].shape)


def reshape(a: Tensor, shape: tuple) -> Tensor:
    """``a`` in ``shape`` (one entry may be -1); the element count must not change."""
    _check_tensor("reshape", a)
    return Reshape(reshape_target("reshape", a.shape, shape))(a)


class BroadcastTo(TensorOp):
    """Repeat ``a`` along axes of size 1 and new leading axes to reach ``shape``."""

    takes_integers = True

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def compute(self, a: NDArray):
        return array_api.broadcast_to(a, self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return unbroadcast(out_grad, node.inputs[0].shape)


def broadcast_to(a: Tensor, shape: tuple) -> Tensor:
    """``a`` broadcast to ``shape`` (NumPy rules); the gradient sums back."""
    _check_tensor("broadcast_to", a)
    shape = check_shape("broadcast_to", shape)
    check_broadcastable_to("broadcast_to", a.shape, shape)
    return BroadcastTo(shape)(a)


class Summation(TensorOp):
    """Sum over ``axes`` (a tuple of non-negative axes), dropping them."""

    takes_integers = True

    def __init__(self, axes: tuple | None = None):
        self.axes = axes

    def compute(self, a: NDArray):
        return a.sum(axis=self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        shape = node.inputs[0].shape
        axes = normalize_axes("summation", self.axes, len(shape))
        return broadcast_to(reshape(out_grad, keepdims_shape(shape, axes)), shape)


def summation(a: Tensor, axes=None) -> Tensor:
    """Sum over ``axes``: None (all), an int or a tuple; the reduced axes are dropped.

    An empty reduction (an axis of length 0) gives zeros, as in NumPy.
    """
    _check_tensor("summation", a)
    if axes is not None:
        axes = normalize_axes("summation", axes, len(a.shape))
    return Summation(axes)(a)


class MatMul(TensorOp):
    """Matrix product; batch dimensions broadcast as in NumPy's ``matmul``.

    It computes with ``array_api.matmul``, which hands the transposed views of its gradient
    (``out_grad @ bᵀ``, ``aᵀ @ out_grad``) to the BLAS without copying them.
    """

    def compute(self, a: NDArray, b: NDArray):
        return array_api.matmul(a, b)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a, b = node.inputs
        grad_a = unbroadcast(matmul(out_grad, transpose(b)), a.shape) if a.requires_grad else None
        grad_b = unbroadcast(matmul(transpose(a), out_grad), b.shape) if b.requires_grad else None
        return grad_a, grad_b


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``: a (..., n, k) and b (..., k, m) → (..., n, m), batch dimensions broadcast."""
    _check_tensor("matmul", a, "a")
    _check_tensor("matmul", b, "b")
    _check_same_device("matmul", a, b)
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ValueError(
            f"matmul: a.shape={a.shape}, b.shape={b.shape}: both operands need at least 2 "
            f"dimensions; reshape a vector to (1, n) or (n, 1)"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: a.shape={a.shape}, b.shape={b.shape}: inner dimensions "
            f"{a.shape[-1]} and {b.shape[-2]} differ"
        )
    broadcast_shapes("matmul (batch dimensions)", a.shape[:-2], b.shape[:-2])
    return MatMul()(a, b)


class Flip(TensorOp):
    """Reverse the order of elements along ``axes``."""

    takes_integers = True

    def __init__(self, axes: tuple):
        self.axes = axes

    def compute(self, a: NDArray):
        return array_api.flip(a, self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return flip(out_grad, self.axes)


def flip(a: Tensor, axes) -> Tensor:
    """``a`` reversed along each axis in ``axes`` (an int or a tuple)."""
    _check_tensor("flip", a)
    return Flip(normalize_axes("flip", axes, len(a.shape)))(a)


class Dilate(TensorOp):
    """Insert ``dilation`` zeros after every element along ``axes``.

    An axis of length n becomes n·(dilation + 1) long (the course's convention).
    """

    takes_integers = True

    def __init__(self, axes: tuple, dilation: int):
        self.axes = axes
        self.dilation = dilation

    def _index(self, ndim: int) -> tuple:
        step = self.dilation + 1
        return tuple(
            slice(None, None, step) if i in self.axes else slice(None) for i in range(ndim)
        )

    def compute(self, a: NDArray):
        shape = tuple(
            s * (self.dilation + 1) if i in self.axes else s for i, s in enumerate(a.shape)
        )
        out = array_api.zeros_like(a, shape=shape)
        out[self._index(a.ndim)] = a
        return out

    def gradient(self, out_grad: Tensor, node: Tensor):
        return undilate(out_grad, self.axes, self.dilation)


def _check_dilation(op_name: str, dilation) -> int:
    if not isinstance(dilation, int) or dilation < 0:
        raise ValueError(f"{op_name}: dilation must be an int >= 0, got {dilation!r}")
    return dilation


def dilate(a: Tensor, axes, dilation: int) -> Tensor:
    """``a`` with ``dilation`` zeros inserted after each element along ``axes``."""
    _check_tensor("dilate", a)
    axes = normalize_axes("dilate", axes, len(a.shape))
    return Dilate(axes, _check_dilation("dilate", dilation))(a)


class UnDilate(TensorOp):
    """Keep every (dilation + 1)-th element along ``axes`` (the inverse of :class:`Dilate`)."""

    takes_integers = True

    def __init__(self, axes: tuple, dilation: int):
        self.axes = axes
        self.dilation = dilation

    def compute(self, a: NDArray):
        return a[Dilate(self.axes, self.dilation)._index(a.ndim)]

    def gradient(self, out_grad: Tensor, node: Tensor):
        return dilate(out_grad, self.axes, self.dilation)


def undilate(a: Tensor, axes, dilation: int) -> Tensor:
    """Every (dilation + 1)-th element of ``a`` along ``axes``."""
    _check_tensor("undilate", a)
    axes = normalize_axes("undilate", axes, len(a.shape))
    dilation = _check_dilation("undilate", dilation)
    for axis in axes:
        if a.shape[axis] % (dilation + 1):
            raise ValueError(
                f"undilate: axis {axis} of shape {a.shape} is not a multiple of dilation + 1 = "
                f"{dilation + 1}"
            )
    return UnDilate(axes, dilation)(a)


__all__ = [
    "unbroadcast",
    "EWiseAdd",
    "add",
    "AddScalar",
    "add_scalar",
    "EWiseMul",
    "multiply",
    "MultiplyConstant",
    "multiply_constant",
    "MulScalar",
    "mul_scalar",
    "EWisePow",
    "power",
    "PowerScalar",
    "power_scalar",
    "EWiseDiv",
    "divide",
    "DivScalar",
    "divide_scalar",
    "Negate",
    "AsType",
    "astype",
    "negate",
    "Log",
    "log",
    "Exp",
    "exp",
    "ReLU",
    "relu",
    "ReLUGradient",
    "relu_gradient",
    "Tanh",
    "tanh",
    "Sigmoid",
    "sigmoid",
    "Transpose",
    "transpose",
    "Reshape",
    "reshape",
    "BroadcastTo",
    "broadcast_to",
    "Summation",
    "summation",
    "MatMul",
    "matmul",
    "Flip",
    "flip",
    "Dilate",
    "dilate",
    "UnDilate",
    "undilate",
]

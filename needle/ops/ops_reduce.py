"""Reductions with PyTorch's names: max/min (values, or values and indices along a dim),
argmax/argmin, mean, var/std and prod.

Every reduction takes the axes as ``axis`` (NumPy) or ``dim`` (PyTorch): None for all, an
int or a tuple, negative allowed; and ``keepdims``/``keepdim`` to keep the reduced axes as
size 1.

Ties: ``amax``/``amin`` (and ``max``/``min`` without a dim) split the gradient evenly among
the elements equal to the result (PyTorch's rule for ``amax``); ``max(a, dim)`` returns
indices and sends the gradient to the indexed element only, the first maximum (PyTorch's
rule for ``max(dim)``).
"""

from __future__ import annotations

from typing import NamedTuple

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api, kernels
from ._shapes import keepdims_shape, normalize_axes
from .ops_elementwise import _mask, eq, sqrt
from .ops_indexing import gather, where
from .ops_mathematic import _check_tensor, broadcast_to, reshape, summation


def reduction_axes(owner: str, ndim: int, axis, dim) -> tuple[int, ...] | None:
    """The axes of a reduction given as ``axis`` or ``dim`` (not both), normalized."""
    if dim is not None:
        if axis is not None:
            raise TypeError(f"{owner}: give the axes as axis or as dim, not both")
        axis = dim
    return None if axis is None else normalize_axes(owner, axis, ndim)


def _keep(keepdims: bool, keepdim: bool | None) -> bool:
    return bool(keepdims if keepdim is None else keepdim)


def _expand(grad: Tensor, shape: tuple, axes: tuple, keepdims: bool) -> Tensor:
    """A reduction's ``grad`` broadcast back over the reduced ``axes`` of ``shape``."""
    if not keepdims:
        grad = reshape(grad, keepdims_shape(shape, axes))
    return broadcast_to(grad, shape)


def _all_axes(axes: tuple | None, ndim: int) -> tuple:
    return tuple(range(ndim)) if axes is None else axes


class Max(TensorOp):
    """The maximum over ``axes`` (None: all); ties share the gradient evenly."""

    takes_integers = True

    def __init__(self, axes: tuple | None, keepdims: bool = False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a: NDArray):
        return array_api.max(a, axis=self.axes, keepdims=self.keepdims)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a = node.inputs[0]
        axes = _all_axes(self.axes, len(a.shape))
        winners = _mask(eq(a, _expand(node, a.shape, axes, self.keepdims)), out_grad.dtype)
        count = _expand(summation(winners, axes), a.shape, axes, False)
        return _expand(out_grad, a.shape, axes, self.keepdims) * winners / count


def amax(
    a: Tensor, axis=None, keepdims: bool = False, *, dim=None, keepdim: bool | None = None
) -> Tensor:
    """The maximum over ``axis``/``dim`` (torch.amax, np.amax); ties split the gradient
    evenly. An empty reduction raises ValueError."""
    _check_tensor("amax", a)
    axes = reduction_axes("amax", len(a.shape), axis, dim)
    if any(a.shape[i] == 0 for i in _all_axes(axes, len(a.shape))):
        raise ValueError(f"amax: cannot reduce an empty axis of shape {a.shape}")
    return Max(axes, _keep(keepdims, keepdim))(a)


def amin(
    a: Tensor, axis=None, keepdims: bool = False, *, dim=None, keepdim: bool | None = None
) -> Tensor:
    """The minimum over ``axis``/``dim`` (torch.amin), as ``-amax(-a)``; ties split evenly."""
    _check_tensor("amin", a)
    return -amax(-a, axis, keepdims, dim=dim, keepdim=keepdim)


class ArgReduce(TensorOp):
    """int64 index of the first maximum (``kind="argmax"``) or minimum along ``axis`` (None:
    of the flattened tensor). An integer result: never differentiated."""

    takes_integers = True

    def __init__(self, kind: str, axis: int | None, keepdims: bool):
        self.kind, self.axis, self.keepdims = kind, axis, keepdims

    def compute(self, a: NDArray):
        return getattr(array_api, self.kind)(a, axis=self.axis, keepdims=self.keepdims)


def _arg_reduce(kind: str, a: Tensor, dim, keepdim: bool) -> Tensor:
    _check_tensor(kind, a)
    if dim is None:
        if a.size == 0:
            raise ValueError(f"{kind}: cannot reduce an empty tensor of shape {a.shape}")
        return ArgReduce(kind, None, bool(keepdim))(a)
    if isinstance(dim, tuple):
        raise TypeError(f"{kind}: dim must be one int, got {dim!r}")
    (axis,) = normalize_axes(kind, dim, len(a.shape))
    if a.shape[axis] == 0:
        raise ValueError(f"{kind}: cannot reduce the empty axis {axis} of shape {a.shape}")
    return ArgReduce(kind, axis, bool(keepdim))(a)


def argmax(a: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the first maximum along ``dim`` (None: of the flattened tensor), as
    torch.argmax."""
    return _arg_reduce("argmax", a, dim, keepdim)


def argmin(a: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """int64 index of the first minimum along ``dim``, as torch.argmin."""
    return _arg_reduce("argmin", a, dim, keepdim)


class ValuesIndices(NamedTuple):
    """What ``max``/``min`` along a dim return (PyTorch's ``values, indices``)."""

    values: Tensor
    indices: Tensor


def _extreme(kind: str, a: Tensor, dim, keepdim: bool):
    if dim is None:
        return amax(a) if kind == "argmax" else amin(a)
    indices = _arg_reduce(kind, a, dim, True)
    values = gather(a, dim, indices)
    if not keepdim:
        (axis,) = normalize_axes(kind, dim, len(a.shape))
        drop = tuple(s for i, s in enumerate(a.shape) if i != axis)
        values, indices = reshape(values, drop), reshape(indices, drop)
    return ValuesIndices(values, indices)


def max(a: Tensor, dim: int | None = None, keepdim: bool = False):  # noqa: A001
    """torch.max: with no ``dim``, the maximum of all elements (a 0-d tensor; ties split the
    gradient); with an int ``dim``, ``(values, indices)`` along it, the gradient going to the
    indexed (first) maximum."""
    return _extreme("argmax", a, dim, keepdim)


def min(a: Tensor, dim: int | None = None, keepdim: bool = False):  # noqa: A001
    """torch.min: the minimum of all elements, or ``(values, indices)`` along ``dim``."""
    return _extreme("argmin", a, dim, keepdim)


def _count(shape: tuple, axes: tuple | None) -> int:
    count = 1
    for i in _all_axes(axes, len(shape)):
        count *= shape[i]
    return count


def mean(
    a: Tensor, axis=None, keepdims: bool = False, *, dim=None, keepdim: bool | None = None
) -> Tensor:
    """The mean over ``axis``/``dim`` (torch.mean); an empty reduction gives nan."""
    _check_tensor("mean", a)
    axes = reduction_axes("mean", len(a.shape), axis, dim)
    total = summation(a, axes)
    if _keep(keepdims, keepdim):
        total = reshape(total, keepdims_shape(a.shape, _all_axes(axes, len(a.shape))))
    count = _count(a.shape, axes)
    return total / count if count else total * float("nan")


def var(
    a: Tensor,
    axis=None,
    keepdims: bool = False,
    *,
    dim=None,
    keepdim: bool | None = None,
    correction: int = 1,
) -> Tensor:
    """The variance over ``axis``/``dim``: ``sum((a - mean)²) / (n - correction)``.
    ``correction=1`` (the default) is PyTorch's unbiased estimate; NumPy's default is 0."""
    _check_tensor("var", a)
    axes = reduction_axes("var", len(a.shape), axis, dim)
    centred = a - broadcast_to(mean(a, axes, keepdims=True), a.shape)
    total = summation(centred * centred, axes)
    if _keep(keepdims, keepdim):
        total = reshape(total, keepdims_shape(a.shape, _all_axes(axes, len(a.shape))))
    return total / (_count(a.shape, axes) - correction)


def std(
    a: Tensor,
    axis=None,
    keepdims: bool = False,
    *,
    dim=None,
    keepdim: bool | None = None,
    correction: int = 1,
) -> Tensor:
    """The standard deviation ``sqrt(var(...))`` (torch.std; ``correction=1`` by default)."""
    return sqrt(var(a, axis, keepdims, dim=dim, keepdim=keepdim, correction=correction))


class Prod(TensorOp):
    """The product over ``axes``. The gradient of each element is the product of the others
    in its slice, exact with zeros: where an element is 0 it is the product of the non-zero
    others if it is the slice's only zero, else 0."""

    def __init__(self, axes: tuple | None, keepdims: bool = False):
        self.axes, self.keepdims = axes, keepdims

    def compute(self, a: NDArray):
        return kernels.reduce_prod(a, self.axes, self.keepdims)

    def gradient(self, out_grad: Tensor, node: Tensor):
        a = node.inputs[0]
        axes = _all_axes(self.axes, len(a.shape))
        zero = eq(a, 0)
        nonzero = where(zero, 1.0, a)
        lone_zero = eq(summation(_mask(zero, a.dtype), axes), 1)
        others_of_zero = Prod(axes, True)(nonzero) * _mask(
            reshape(lone_zero, keepdims_shape(a.shape, axes)), a.dtype
        )
        others = where(
            zero,
            broadcast_to(others_of_zero, a.shape),
            _expand(node, a.shape, axes, self.keepdims) / nonzero,
        )
        return _expand(out_grad, a.shape, axes, self.keepdims) * others


def prod(
    a: Tensor, axis=None, keepdims: bool = False, *, dim=None, keepdim: bool | None = None
) -> Tensor:
    """The product over ``axis``/``dim`` (torch.prod, np.prod); an empty product is 1."""
    _check_tensor("prod", a)
    axes = reduction_axes("prod", len(a.shape), axis, dim)
    return Prod(axes, _keep(keepdims, keepdim))(a)


__all__ = [
    "Max",
    "amax",
    "amin",
    "ArgReduce",
    "argmax",
    "argmin",
    "ValuesIndices",
    "max",
    "min",
    "mean",
    "var",
    "std",
    "Prod",
    "prod",
]

"""Ops that make or take apart tuples of tensors: stack, split and the tuple plumbing."""

from __future__ import annotations

from collections.abc import Sequence

from ..autograd import Tensor, TensorOp, TensorTuple, TensorTupleOp
from ..backends import NDArray, array_api
from ._shapes import python_scalar
from .ops_mathematic import _check_tensor


class MakeTensorTuple(TensorTupleOp):
    """Group tensors into one :class:`TensorTuple` node."""

    takes_integers = True

    def compute(self, *args: NDArray):
        return tuple(args)

    def gradient(self, out_grad: TensorTuple, node: TensorTuple):
        return tuple(out_grad[i] for i in range(len(out_grad)))


def make_tuple(*args: Tensor) -> TensorTuple:
    """A TensorTuple of ``args``."""
    for i, arg in enumerate(args):
        _check_tensor("make_tuple", arg, f"{i}")
    return MakeTensorTuple()(*args)


class TupleGetItem(TensorOp):
    """Element ``index`` of a TensorTuple.

    Its ``tuple_index`` tells the backward pass that it takes one element as it is: the
    engine adds its adjoint to that element of the tuple's adjoint directly, where
    :meth:`gradient` (kept for the graph pictures) spells out a whole tuple of zeros.
    """

    takes_integers = True

    def __init__(self, index: int):
        self.index = index

    @property
    def tuple_index(self) -> int:
        return self.index

    def __call__(self, a: TensorTuple, fold_const: bool = True) -> Tensor:
        # Taking an element of a tuple just made by make_tuple is that element itself.
        if fold_const and isinstance(a.op, MakeTensorTuple):
            return a.inputs[self.index]
        return Tensor.make_from_op(self, [a])

    def compute(self, a: tuple):
        return a[self.index]

    def gradient(self, out_grad: Tensor, node: Tensor):
        parts = node.inputs[0].realize_cached_data()
        grads = [
            out_grad if i == self.index else Tensor.make_const(array_api.zeros_like(part))
            for i, part in enumerate(parts)
        ]
        return make_tuple(*grads)


def tuple_get_item(value: TensorTuple, index: int) -> Tensor:
    """Element ``index`` of ``value``."""
    if not isinstance(value, TensorTuple):
        raise TypeError(
            f"tuple_get_item: argument must be a needle.TensorTuple, got {type(value).__name__}"
        )
    length = len(value.realize_cached_data())
    if not -length <= index < length:
        raise IndexError(f"tuple_get_item: index {index} out of range for a tuple of {length}")
    return TupleGetItem(index % length)(value)


class FusedAddScalars(TensorTupleOp):
    """``(a + c0, a + c1)`` as one op."""

    def __init__(self, c0: float, c1: float):
        self.c0 = c0
        self.c1 = c1

    def compute(self, a: NDArray):
        return a + self.c0, a + self.c1

    def gradient(self, out_grad: TensorTuple, node: TensorTuple):
        return out_grad[0] + out_grad[1]


def fused_add_scalars(x: Tensor, c0: float, c1: float) -> TensorTuple:
    """The tuple ``(x + c0, x + c1)``."""
    _check_tensor("fused_add_scalars", x, "x")
    return FusedAddScalars(
        python_scalar("fused_add_scalars", c0), python_scalar("fused_add_scalars", c1)
    )(x)


class Stack(TensorOp):
    """Stack equally shaped tensors along a new axis ``axis``."""

    takes_integers = True

    def __init__(self, axis: int):
        self.axis = axis

    def compute(self, args: tuple):
        return array_api.stack(args, axis=self.axis)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return split(out_grad, self.axis)


def stack(args: Sequence[Tensor], axis: int) -> Tensor:
    """Stack ``args`` (all of one shape) along a new axis: shape[axis] = len(args)."""
    args = list(args)
    if not args:
        raise ValueError("stack: needs at least one tensor, got an empty sequence")
    for i, arg in enumerate(args):
        _check_tensor("stack", arg, f"args[{i}]")
    shapes = {a.shape for a in args}
    if len(shapes) > 1:
        raise ValueError(
            f"stack: all tensors must have the same shape, got {[a.shape for a in args]}"
        )
    devices = {str(a.device) for a in args}
    if len(devices) > 1:
        raise ValueError(f"stack: all tensors must be on one device, got {sorted(devices)}")
    ndim = len(args[0].shape) + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"stack: axis {axis} out of range for stacking into {ndim} dimensions")
    return Stack(axis % ndim)(make_tuple(*args))


class Split(TensorTupleOp):
    """Split along ``axis`` into its slices (that axis removed): the inverse of :class:`Stack`."""

    takes_integers = True

    def __init__(self, axis: int):
        self.axis = axis

    def compute(self, a: NDArray):
        # Slices keep the axis on both backends (an int index drops it only in NumPy),
        # so each piece is reshaped explicitly.
        lead = (slice(None),) * self.axis
        shape = a.shape[: self.axis] + a.shape[self.axis + 1 :]
        return tuple(a[lead + (slice(i, i + 1),)].reshape(shape) for i in range(a.shape[self.axis]))

    def gradient(self, out_grad: TensorTuple, node: TensorTuple):
        return stack(list(out_grad), self.axis)


def split(a: Tensor, axis: int) -> TensorTuple:
    """The slices of ``a`` along ``axis`` (each of shape a.shape without ``axis``)."""
    _check_tensor("split", a)
    ndim = len(a.shape)
    if not -ndim <= axis < ndim:
        raise ValueError(f"split: axis {axis} out of range for shape {a.shape}")
    return Split(axis % ndim)(a)


__all__ = [
    "MakeTensorTuple",
    "make_tuple",
    "TupleGetItem",
    "tuple_get_item",
    "FusedAddScalars",
    "fused_add_scalars",
    "Stack",
    "stack",
    "Split",
    "split",
]

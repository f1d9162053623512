"""Shape ops with PyTorch's names, next to the course's ``reshape``/``transpose``/
``broadcast_to``: ``permute`` (an op), and ``squeeze``, ``unsqueeze``, ``flatten``,
``view``, ``expand``, ``repeat`` and ``tile``, made of ``reshape`` and ``broadcast_to``
(so their gradients come with them).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api
from ._shapes import normalize_axes
from .ops_mathematic import _check_tensor, broadcast_to, reshape


def _sizes(args: tuple) -> tuple:
    """``f(2, 3)`` and ``f((2, 3))`` alike: PyTorch takes sizes either way."""
    if len(args) == 1 and not isinstance(args[0], numbers.Integral):
        return tuple(args[0])
    return tuple(args)


class Permute(TensorOp):
    """The axes reordered: ``out.shape[i] = a.shape[axes[i]]`` (a view)."""

    takes_integers = True

    def __init__(self, axes: tuple):
        self.axes = axes

    def compute(self, a: NDArray):
        return array_api.transpose(a, self.axes)

    def gradient(self, out_grad: Tensor, node: Tensor):
        inverse = tuple(sorted(range(len(self.axes)), key=self.axes.__getitem__))
        return Permute(inverse)(out_grad)


def permute(a: Tensor, *dims) -> Tensor:
    """``a`` with its axes reordered by ``dims``, a permutation (torch.permute,
    np.transpose with axes); negative axes allowed."""
    _check_tensor("permute", a)
    dims = _sizes(dims)
    ndim = len(a.shape)
    if len(normalize_axes("permute", dims, ndim)) != ndim:  # range and repeats checked there
        raise ValueError(f"permute: {dims} is not a permutation of the {ndim} axes of {a.shape}")
    axes = tuple(int(d) % ndim for d in dims)
    return Permute(axes)(a)


def squeeze(a: Tensor, dim=None) -> Tensor:
    """``a`` without axes of size 1: all of them, or those in ``dim`` (an int or a tuple) —
    a listed axis whose size is not 1 is kept, as in torch.squeeze."""
    _check_tensor("squeeze", a)
    axes = normalize_axes("squeeze", dim, len(a.shape))
    return reshape(a, tuple(s for i, s in enumerate(a.shape) if not (i in axes and s == 1)))


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    """``a`` with a new axis of size 1 at position ``dim`` (from ``-a.ndim - 1`` to
    ``a.ndim``), as torch.unsqueeze."""
    _check_tensor("unsqueeze", a)
    (axis,) = normalize_axes("unsqueeze", dim, len(a.shape) + 1)
    return reshape(a, a.shape[:axis] + (1,) + a.shape[axis:])


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``a`` with the axes ``start_dim..end_dim`` (inclusive) merged into one
    (torch.flatten); a 0-d tensor becomes shape (1,)."""
    _check_tensor("flatten", a)
    if not a.shape:
        return reshape(a, (1,))
    (start,) = normalize_axes("flatten", start_dim, len(a.shape))
    (end,) = normalize_axes("flatten", end_dim, len(a.shape))
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(a, a.shape[:start] + (_product(a.shape[start : end + 1]),) + a.shape[end + 1 :])


def _product(sizes: Sequence[int]) -> int:
    total = 1
    for s in sizes:
        total *= s
    return total


def view(a: Tensor, *shape) -> Tensor:
    """``a`` in ``shape`` (one -1 allowed), PyTorch's name for :func:`reshape`. Unlike
    PyTorch's it works on any layout (copying when the strides need it)."""
    return reshape(a, _sizes(shape))


def expand(a: Tensor, *sizes) -> Tensor:
    """``a`` broadcast to ``sizes``, where -1 keeps that axis's size (torch.expand)."""
    _check_tensor("expand", a)
    sizes = _sizes(sizes)
    lead = len(sizes) - len(a.shape)
    if lead < 0:
        raise ValueError(f"expand: {sizes} has fewer dimensions than the tensor's {a.shape}")
    if any(s == -1 for s in sizes[:lead]):
        raise ValueError(f"expand: -1 is not allowed for the new leading axes in {sizes}")
    target = sizes[:lead] + tuple(
        old if new == -1 else new for old, new in zip(a.shape, sizes[lead:])
    )
    return broadcast_to(a, target)


def _tile(owner: str, a: Tensor, reps: tuple) -> Tensor:
    """``a`` repeated ``reps[i]`` times along axis i, ``len(reps) >= a.ndim``: each axis of
    size s becomes a pair (r, s) broadcast from (1, s), then the pairs are merged."""
    if any(not isinstance(r, numbers.Integral) or r < 0 for r in reps):
        raise ValueError(f"{owner}: repetitions must be ints >= 0, got {reps}")
    shape = (1,) * (len(reps) - len(a.shape)) + a.shape
    pairs = tuple(x for s in shape for x in (1, s))
    wide = tuple(x for r, s in zip(reps, shape) for x in (int(r), s))
    merged = tuple(int(r) * s for r, s in zip(reps, shape))
    return reshape(broadcast_to(reshape(a, pairs), wide), merged)


def repeat(a: Tensor, *repeats) -> Tensor:
    """``a`` repeated along each axis (torch.Tensor.repeat, np.tile): ``repeats`` has at
    least ``a.ndim`` entries; extra ones add leading axes."""
    _check_tensor("repeat", a)
    repeats = _sizes(repeats)
    if len(repeats) < len(a.shape):
        raise ValueError(
            f"repeat: {len(repeats)} repetitions for a tensor of shape {a.shape}; give at least "
            f"one per dimension (or use tile, which pads them with 1s)"
        )
    return _tile("repeat", a, repeats)


def tile(a: Tensor, reps) -> Tensor:
    """``a`` repeated along each axis (torch.tile, np.tile); fewer ``reps`` than axes are
    padded with leading 1s."""
    _check_tensor("tile", a)
    reps = _sizes((reps,))
    return _tile("tile", a, (1,) * (len(a.shape) - len(reps)) + reps)


__all__ = [
    "Permute",
    "permute",
    "squeeze",
    "unsqueeze",
    "flatten",
    "view",
    "expand",
    "repeat",
    "tile",
]

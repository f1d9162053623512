"""Indexing and selection: ``t[key]``, writing at a key, ``gather``/``scatter_add`` along a
dim, ``where``/``masked_fill``, and joining and cutting along an axis (``cat``, ``split``,
``chunk``).

Three ops carry all the indexing: :class:`GetItem` (read at an index), :class:`AddAt`
(its gradient: add at an index into zeros; repeated positions accumulate) and
:class:`IndexPut` (write at an index). Each is the others' gradient, so every derivative is
made of them. Keys are parsed by :mod:`needle.ops._index` (NumPy's rules, clear errors).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from ..autograd import Tensor, TensorOp
from ..backends import NDArray, array_api
from ._index import Index, add_at, basic_view, parse_index, put, take
from ._shapes import broadcast_shapes, check_broadcastable_to, normalize_axes, python_scalar
from .ops_mathematic import BroadcastTo, _check_same_device, _check_tensor, astype


def _const_like(value, like: Tensor, shape: tuple = ()) -> Tensor:
    """A constant tensor of ``shape`` filled with ``value``, of ``like``'s dtype and device."""
    return Tensor.make_const(like.device.full(shape, value, dtype=like.dtype))


# ----- reading and writing at an index ----------------------------------------------------------


class GetItem(TensorOp):
    """``a[index]``: a strided view for a basic index, a gather for an advanced one."""

    takes_integers = True

    def __init__(self, index: Index):
        self.index = index

    def compute(self, a: NDArray):
        return basic_view(a, self.index) if self.index.basic else take(a, self.index)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return AddAt(self.index, node.inputs[0].shape)(out_grad)


class AddAt(TensorOp):
    """Zeros of ``shape`` with ``values`` (of the index's shape) added at ``index``
    (``np.add.at``): repeated positions accumulate. The gradient of :class:`GetItem`."""

    def __init__(self, index: Index, shape: tuple):
        self.index = index
        self.shape = tuple(shape)

    def compute(self, values: NDArray):
        return add_at(values, self.index, self.shape)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return GetItem(self.index)(out_grad)


class IndexPut(TensorOp):
    """A copy of ``a`` with ``values`` (of the index's shape and ``a``'s dtype) written at
    ``index``. Gradients: ``out_grad`` with zeros at the index for ``a``; ``out_grad[index]``
    for ``values`` (with repeated positions, every written value gets the gradient of the
    position, although only the last write is kept)."""

    takes_integers = True

    def __init__(self, index: Index):
        self.index = index

    def compute(self, a: NDArray, values: NDArray):
        return put(a, self.index, values)

    def gradient(self, out_grad: Tensor, node: Tensor):
        cleared = IndexPut(self.index)(out_grad, _const_like(0, out_grad, self.index.shape))
        return cleared, GetItem(self.index)(out_grad)


def getitem(a: Tensor, key) -> Tensor:
    """``a[key]`` with NumPy's and PyTorch's rules: ints (dropping their axis), slices (any
    non-zero step), None, ``...``, integer arrays or tensors (a gather) and bool masks.

    Basic keys give views (no copy); the gradient scatters back, repeated indices adding up.
    """
    _check_tensor("getitem", a)
    return GetItem(parse_index("getitem", a.shape, key))(a)


def index_put(a: Tensor, key, values) -> Tensor:
    """A copy of ``a`` with ``values`` (a tensor broadcast to ``a[key]``'s shape, or a scalar)
    written at ``key`` (PyTorch's out-of-place ``index_put``; the form ``t[key] = v`` takes).
    Differentiable in ``a`` and ``values``."""
    _check_tensor("index_put", a)
    index = parse_index("index_put", a.shape, key)
    if not isinstance(values, Tensor):
        values = _const_like(python_scalar("index_put", values), a)
    _check_same_device("index_put", a, values)
    check_broadcastable_to("index_put", values.shape, index.shape)
    if values.dtype != a.dtype:
        values = astype(values, a.dtype)
    if values.shape != index.shape:
        values = BroadcastTo(index.shape)(values)
    return IndexPut(index)(a, values)


# ----- gather and scatter along a dim -----------------------------------------------------------


def _dim_key(owner: str, a: Tensor, dim: int, index) -> tuple[int, tuple]:
    """The normalized ``dim`` and the advanced key that picks ``a[..., index[i], ...]`` along
    ``dim`` at every position ``i`` of ``index`` (which has ``a``'s number of dimensions)."""
    (dim,) = normalize_axes(owner, dim, len(a.shape))
    ids = index.numpy() if isinstance(index, Tensor) else np.asarray(index)
    if ids.ndim != len(a.shape):
        raise ValueError(
            f"{owner}: index has shape {ids.shape} but the tensor has shape {a.shape}; they "
            f"need the same number of dimensions"
        )
    for axis, (n, size) in enumerate(zip(ids.shape, a.shape)):
        if axis != dim and n > size:
            raise ValueError(
                f"{owner}: index shape {ids.shape} is larger than the tensor's shape {a.shape} "
                f"at axis {axis} ({n} > {size})"
            )
    key = tuple(
        ids if axis == dim else np.arange(n).reshape((-1,) + (1,) * (ids.ndim - axis - 1))
        for axis, n in enumerate(ids.shape)
    )
    return dim, key


def gather(a: Tensor, dim: int, index) -> Tensor:
    """``out[i][j][k] = a[index[i][j][k]][j][k]`` for ``dim=0`` (and so on): values along
    ``dim`` picked by an integer ``index`` of ``a``'s number of dimensions (torch.gather,
    np.take_along_axis); the result has ``index``'s shape."""
    _check_tensor("gather", a)
    _, key = _dim_key("gather", a, dim, index)
    return GetItem(parse_index("gather", a.shape, key))(a)


def scatter_add(a: Tensor, dim: int, index, src: Tensor) -> Tensor:
    """``a`` plus ``src`` added at the positions ``index`` names along ``dim``
    (torch.scatter_add): ``out[index[i][j]][j] += src[i][j]`` for ``dim=0``; repeated
    positions accumulate. ``src`` covers at least ``index``'s shape (the rest is unused)."""
    _check_tensor("scatter_add", a)
    _check_tensor("scatter_add", src, "src")
    _, key = _dim_key("scatter_add", a, dim, index)
    index = parse_index("scatter_add", a.shape, key)
    if len(src.shape) != len(index.shape) or any(s < n for s, n in zip(src.shape, index.shape)):
        raise ValueError(
            f"scatter_add: src has shape {src.shape}, smaller than the index's {index.shape}"
        )
    if src.shape != index.shape:
        src = getitem(src, tuple(slice(0, n) for n in index.shape))
    return a + AddAt(index, a.shape)(src)


# ----- selection ---------------------------------------------------------------------------------


class Where(TensorOp):
    """``a`` where the constant bool array ``condition`` is true, else ``b`` (all of one
    shape). The gradient goes to ``a`` where it was chosen, to ``b`` elsewhere."""

    takes_integers = True

    def __init__(self, condition: NDArray):
        self.condition = condition

    def compute(self, a: NDArray, b: NDArray):
        return array_api.where(self.condition, a, b)

    def gradient(self, out_grad: Tensor, node: Tensor):
        zeros = _const_like(0, out_grad, out_grad.shape)
        return Where(self.condition)(out_grad, zeros), Where(self.condition)(zeros, out_grad)


def where(condition: Tensor, a, b) -> Tensor:
    """``a`` where ``condition`` (a bool tensor) is true, else ``b`` (torch.where): the three
    broadcast together; ``a`` or ``b`` may be a scalar. Differentiable in ``a`` and ``b``."""
    _check_tensor("where", condition, "condition")
    if condition.dtype != "bool":
        raise TypeError(
            f"where: condition must be a bool tensor (e.g. x > 0), got dtype {condition.dtype}"
        )
    like = a if isinstance(a, Tensor) else b
    _check_tensor("where", like, "a or b")
    a = a if isinstance(a, Tensor) else _const_like(python_scalar("where", a), like)
    b = b if isinstance(b, Tensor) else _const_like(python_scalar("where", b), like)
    shape = broadcast_shapes("where", condition.shape, a.shape, b.shape)
    _check_same_device("where", a, b)
    _check_same_device("where", condition, a)
    a, b = (x if x.shape == shape else BroadcastTo(shape)(x) for x in (a, b))
    mask = array_api.broadcast_to(condition.realize_cached_data(), shape)
    return Where(mask)(a, b)


def masked_fill(a: Tensor, mask: Tensor, value) -> Tensor:
    """``a`` with ``value`` (a scalar) where the bool ``mask`` (broadcast to ``a``) is true
    (torch.masked_fill); the gradient is 0 there."""
    _check_tensor("masked_fill", a)
    _check_tensor("masked_fill", mask, "mask")
    check_broadcastable_to("masked_fill", mask.shape, a.shape)
    return where(mask, python_scalar("masked_fill", value), a)


# ----- joining and cutting -----------------------------------------------------------------------


class Concatenate(TensorOp):
    """Tensors joined along an existing ``axis`` (all other dimensions equal)."""

    takes_integers = True

    def __init__(self, axis: int):
        self.axis = axis

    def compute(self, *arrays: NDArray):
        return array_api.concatenate(arrays, axis=self.axis)

    def gradient(self, out_grad: Tensor, node: Tensor):
        sizes = [x.shape[self.axis] for x in node.inputs]
        return split_with_sizes(out_grad, sizes, self.axis)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """``tensors`` joined along ``dim`` (torch.cat, np.concatenate); the other dimensions
    must agree. Differentiable in every input."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    for i, t in enumerate(tensors):
        _check_tensor("cat", t, f"tensors[{i}]")
        _check_same_device("cat", tensors[0], t)
    shapes = [t.shape for t in tensors]
    if any(len(s) != len(shapes[0]) for s in shapes) or not shapes[0]:
        raise ValueError(
            f"cat: all tensors need the same number of dimensions (at least 1), got shapes {shapes}"
        )
    (dim,) = normalize_axes("cat", dim, len(shapes[0]))
    rest = {s[:dim] + s[dim + 1 :] for s in shapes}
    if len(rest) > 1:
        raise ValueError(
            f"cat: shapes {shapes} differ outside dim {dim}; every dimension but the one "
            f"joined must match"
        )
    return Concatenate(dim)(*tensors)


concatenate = cat


def split_with_sizes(a: Tensor, sizes: Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
    """``a`` cut along ``dim`` into consecutive pieces of the given ``sizes`` (which add up
    to ``a.shape[dim]``): a tuple of views (torch.split_with_sizes)."""
    _check_tensor("split_with_sizes", a)
    (dim,) = normalize_axes("split_with_sizes", dim, len(a.shape))
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != a.shape[dim]:
        raise ValueError(
            f"split_with_sizes: sizes {sizes} must be >= 0 and add up to {a.shape[dim]}, the "
            f"size of dim {dim} of shape {a.shape}"
        )
    starts = np.cumsum([0] + sizes)
    lead = (slice(None),) * dim
    return tuple(
        getitem(a, lead + (slice(int(start), int(start) + size),))
        for start, size in zip(starts, sizes)
    )


def split_size(a: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """PyTorch's ``Tensor.split``: pieces of ``split_size_or_sections`` along ``dim`` (the last
    one smaller if it does not divide), or of each size in a list."""
    if isinstance(split_size_or_sections, numbers.Integral):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: the split size must be positive, got {step}")
        (axis,) = normalize_axes("split", dim, len(a.shape))
        n = a.shape[axis]
        sizes = [min(step, n - start) for start in range(0, n, step)] or [0]
        return split_with_sizes(a, sizes, dim)
    return split_with_sizes(a, split_size_or_sections, dim)


def chunk(a: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """``a`` cut along ``dim`` into at most ``chunks`` pieces of ``ceil(n / chunks)``
    elements, the last one smaller (torch.chunk; fewer pieces when they run out)."""
    _check_tensor("chunk", a)
    if not isinstance(chunks, numbers.Integral) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    (axis,) = normalize_axes("chunk", dim, len(a.shape))
    n = a.shape[axis]
    return split_size(a, max(1, -(-n // int(chunks))), axis)


__all__ = [
    "GetItem",
    "AddAt",
    "IndexPut",
    "getitem",
    "index_put",
    "gather",
    "scatter_add",
    "Where",
    "where",
    "masked_fill",
    "Concatenate",
    "cat",
    "concatenate",
    "split_with_sizes",
    "chunk",
]

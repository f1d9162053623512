"""Indexing keys (what goes between the brackets of ``t[...]``): NumPy's rules, checked
with clear errors and resolved on the host, plus the array code that applies them.

A key is parsed once, against the tensor's shape, into an :class:`Index`:

- **basic** (ints, slices with any non-zero step, ``None``, ``...``): the result is a
  strided view of the array (no copy on either backend). An int drops its axis, as in
  NumPy and PyTorch (the NDArray's own ``a[i]`` keeps it: the course's rule).
- **advanced** (integer arrays or tensors, boolean masks, lists, possibly mixed with basic
  items): the flat positions of the selected elements, found by applying the key to an
  ``arange`` of the positions with NumPy, so broadcasting of index arrays and the placement
  of the advanced axes are exactly NumPy's. The result is a gather (a copy).

Index arrays are data, not differentiable inputs, so they live on the host as NumPy arrays.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._types import Shape
from ..autograd import Tensor
from ..backends import NDArray, array_api, kernels


@dataclass(frozen=True, eq=False)
class Index:
    """A parsed key: ``items`` (one int, slice or None per position, every axis covered)
    for a basic key, else ``positions`` (int64 flat positions, of the result's shape)."""

    items: tuple | None
    positions: np.ndarray | None
    shape: Shape

    @property
    def basic(self) -> bool:
        return self.items is not None


def parse_index(owner: str, shape: Shape, key) -> Index:
    """``key`` checked against an array of ``shape``; errors name ``owner``.

    IndexError for an index out of range (naming the axis, the index and the size), too
    many indices, a boolean mask whose shape differs from the axes it covers, or an index
    array that is not integer or boolean; TypeError for an item of an unsupported type.
    """
    items = _expand_ellipsis(owner, shape, _as_items(owner, key))
    axis, basic = 0, True
    for item in items:
        if item is None:
            continue
        if isinstance(item, np.ndarray):
            basic = False
            if item.dtype == np.bool_:
                _check_mask(owner, shape, axis, item)
                axis += item.ndim
                continue
            _check_in_range(owner, shape[axis], axis, item)
        elif isinstance(item, int):
            _check_in_range(owner, shape[axis], axis, np.asarray(item))
        else:
            _check_slice(owner, item)
        axis += 1
    if basic:
        items = tuple(
            i % shape[a] if isinstance(i, int) else i for i, a in zip(items, _axes_of(items))
        )
        return Index(items, None, _basic_shape(shape, items))
    positions = np.arange(_size(shape), dtype=np.int64).reshape(shape)[items]
    return Index(None, positions, positions.shape)


def _size(shape: Shape) -> int:
    size = 1
    for s in shape:
        size *= s
    return size


def _as_items(owner: str, key) -> tuple:
    """The key as a tuple of ints, slices, None, Ellipsis and NumPy arrays."""
    if not isinstance(key, tuple):
        key = (key,)
    return tuple(_as_item(owner, item) for item in key)


def _as_item(owner: str, item):
    if item is None or item is Ellipsis or isinstance(item, slice):
        return item
    if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        return int(item)
    if isinstance(item, Tensor):
        item = item.numpy()
    elif isinstance(item, NDArray) and not isinstance(item, np.ndarray):
        item = item.numpy()
    if isinstance(item, (list, np.ndarray, bool, np.bool_)):
        array = np.asarray(item)
        if array.dtype == np.bool_:
            return array
        if array.size == 0 and array.dtype.kind == "f":  # [] is an empty integer index
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise IndexError(
                f"{owner}: index arrays must hold integers or booleans, got dtype {array.dtype}; "
                f"convert the index with .astype('int64')"
            )
        return int(array) if array.ndim == 0 else array.astype(np.int64)
    raise TypeError(
        f"{owner}: unsupported index {item!r} of type {type(item).__name__}; use ints, slices, "
        f"None, ..., integer arrays or tensors, or boolean masks"
    )


def _expand_ellipsis(owner: str, shape: Shape, items: tuple) -> tuple:
    """``items`` with ``...`` replaced by full slices and trailing axes padded."""
    if sum(item is Ellipsis for item in items) > 1:
        raise IndexError(f"{owner}: an index can only have a single ellipsis ('...')")
    used = sum(
        item.ndim if isinstance(item, np.ndarray) and item.dtype == np.bool_ else 1
        for item in items
        if item is not None and item is not Ellipsis
    )
    if used > len(shape):
        raise IndexError(
            f"{owner}: too many indices for a tensor of shape {tuple(shape)}: the key {items!r} "
            f"indexes {used} dimensions, the tensor has {len(shape)}"
        )
    fill = (slice(None),) * (len(shape) - used)
    if Ellipsis in [i for i in items if not isinstance(i, np.ndarray)]:
        at = next(k for k, i in enumerate(items) if i is Ellipsis)
        return items[:at] + fill + items[at + 1 :]
    return items + fill


def _check_in_range(owner: str, size: int, axis: int, index: np.ndarray) -> None:
    bad = index[(index < -size) | (index >= size)]
    if bad.size:
        raise IndexError(
            f"{owner}: index {int(bad.reshape(-1)[0])} is out of range for axis {axis} of size "
            f"{size} (valid: {-size} to {size - 1})"
        )


def _check_mask(owner: str, shape: Shape, axis: int, mask: np.ndarray) -> None:
    covered = tuple(shape[axis : axis + mask.ndim])
    if mask.shape != covered:
        raise IndexError(
            f"{owner}: boolean mask of shape {mask.shape} does not match the tensor's shape "
            f"{tuple(shape)} at axes {axis}..{axis + mask.ndim - 1} (sizes {covered})"
        )


def _check_slice(owner: str, item: slice) -> None:
    for part in (item.start, item.stop, item.step):
        if part is not None and (isinstance(part, bool) or not isinstance(part, numbers.Integral)):
            raise TypeError(f"{owner}: slice bounds must be ints or None, got {item!r}")
    if item.step == 0:
        raise ValueError(f"{owner}: slice step cannot be zero")


def _axes_of(items: tuple) -> list:
    """The source axis each item indexes (None items get the next axis; unused)."""
    axes, axis = [], 0
    for item in items:
        axes.append(axis)
        if item is not None:
            axis += 1
    return axes


def _basic_shape(shape: Shape, items: tuple) -> Shape:
    out = []
    for item, axis in zip(items, _axes_of(items)):
        if item is None:
            out.append(1)
        elif isinstance(item, slice):
            out.append(len(range(*item.indices(shape[axis]))))
    return tuple(out)


# ----- applying an index to backend arrays -----------------------------------------------------


def basic_view(array: NDArray, index: Index) -> NDArray:
    """The strided view ``array[index]`` for a basic index (shares ``array``'s memory)."""
    assert index.items is not None, "basic_view: needs a basic index"
    return kernels.basic_view(array, index.items)


def take(array: NDArray, index: Index) -> NDArray:
    """``array[index]`` for an advanced index: a new array of ``index.shape``."""
    assert index.positions is not None, "take: needs an advanced index"
    return kernels.take_flat(array, index.positions)


def add_at(values: NDArray, index: Index, shape: Shape) -> NDArray:
    """Zeros of ``shape`` with ``values`` (of ``index.shape``) added at ``index``; repeated
    positions of an advanced index accumulate."""
    out = array_api.zeros_like(values, shape=shape)
    if index.basic:
        basic_view(out, index)[()] = values
        return out
    assert index.positions is not None  # not basic: advanced
    size = _size(shape)
    rows = kernels.add_rows(values.reshape(index.shape + (1,)), index.positions, size)
    return rows.reshape(shape)


def write(array: NDArray, index: Index, values) -> None:
    """``array[index] = values`` in place (``values`` a scalar or an array of
    ``index.shape``); of repeated positions of an advanced index, the last write wins."""
    if index.basic:
        basic_view(array, index)[()] = values
    else:
        assert index.positions is not None  # not basic: advanced
        array_api.put(array, index.positions, values)


def put(array: NDArray, index: Index, values: NDArray) -> NDArray:
    """A copy of ``array`` with ``values`` written at ``index`` (see :func:`write`)."""
    out = array.copy()
    write(out, index, values)
    return out

"""``NDArrayDataset``: a dataset over NumPy arrays that share their first dimension."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data_basic import Dataset, normalize_index

__all__ = ["NDArrayDataset"]


class NDArrayDataset(Dataset):
    """Samples are the rows of the given arrays: ``ds[i] == tuple(a[i] for a in arrays)``.

    ``ds[slice]`` and ``ds[index_array]`` return the tuple of ``a[index]`` (stacked
    rows), which is also what a :class:`~needle.data.DataLoader` fetches per batch with
    one fancy index per array.

    Args:
        *arrays: one or more arrays (or anything ``np.asarray`` accepts), all with the
            same length N along axis 0. Arrays are kept as given, not copied.

    Raises:
        ValueError: no arrays, a 0-d array, or first dimensions that differ.

    Example:
        >>> ds = NDArrayDataset(np.zeros((3, 2)), np.array([7, 8, 9]))
        >>> len(ds), ds[-1][1], ds[0:2][0].shape
        (3, np.int64(9), (2, 2))
    """

    def __init__(self, *arrays: Any) -> None:
        super().__init__(transforms=None)
        if not arrays:
            raise ValueError("NDArrayDataset: expected at least one array, got none")
        self.arrays = tuple(a if isinstance(a, np.ndarray) else np.asarray(a) for a in arrays)
        shapes = [a.shape for a in self.arrays]
        if any(len(s) == 0 for s in shapes):
            raise ValueError(f"NDArrayDataset: arrays need a first dimension, got shapes {shapes}")
        if len({s[0] for s in shapes}) != 1:
            raise ValueError(
                f"NDArrayDataset: all arrays must have the same first dimension, got shapes "
                f"{shapes}"
            )

    def __len__(self) -> int:
        return self.arrays[0].shape[0]

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        index = normalize_index(index, len(self), "NDArrayDataset")
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Return ``tuple(a[indices] for a in arrays)``: one fancy index per array.

        Shapes: indices (k,) -> each field (k, *a.shape[1:]).
        """
        return tuple(a[indices] for a in self.arrays)

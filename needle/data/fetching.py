"""How a batch is fetched from a dataset: its items stacked field by field, or the dataset's own
``get_batch``. The loader and its worker processes both fetch this way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: A batch: one array per field, each ``(k, *field_shape)``.
Batch = tuple[np.ndarray, ...]


def stack_items(dataset: Any, indices: np.ndarray) -> Batch:
    """Fetch ``dataset[i]`` for each index in order and stack each field with ``np.stack``.

    A sample that is not a tuple counts as a single field.

    Args:
        dataset: anything indexable by int.
        indices: 1-D integer array of length k >= 1.

    Returns:
        tuple of arrays, each of shape ``(k, *field_shape)``.

    Example:
        >>> stack_items([(1, 2.0), (3, 4.0)], np.array([1, 0]))
        (array([3, 1]), array([4., 2.]))
    """
    items = [dataset[int(i)] for i in indices]
    items = [item if isinstance(item, tuple) else (item,) for item in items]
    n_fields = len(items[0])
    for k, item in enumerate(items):
        if len(item) != n_fields:
            raise ValueError(
                f"stack_items: sample {int(indices[k])} has {len(item)} fields but sample "
                f"{int(indices[0])} has {n_fields}; every sample needs the same fields"
            )
    return tuple(np.stack([item[f] for item in items]) for f in range(n_fields))


def batch_fetcher(dataset: Any) -> Callable[[np.ndarray], Batch]:
    """Return the function the loader uses to fetch one batch of ``dataset``.

    ``dataset.get_batch`` is used only if ``__getitem__`` was not overridden in a
    subclass below the class that defined ``get_batch``; otherwise items are stacked.
    """
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is None:
        return lambda indices: stack_items(dataset, indices)
    mro = type(dataset).__mro__
    batch_owner = next((k for k, c in enumerate(mro) if "get_batch" in vars(c)), None)
    item_owner = next((k for k, c in enumerate(mro) if "__getitem__" in vars(c)), None)
    if batch_owner is not None and item_owner is not None and item_owner < batch_owner:
        return lambda indices: stack_items(dataset, indices)
    return get_batch

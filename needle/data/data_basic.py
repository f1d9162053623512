"""``Dataset`` and ``DataLoader``: from indexed samples to batches of Tensors.

A :class:`Dataset` maps an index to a sample, a tuple of NumPy fields such as
``(image, label)``. A :class:`DataLoader` groups the indices ``0..N-1`` (shuffled or
not) into consecutive batches and yields each batch as a tuple of Tensors, one per
field, stacked along a new first axis.

The batch protocol. A dataset may fetch a whole batch at once through
``get_batch(indices) -> tuple of arrays``. :class:`Dataset` provides it by fetching the
items one by one and stacking each field (``np.stack``); array-backed datasets
(``MNISTDataset``, ``NDArrayDataset``) override it with a single fancy index. Both give
identical arrays and draw identical random numbers (transforms still run item by item,
in batch order). A subclass that overrides ``__getitem__`` below the class that defined
``get_batch`` is fetched item by item, so its own ``__getitem__`` is always honoured.

An :class:`IterableDataset` is a stream instead: the loader groups the samples its
``__iter__`` yields into batches, in the order they come.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from .fetching import Batch, batch_fetcher, stack_items
from .workers import WorkerBatches, batch_seed, fetch_seeded, pickle_dataset

__all__ = ["Dataset", "IterableDataset", "DataLoader", "stack_items"]

TransformLike = Callable[[np.ndarray], np.ndarray]


class Dataset:
    """Abstract map-style dataset: ``ds[i]`` is a sample, ``len(ds)`` their number.

    Subclasses implement ``__getitem__`` and ``__len__`` and call
    :meth:`apply_transforms` on the part of a sample the transforms act on.

    Args:
        transforms: callables applied in order by :meth:`apply_transforms`, or None.
            A single callable is accepted and treated as a one-item list.

    Example:
        >>> class Squares(Dataset):
        ...     def __len__(self): return 4
        ...     def __getitem__(self, i): return (np.array(i * i),)
        >>> Squares().get_batch(np.array([1, 3]))
        (array([1, 9]),)
    """

    def __init__(self, transforms: Sequence[TransformLike] | TransformLike | None = None) -> None:
        self.transforms = _check_transforms(type(self).__name__, transforms)

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def apply_transforms(self, x: np.ndarray) -> np.ndarray:
        """Apply each transform to ``x`` in order and return the result.

        Example:
            >>> Dataset(transforms=[lambda x: x + 1, lambda x: x * 10]).apply_transforms(1)
            20
        """
        if self.transforms is not None:
            for transform in self.transforms:
                x = transform(x)
        return x

    def get_batch(self, indices: np.ndarray) -> Batch:
        """Return the samples at ``indices`` stacked field by field.

        Args:
            indices: 1-D integer array of length k.

        Returns:
            a tuple with one array per sample field, each of shape ``(k, *field_shape)``.
        """
        return stack_items(self, indices)


class IterableDataset:
    """Abstract stream of samples: ``iter(ds)`` yields them, for data read as it goes.

    Subclasses implement ``__iter__`` (a fresh pass over the samples at each call) and
    may call :meth:`apply_transforms`; ``__len__`` (the number of samples) is optional
    and gives the loader a ``len()``. A :class:`DataLoader` batches consecutive samples
    in the order they come; ``shuffle``, ``sampler`` and ``num_workers`` do not apply.

    Args:
        transforms: as for :class:`Dataset`.

    Example:
        >>> class Counter(IterableDataset):
        ...     def __iter__(self): return ((np.array(i),) for i in range(5))
        >>> [b[0].numpy().tolist() for b in DataLoader(Counter(), batch_size=2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(self, transforms: Sequence[TransformLike] | TransformLike | None = None) -> None:
        self.transforms = _check_transforms(type(self).__name__, transforms)

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    apply_transforms = Dataset.apply_transforms


def _check_transforms(owner: str, transforms: Any) -> list[TransformLike] | None:
    """Return ``transforms`` as a list of callables (or None), raising TypeError otherwise."""
    if transforms is None:
        return None
    if callable(transforms):
        return [transforms]
    if not isinstance(transforms, Iterable) or isinstance(transforms, (str, bytes)):
        raise TypeError(
            f"{owner}: transforms must be a list of callables or None, "
            f"got {type(transforms).__name__}"
        )
    transforms = list(transforms)
    for k, t in enumerate(transforms):
        if not callable(t):
            raise TypeError(
                f"{owner}: transforms[{k}] is a {type(t).__name__}, not a callable; "
                "use e.g. transforms=[RandomCrop(3), RandomFlipHorizontal()]"
            )
    return transforms


def normalize_index(index: Any, length: int, owner: str) -> int | np.ndarray:
    """Turn a dataset index into a non-negative int or a 1-D int64 array of positions.

    Accepts an int (negative counts from the end, like Python), a slice, a 1-D integer
    array or list, or a boolean mask of length ``length``.

    Raises:
        IndexError: an index is outside ``-length .. length-1`` (the message names the
            index, the length and ``owner``).
        TypeError: the index is of another type (float, str, ...).

    Example:
        >>> normalize_index(-1, 5, "ds"), normalize_index(slice(1, 4), 5, "ds").tolist()
        (4, [1, 2, 3])
    """
    if isinstance(index, np.ndarray) and index.ndim == 0 and index.dtype.kind in "iu":
        index = int(index)  # a 0-d integer array indexes like an int
    if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
        if not -length <= index < length:
            raise IndexError(f"{owner}: index {int(index)} is out of range for length {length}")
        return int(index) % length
    if isinstance(index, slice):
        return np.arange(length)[index]
    return _normalize_array_index(index, length, owner)


def _normalize_array_index(index: Any, length: int, owner: str) -> np.ndarray:
    """The array branch of :func:`normalize_index`."""
    if not isinstance(index, (np.ndarray, list, tuple, range)):
        raise TypeError(
            f"{owner}: cannot index with {type(index).__name__}; use an int, a slice "
            "or a 1-D integer array"
        )
    array = np.asarray(index)
    if array.dtype == np.bool_:
        if array.shape != (length,):
            raise IndexError(
                f"{owner}: boolean mask of shape {array.shape} does not match length {length}"
            )
        return np.flatnonzero(array)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{owner}: index array must be 1-D of integers, got shape {array.shape} "
            f"dtype {array.dtype}"
        )
    bad = np.flatnonzero((array < -length) | (array >= length))
    if bad.size:
        raise IndexError(f"{owner}: index {int(array[bad[0]])} is out of range for length {length}")
    return array.astype(np.int64) % max(length, 1)


def _check_batch_size(batch_size: Any) -> int:
    """Return ``batch_size`` as an int, raising ValueError unless it is a positive int."""
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(
            f"DataLoader: batch_size must be a positive int, got {batch_size!r} "
            f"({type(batch_size).__name__})"
        )
    if batch_size < 1:
        raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size}")
    return int(batch_size)


def _check_count(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``, or a ValueError naming the DataLoader option."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise ValueError(f"DataLoader: {name} must be an int >= {low}, got {value!r}")
    return int(value)


class DataLoader:
    """Iterate over a dataset in batches of Tensors.

    Each ``iter(loader)`` builds an order of the N sample indices: with ``shuffle``
    exactly one call ``np.random.permutation(N)`` (NumPy's global generator, so
    ``np.random.seed`` fixes it); with a ``sampler``, the indices it yields (e.g. a
    :class:`~needle.data.DistributedSampler`'s shard); otherwise ``0..N-1``. Batches are
    consecutive chunks of ``batch_size`` indices of that order; the last one is short
    unless ``drop_last``. An :class:`IterableDataset` is batched in the order it yields.

    Each batch is a tuple with one ``needle.Tensor`` per sample field, shape
    ``(batch, *field_shape)``, NumPy dtype kept (MNIST: float32 images, uint8 labels).
    The tensors have ``requires_grad=False``: data is an input, never a parameter, so
    no gradient is ever needed for it and no graph is built through it.

    Random transforms. With ``num_workers=0`` and no ``seed`` they draw from NumPy's
    global generator as it goes (the course's behaviour). Otherwise batch ``b`` of pass
    ``e`` is fetched with the global generator seeded from ``(seed, e, b)`` (and restored
    afterwards in the main process), in whichever process fetches it: so for the same
    ``seed`` the batches are identical for every ``num_workers``. Without ``seed``, a
    loader with workers draws one per pass from the global generator, after the order.

    Args:
        dataset: a :class:`Dataset` (or any object with ``__len__`` and int indexing),
            or an :class:`IterableDataset`.
        batch_size: samples per batch, a positive int.
        shuffle: draw a new random order at every ``iter()``.
        drop_last: skip the final batch if it has fewer than ``batch_size`` samples.
        device: device of the yielded tensors (None: needle's default device).
        sampler: an iterable of sample indices with ``len()``, drawn anew at every
            ``iter()``; excludes ``shuffle`` (the sampler decides the order).
        num_workers: worker processes that fetch batches (0: the main process does).
            The dataset is pickled to them at every ``iter()``; a script that uses them
            needs the ``if __name__ == "__main__":`` guard (workers are spawned).
        seed: the seed of the transforms' random numbers, a non-negative int (see above).

    Attributes:
        epoch: the number of passes begun; part of every batch's seed. Set it to resume.

    Raises:
        ValueError: ``batch_size`` is not a positive int, ``num_workers`` or ``seed`` is
            not an int >= 0, the dataset is empty, both ``shuffle`` and ``sampler`` are
            given, or an IterableDataset gets ``shuffle``, a sampler or workers.
        TypeError: (at ``iter()``) the dataset cannot be pickled for the workers.

    Example:
        >>> from needle.data import NDArrayDataset
        >>> loader = DataLoader(NDArrayDataset(np.arange(5)), batch_size=2)
        >>> len(loader), [b[0].numpy().astype(int).tolist() for b in loader]
        (3, [[0, 1], [2, 3], [4]])
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        *,
        device: Any = None,
        sampler: Any = None,
        num_workers: int = 0,
        seed: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle = bool(shuffle)
        if self.shuffle and sampler is not None:
            raise ValueError(
                "DataLoader: shuffle=True and a sampler were both given; the "
                "sampler decides the order (DistributedSampler(shuffle=True))"
            )
        self.sampler = sampler
        self.drop_last = bool(drop_last)
        self.device = device
        self.num_workers = _check_count("num_workers", num_workers, 0)
        self.seed = None if seed is None else _check_count("seed", seed, 0)
        self.epoch = 0
        if isinstance(dataset, IterableDataset):
            self._check_iterable_options()
        else:
            self._num_samples()  # fail now, where the loader is built, if the dataset is empty

    def _check_iterable_options(self) -> None:
        """Raise ValueError for the options a stream cannot honour."""
        given = [
            name
            for name, on in (
                ("shuffle=True", self.shuffle),
                ("a sampler", self.sampler is not None),
                (f"num_workers={self.num_workers}", self.num_workers),
            )
            if on
        ]
        if given:
            raise ValueError(
                f"DataLoader: {', '.join(given)} cannot be used with the IterableDataset "
                f"{type(self.dataset).__name__}: a stream is batched in the order it yields"
            )

    def _num_samples(self) -> int:
        """Return ``len(dataset)``, raising ValueError if it is 0."""
        n = len(self.dataset)
        if n == 0:
            raise ValueError(
                f"DataLoader: the dataset {type(self.dataset).__name__} is empty (len 0); "
                "check the files or arrays it was built from"
            )
        return n

    def __len__(self) -> int:
        """The number of batches one iteration yields (TypeError for a stream without len)."""
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_indices(self) -> list[np.ndarray]:
        """Draw a new order (one ``np.random.permutation`` call if shuffling) and split it.

        Returns:
            the list of 1-D int arrays of sample indices, one per batch, in order.
        """
        n = self._num_samples()
        if self.sampler is not None:
            order = np.fromiter(self.sampler, dtype=np.int64)
            n = order.size
        else:
            order = np.random.permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        return [order[start : start + self.batch_size] for start in range(0, stop, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        """Yield the batches of one pass; the order (and the seeds) are drawn at ``iter()``."""
        if isinstance(self.dataset, IterableDataset):
            return self._tensors(self._stream_batches(self._pass_seeds()))
        # ``ordering`` mirrors the course's attribute of the same name.
        self.ordering = self.batch_indices()
        return self.batches(self.ordering)

    def batches(self, ordering: list[np.ndarray]) -> Iterator[tuple[Tensor, ...]]:
        """Yield the batches of ``ordering`` (:meth:`batch_indices`' result, or its tail).

        Draws no order: a training loop that resumes in mid-epoch passes the rest of the
        order it saved (each batch is fetched only when it is reached, so random
        transforms draw at the same point of the run as in ``iter()``). With ``seed`` or
        workers, the batches' seeds count from the first batch of ``ordering``.
        """
        seeds = self._pass_seeds()
        if self.num_workers:
            dataset_bytes = pickle_dataset(self.dataset, self.num_workers)
            return self._tensors(
                WorkerBatches(
                    dataset_bytes,
                    ordering,
                    list(itertools.islice(seeds, len(ordering))),
                    self.num_workers,
                )
            )
        fetch = batch_fetcher(self.dataset)
        return self._tensors(
            fetch_seeded(fetch, indices, seed) for indices, seed in zip(ordering, seeds)
        )

    def _pass_seeds(self) -> Iterator[np.ndarray | None]:
        """The seeds of this pass's batches in order (all None: the global generator runs on)."""
        if self.seed is None and not self.num_workers:
            return itertools.repeat(None)
        base = self.seed if self.seed is not None else int(np.random.randint(2**31))
        epoch, self.epoch = self.epoch, self.epoch + 1
        return (batch_seed(base, epoch, b) for b in itertools.count())

    def _stream_batches(self, seeds: Iterator[np.ndarray | None]) -> Iterator[Batch]:
        """Consecutive samples of one pass over the IterableDataset, stacked per batch."""
        samples = iter(self.dataset)
        for seed in seeds:
            chunk = fetch_seeded(
                lambda n: list(itertools.islice(samples, n)), self.batch_size, seed
            )
            if not chunk or (self.drop_last and len(chunk) < self.batch_size):
                return
            yield stack_items(chunk, np.arange(len(chunk)))

    def _tensors(self, batches: Iterable[Batch]) -> Iterator[tuple[Tensor, ...]]:
        """Each batch of arrays as a tuple of constant Tensors on the loader's device."""
        for batch in batches:
            yield tuple(_field_tensor(field, self.device) for field in batch)

    def __repr__(self) -> str:
        size = len(self.dataset) if hasattr(self.dataset, "__len__") else "?"
        return (
            f"DataLoader({type(self.dataset).__name__}(len={size}), "
            f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, num_workers={self.num_workers})"
        )


def _field_tensor(field: Any, device: Any) -> Tensor:
    """One field of a batch as a constant Tensor: integer fields (labels, token ids) as int64
    and bool fields as bool on both backends, as PyTorch gives class targets; the others as
    ``Tensor(field)`` makes them (float32 under ``nd``; NumPy's dtype under ``np``)."""
    kind = np.asarray(field).dtype.kind
    dtype = "int64" if kind in "iu" else "bool" if kind == "b" else None
    return Tensor(field, device=device, dtype=dtype, requires_grad=False)

"""``DistributedSampler``: each rank's share of every epoch's order of the samples.

Data-parallel training gives every rank (process) a different part of each global batch.
The sampler draws one permutation per epoch from a generator seeded with ``(seed, epoch)``
— the same on every rank, and independent of NumPy's global generator — and deals it out
round-robin: rank ``r`` of ``N`` gets positions ``r, r + N, r + 2N, ...``. So batch ``b``
of every rank together hold exactly positions ``b·B·N .. (b+1)·B·N − 1`` of the
permutation: a data-parallel step on per-rank batch ``B`` sees the same samples as a
single-process step on batch ``B·N``. Pass it to :class:`~needle.data.DataLoader` as
``sampler=``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import distributed

__all__ = ["DistributedSampler"]


def _check_count(owner: str, name: str, value: Any, low: int) -> int:
    """``value`` as an int ≥ ``low``, or a ValueError naming ``owner`` and ``name``."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return int(value)


class DistributedSampler:
    """The indices of one rank's shard of a dataset, reshuffled every epoch.

    Each pass (``iter(sampler)``) uses the current :attr:`epoch` and then advances it, so
    successive epochs get new orders without any call; :meth:`set_epoch` sets it
    explicitly (to resume a run at a given epoch). Every rank must make the same number of
    passes.

    Even shards (``even=True``, for training): every rank gets ``ceil(n / N)`` indices
    (the order is padded by repeating its first entries, as PyTorch does), or
    ``floor(n / N)`` with ``drop_last`` (the tail of the order is left out); so all ranks
    run the same number of batches. ``even=False`` (for evaluation) repeats and drops
    nothing: shard sizes differ by at most one.

    Args:
        dataset: the dataset (only ``len(dataset)`` is used) or its length.
        num_replicas: the number of ranks N (None: ``needle.distributed.world_size()``).
        rank: this rank (None: ``needle.distributed.rank()``).
        shuffle: draw a permutation per epoch (else the order is ``0 .. n-1``).
        seed: the shared seed of the permutations.
        drop_last: with even shards, drop the tail instead of padding.
        even: give every rank the same number of indices.

    Raises:
        ValueError: a count is not a valid int, ``rank`` is not below ``num_replicas``, or
            even shards with ``drop_last`` would be empty.

    Example:
        >>> sampler = DistributedSampler(10, num_replicas=3, rank=1, shuffle=False)
        >>> list(sampler), len(sampler)
        ([1, 4, 7, 0], 4)
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        even: bool = True,
    ) -> None:
        owner = "DistributedSampler"
        if num_replicas is None or rank is None:
            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        size = dataset if isinstance(dataset, (int, np.integer)) else len(dataset)
        self.size = _check_count(owner, "the dataset length", size, 0)
        self.num_replicas = _check_count(owner, "num_replicas", num_replicas, 1)
        self.rank = _check_count(owner, "rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(
                f"{owner}: rank {self.rank} is not below num_replicas {self.num_replicas}"
            )
        self.shuffle, self.drop_last, self.even = bool(shuffle), bool(drop_last), bool(even)
        self.seed = _check_count(owner, "seed", seed, 0)
        self.epoch = 0
        if self.even and self.drop_last and self.size < self.num_replicas:
            raise ValueError(
                f"{owner}: {self.size} samples cannot give each of "
                f"{self.num_replicas} ranks one with drop_last=True"
            )

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use epoch ``epoch``'s order (a non-negative int)."""
        self.epoch = _check_count("DistributedSampler.set_epoch", "epoch", epoch, 0)

    def _total(self) -> int:
        """The length of the padded or truncated order (even shards), else ``size``."""
        n, replicas = self.size, self.num_replicas
        if not self.even:
            return n
        return n - n % replicas if self.drop_last else -(-n // replicas) * replicas

    def __len__(self) -> int:
        """The number of indices this rank gets per pass."""
        return len(range(self.rank, self._total(), self.num_replicas))

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, then advance the epoch (int64 array)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        total = self._total()
        if total > self.size:  # pad by repeating the order from its start
            order = np.resize(order, total)
        self.epoch += 1
        return order[self.rank : total : self.num_replicas].astype(np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __repr__(self) -> str:
        return (
            f"DistributedSampler(size={self.size}, rank={self.rank}, "
            f"num_replicas={self.num_replicas}, shuffle={self.shuffle}, "
            f"seed={self.seed}, epoch={self.epoch})"
        )

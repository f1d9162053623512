"""DataLoader worker processes, seeded transforms and IterableDataset.

Datasets used by workers are defined at module level: workers are spawned and import
them from this module by name.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

from needle.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    NDArrayDataset,
    RandomCrop,
    RandomFlipHorizontal,
    workers,
)

N = 23


class Images(Dataset):
    """N random 6×6×1 images with labels, through random crops and flips."""

    def __init__(self, transforms=None):
        super().__init__(transforms)
        self.images = np.random.default_rng(0).random((N, 6, 6, 1), dtype=np.float32)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.apply_transforms(self.images[i]), i


AUGMENT = [RandomCrop(2), RandomFlipHorizontal()]


class FailsAt(Dataset):
    """Raises ValueError at one index, or ends its worker process there with ``exit``."""

    def __init__(self, bad: int, exit: bool = False):
        super().__init__()
        self.bad, self.exit = bad, exit

    def __len__(self):
        return N

    def __getitem__(self, i):
        if i == self.bad:
            if self.exit:
                os._exit(3)
            raise ValueError(f"sample {i} is corrupt")
        return np.float32(i)


class Slow(Dataset):
    """Each sample takes ``seconds`` to fetch."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(self.seconds)
        return np.float32(i)


def loader_arrays(loader) -> list[list[np.ndarray]]:
    return [[t.numpy() for t in batch] for batch in loader]


def rng_state() -> tuple:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return name, keys.tobytes(), pos, has_gauss, cached


def live_workers() -> list:
    """The DataLoader worker processes still running (active_children also reaps exited ones)."""
    return [p for p in multiprocessing.active_children() if "DataLoader-worker" in p.name]


def two_passes(num_workers: int) -> tuple[list, tuple]:
    """Both passes of a shuffled, augmented, seeded loader and the global RNG state after."""
    np.random.seed(0)
    loader = DataLoader(
        Images(AUGMENT), batch_size=5, shuffle=True, seed=7, num_workers=num_workers
    )
    passes = [loader_arrays(loader) for _ in range(2)]
    return passes, rng_state()


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for batch_a, batch_b in zip(a, b):
        for x, y in zip(batch_a, batch_b, strict=True):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


# ----- workers give the batches of num_workers=0 -----------------------------------------


def test_workers_equal_main_process():
    (serial, serial_state) = two_passes(0)
    (parallel, parallel_state) = two_passes(2)
    for s, p in zip(serial, parallel):
        assert_same_batches(s, p)
    # Transforms drew in a seeded, restored generator: only the permutations moved it.
    assert serial_state == parallel_state
    np.random.seed(0)
    np.random.permutation(N), np.random.permutation(N)
    assert rng_state() == serial_state
    # A new pass draws new augmentations (same samples, different pixels).
    first, second = serial
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second))
    assert not live_workers()


def test_seed_decides_the_augmentations():
    def batches(seed, epoch=0):
        np.random.seed(0)
        loader = DataLoader(Images(AUGMENT), batch_size=N, seed=seed)
        loader.epoch = epoch
        return loader_arrays(loader)[0][0]

    np.testing.assert_array_equal(batches(1), batches(1))
    assert not np.array_equal(batches(1), batches(2))
    assert not np.array_equal(batches(1), batches(1, epoch=1))


def test_unseeded_workers_follow_the_global_seed():
    def run():
        np.random.seed(4)
        return loader_arrays(DataLoader(Images(AUGMENT), batch_size=8, shuffle=True, num_workers=1))

    assert_same_batches(run(), run())


# ----- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value",
    [("num_workers", -1), ("num_workers", 1.5), ("num_workers", True), ("seed", -3)],
)
def test_bad_counts(option, value):
    with pytest.raises(ValueError, match=rf"DataLoader: {option} must be an int >= 0, got "):
        DataLoader(NDArrayDataset(np.arange(3)), **{option: value})


def test_unpicklable_dataset_is_named():
    dataset = Images(transforms=[lambda img: img])
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    with pytest.raises(
        TypeError,
        match=r"num_workers=2\): the dataset Images cannot be "
        r"pickled .*lambda",
    ):
        iter(loader)
    assert not live_workers()


# ----- errors and shutdown ----------------------------------------------------------------


def test_worker_exception_is_reraised_and_workers_stop():
    loader = DataLoader(FailsAt(7), batch_size=3, num_workers=2)
    with pytest.raises(ValueError, match="sample 7 is corrupt") as info:
        loader_arrays(loader)
    assert "in DataLoader worker 0 while fetching batch 2" in str(info.value.__cause__)
    assert not live_workers()


def test_dead_worker_is_reported():
    loader = DataLoader(FailsAt(4, exit=True), batch_size=3, num_workers=1)
    with pytest.raises(
        RuntimeError,
        match=r"DataLoader worker 0 \(pid \d+\) exited "
        r"unexpectedly with code 3",
    ):
        loader_arrays(loader)
    assert not live_workers()


def test_abandoned_iterator_stops_its_workers():
    iterator = iter(DataLoader(NDArrayDataset(np.arange(N)), batch_size=2, num_workers=2))
    next(iterator)
    assert len(live_workers()) == 2
    del iterator
    gc.collect()
    assert not live_workers()


def test_keyboard_interrupt_stops_the_workers(monkeypatch):
    monkeypatch.setattr(workers, "JOIN_SECONDS", 0.1)  # the worker sleeps: do not wait on it
    iterator = iter(DataLoader(Slow(seconds=3.0), batch_size=1, num_workers=1))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(iterator)
    finally:
        timer.join()
    assert not live_workers()


# ----- IterableDataset --------------------------------------------------------------------


class Stream(IterableDataset):
    """The numbers 0..n-1 plus a random offset drawn per sample."""

    def __init__(self, n: int, noisy: bool = False):
        super().__init__()
        self.n, self.noisy = n, noisy

    def __iter__(self):
        for i in range(self.n):
            yield (np.float64(i + (np.random.rand() if self.noisy else 0)), i)


class SizedStream(Stream):
    def __len__(self):
        return self.n


@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_iterable_dataset_batches(drop_last, sizes):
    batches = loader_arrays(DataLoader(Stream(10), batch_size=4, drop_last=drop_last))
    assert [len(b[1]) for b in batches] == sizes
    assert np.concatenate([b[1] for b in batches]).tolist() == list(range(sum(sizes)))
    assert len(DataLoader(SizedStream(10), batch_size=4, drop_last=drop_last)) == len(sizes)
    with pytest.raises(TypeError):
        len(DataLoader(Stream(10), batch_size=4))


def test_iterable_dataset_seeded():
    def run(seed):
        np.random.seed(0)
        return loader_arrays(DataLoader(Stream(10, noisy=True), batch_size=4, seed=seed))

    state = (np.random.seed(0), rng_state())[1]
    assert_same_batches(run(5), run(5))
    assert rng_state() == state  # the seeded draws left the global generator alone
    assert not np.array_equal(run(5)[0][0], run(6)[0][0])


@pytest.mark.parametrize(
    "options, named",
    [
        ({"shuffle": True}, "shuffle=True"),
        ({"sampler": [0, 1]}, "a sampler"),
        ({"num_workers": 2}, "num_workers=2"),
    ],
)
def test_iterable_dataset_refuses_order_options(options, named):
    with pytest.raises(ValueError, match=f"{named} cannot be used with the IterableDataset Stream"):
        DataLoader(Stream(3), **options)

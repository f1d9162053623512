"""Worker processes behind ``DataLoader(num_workers=N)``.

The main process draws the order and every batch's seed; batch ``b`` goes to worker
``b % N``, which fetches it with NumPy's global generator seeded from the batch's seed
and sends the arrays back. The main process yields the batches in order, whatever order
they arrive in. Workers are started with ``spawn`` (fork is unsafe once a process runs
threads, as the compiled backend and NumPy's BLAS may), so the dataset travels pickled;
it is pickled once in the main process, where a failure can name the dataset.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .fetching import batch_fetcher

Batch = tuple[np.ndarray, ...]

#: Batches kept in flight per worker: enough to keep each busy while the main process
#: consumes one, few enough to bound the memory held by finished batches.
PREFETCH_PER_WORKER = 2
#: Seconds between checks that the workers are still alive while waiting for a batch.
POLL_SECONDS = 0.5
#: Seconds a worker gets to exit after being told to stop, before it is terminated.
JOIN_SECONDS = 2.0


def batch_seed(base: int, epoch: int, batch: int) -> np.ndarray:
    """The seed of NumPy's global generator while batch ``batch`` of pass ``epoch`` is fetched.

    Returns:
        four uint32 words, accepted by ``np.random.seed``.

    >>> batch_seed(0, 0, 1).shape
    (4,)
    """
    return np.random.SeedSequence([base, epoch, batch]).generate_state(4)


def fetch_seeded(fetch: Callable[[Any], Any], what: Any, seed: np.ndarray | None) -> Any:
    """``fetch(what)`` with NumPy's global generator seeded by ``seed`` (None: as it is).

    The generator's state is restored afterwards, so in the main process the transforms'
    draws leave the caller's random stream exactly as worker processes would leave it.
    """
    if seed is None:
        return fetch(what)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return fetch(what)
    finally:
        np.random.set_state(state)


def pickle_dataset(dataset: Any, num_workers: int) -> bytes:
    """``dataset`` pickled for the workers, or a TypeError naming it and the reason."""
    try:
        return pickle.dumps(dataset, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # pickle raises PicklingError, TypeError, AttributeError...
        raise TypeError(
            f"DataLoader(num_workers={num_workers}): the dataset {type(dataset).__name__} "
            f"cannot be pickled to send it to worker processes ({type(error).__name__}: "
            f"{error}); define its class and transforms at module level (no lambdas, "
            "local classes or open files), or use num_workers=0"
        ) from error


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as the ``__cause__`` of the re-raised error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)

    def __str__(self) -> str:
        return self.args[0]


class _WorkerFailure:
    """An exception raised in a worker, packed so that the main process can re-raise it."""

    def __init__(self, worker: int, what: str, error: BaseException) -> None:
        self.where = f"in DataLoader worker {worker} while {what}"
        self.text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            self.error = pickle.loads(pickle.dumps(error))
        except Exception:  # an exception that cannot travel becomes a RuntimeError with its text
            self.error = RuntimeError(f"{type(error).__name__}: {error}")

    def reraise(self) -> None:
        """Raise the worker's exception, its traceback attached as the cause."""
        raise self.error from _RemoteTraceback(f"raised {self.where}:\n{self.text}")


def _worker_loop(worker: int, dataset_bytes: bytes, tasks: Any, results: Any) -> None:
    """A worker's main function: fetch each ``(batch, indices, seed)`` task until ``None``."""
    # Ctrl-C reaches the whole process group; the main process decides and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        fetch = batch_fetcher(pickle.loads(dataset_bytes))
    except Exception as error:
        results.put((None, _WorkerFailure(worker, "unpickling the dataset", error)))
        return
    while (task := tasks.get()) is not None:
        batch, indices, seed = task
        try:
            result: Any = fetch_seeded(fetch, indices, seed)
        except Exception as error:
            result = _WorkerFailure(worker, f"fetching batch {batch}", error)
        results.put((batch, result))
    results.cancel_join_thread()  # told to stop: results nobody will read may be dropped


class WorkerBatches(Iterator[Batch]):
    """Iterate over the batches of one pass, fetched by ``num_workers`` processes.

    The workers stop when the pass ends, when an exception (a worker's, or a
    KeyboardInterrupt in the main process) leaves ``__next__``, on :meth:`close`, or when
    the iterator is garbage collected.

    Args:
        dataset_bytes: the pickled dataset.
        ordering: the indices of each batch, in order.
        seeds: each batch's seed (see :func:`batch_seed`).
        num_workers: the number of processes, >= 1.

    Yields:
        each batch as a tuple of arrays, one per sample field.
    """

    def __init__(
        self,
        dataset_bytes: bytes,
        ordering: list[np.ndarray],
        seeds: list[np.ndarray],
        num_workers: int,
    ) -> None:
        self._closed = True  # until the workers exist, there is nothing to close
        self._ordering, self._seeds = ordering, seeds
        context = multiprocessing.get_context("spawn")
        self._results = context.Queue()
        self._tasks = [context.Queue() for _ in range(num_workers)]
        self._workers = [
            context.Process(
                target=_worker_loop,
                args=(w, dataset_bytes, tasks, self._results),
                daemon=True,
                name=f"needle-DataLoader-worker-{w}",
            )
            for w, tasks in enumerate(self._tasks)
        ]
        self._closed = False
        self._sent = self._yielded = 0
        self._arrived: dict[int, Batch] = {}
        try:
            for process in self._workers:
                process.start()
            for _ in range(PREFETCH_PER_WORKER * num_workers):
                self._send_next()
        except BaseException:  # e.g. Ctrl-C while starting: stop those already started
            self.close()
            raise

    def _send_next(self) -> None:
        """Give the next unsent batch to its worker, if any is left."""
        if self._sent < len(self._ordering):
            b = self._sent
            self._tasks[b % len(self._workers)].put((b, self._ordering[b], self._seeds[b]))
            self._sent += 1

    def __next__(self) -> Batch:
        if self._yielded == len(self._ordering):
            self.close()
            raise StopIteration
        try:
            batch = self._wait_for(self._yielded)
        except BaseException:  # worker errors, KeyboardInterrupt: stop the workers first
            self.close()
            raise
        self._yielded += 1
        self._send_next()
        return batch

    def _wait_for(self, b: int) -> Batch:
        """Receive results until batch ``b`` has arrived; re-raise a worker's exception."""
        while b not in self._arrived:
            try:
                got, result = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._check_alive(b)
                continue
            if isinstance(result, _WorkerFailure):
                result.reraise()
            self._arrived[got] = result
        return self._arrived.pop(b)

    def _check_alive(self, b: int) -> None:
        """Raise RuntimeError if a worker has exited while batch ``b`` is awaited."""
        for w, process in enumerate(self._workers):
            if process.exitcode is not None:
                raise RuntimeError(
                    f"DataLoader worker {w} (pid {process.pid}) exited unexpectedly with "
                    f"code {process.exitcode} while batch {b} was awaited (a negative code "
                    "is the signal that ended it: -9 is often the out-of-memory killer)"
                )

    def close(self) -> None:
        """Stop the workers (terminating any that do not exit in time); idempotent."""
        if self._closed:
            return
        self._closed = True
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._workers:
            if process.pid is None:  # never started (start() failed part-way)
                continue
            process.join(JOIN_SECONDS)
            if process.exitcode is None:
                process.terminate()
                process.join()
        for q in (*self._tasks, self._results):
            q.cancel_join_thread()
            q.close()

    def __del__(self) -> None:
        self.close()

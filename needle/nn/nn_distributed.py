"""``DistributedDataParallel``: one model replica per rank, gradients averaged over MPI.

Usage, in every rank of an MPI job (see docs/distributed.md)::

    dist.init()
    model = nn.DistributedDataParallel(MLPResNet(784))   # rank 0's weights everywhere
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for X, y in loader:                                    # a DistributedSampler's shard
        loss = loss_fn(model(X), y)
        opt.reset_grad()
        loss.backward()                                    # gradients averaged over the ranks
        opt.step()

The average happens during ``backward()``, as PyTorch's DDP does it: a hook on every
parameter copies its gradient into a flat bucket (buckets of at most ``bucket_cap_mb``
megabytes, filled in the reverse of the parameters' order, since the last layers' gradients
are ready first); a full bucket's non-blocking all-reduce starts at once (in bucket order on
every rank, as MPI requires), while backward goes on through the earlier layers; before
``backward()`` returns, the last buckets are started and every one is waited for, and each
parameter's ``.grad`` becomes the mean. An optimizer step refuses a gradient that was not
averaged (``no_sync()``, or one set by hand) until :meth:`sync_gradients` is called.

Buffers (BatchNorm's running statistics) follow one rule: during training each rank
updates its own from its own batches; when the model is put in evaluation mode
(``eval()``) every rank takes rank 0's (with ``broadcast_buffers=True``, the default).
So evaluation and checkpoints (written by rank 0) use rank 0's statistics, and a run
resumed from a checkpoint continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import distributed
from ..autograd import Tensor, backward_accumulates, queue_callback
from ..optim.optimizer import register_step_check
from .module import IncompatibleKeys, Module

__all__ = ["DistributedDataParallel"]

#: PyTorch's buckets are 25 MB; a few MB already amortise the per-message latency.
DEFAULT_BUCKET_MB = 4.0


@dataclass
class _Bucket:
    """Tensors of one dtype whose values travel together in one flat NumPy ``buffer``."""

    tensors: list[Tensor]
    offsets: list[int]  # tensors[i] is buffer[offsets[i]:offsets[i + 1]]
    buffer: np.ndarray

    def views(self) -> list[np.ndarray]:
        """Each tensor's slice of the buffer, in its shape."""
        return [self.view(i) for i in range(len(self.tensors))]

    def view(self, i: int) -> np.ndarray:
        """Tensor ``i``'s slice of the buffer, in its shape."""
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].reshape(self.tensors[i].shape)

    def gather(self, arrays: list[np.ndarray | None]) -> None:
        """Copy one array per tensor into the buffer (None: zeros)."""
        for view, array in zip(self.views(), arrays):
            view[...] = 0 if array is None else array


def _make_buckets(tensors: Sequence[Tensor], cap_bytes: float) -> list[_Bucket]:
    """Group ``tensors`` in order into buckets of one dtype and at most ``cap_bytes``.

    A tensor larger than the cap gets a bucket of its own.
    """
    groups: list[list[Tensor]] = []
    group_bytes = 0.0
    for t in tensors:
        nbytes = t.size * np.dtype(t.dtype).itemsize
        if not groups or groups[-1][0].dtype != t.dtype or group_bytes + nbytes > cap_bytes:
            groups.append([])
            group_bytes = 0.0
        groups[-1].append(t)
        group_bytes += nbytes
    buckets = []
    for group in groups:
        offsets = np.concatenate([[0], np.cumsum([t.size for t in group])]).tolist()
        buffer = np.zeros(offsets[-1], dtype=np.dtype(group[0].dtype))
        buckets.append(_Bucket(group, offsets, buffer))
    return buckets


@dataclass
class _Reduction:
    """The gradient average of one ``backward()``: which parameters have reported, how many
    per bucket, and the all-reduces started so far (always buckets 0..len(requests)-1)."""

    ready: set[int] = field(default_factory=set)  # ids of the parameters whose grad is in
    counts: list[int] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)


def _set_array(tensor: Tensor, array: np.ndarray) -> None:
    """Replace ``tensor``'s data by a copy of the NumPy ``array`` (any backend)."""
    tensor.data = Tensor(array, device=tensor.device, dtype=tensor.dtype, requires_grad=False)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over MPI (after ``distributed.init()``).

    At construction (a collective: every rank must build it) it checks that every rank
    has the same parameter names, shapes and dtypes, then copies rank 0's parameters and
    buffers to all ranks, so every replica starts identical. Every ``backward()`` through
    the model replaces each parameter's gradient by its mean over the ranks (a parameter
    that got no gradient counts as zeros, or in ``backward(accumulate=True)`` as the
    gradient it holds), overlapping the all-reduces with the rest of
    the backward pass; as every rank then applies the same update to the same weights,
    the replicas stay identical. Inside :meth:`no_sync` nothing is averaged.

    ``model(x)`` calls ``module(x)``; :meth:`parameters` are the module's (give them to
    the optimizer); :meth:`state_dict` and :meth:`load_state_dict` are the module's, with
    the same keys, so checkpoints load with or without the wrapper.

    Args:
        module: the model (the same architecture on every rank).
        bucket_cap_mb: the largest flat gradient buffer, in megabytes (10**6 bytes).
        broadcast_buffers: take rank 0's buffers on every ``eval()`` (see the module
            docstring); False leaves each rank its own.

    Raises:
        NotInitializedError: ``distributed.init()`` was not called.
        CollectiveMismatchError: the ranks' models differ in names, shapes or dtypes.
        ValueError: ``bucket_cap_mb`` is not positive.
    """

    def __init__(
        self,
        module: Module,
        bucket_cap_mb: float = DEFAULT_BUCKET_MB,
        broadcast_buffers: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: expected an nn.Module, got {type(module).__name__}"
            )
        if not bucket_cap_mb > 0:
            raise ValueError(
                f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb!r}"
            )
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.world_size = distributed.world_size()
        layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in _named_tensors(module)]
        distributed._check_agreement("DistributedDataParallel", layout)
        cap = bucket_cap_mb * 1e6
        params = module.parameters()
        # Reverse order: backward reaches the last layers first, so their buckets fill first.
        self._grad_buckets = _make_buckets(params[::-1], cap)
        self._buffer_buckets = _make_buckets(module.buffers(), cap)
        self._broadcast(self._grad_buckets)
        self._broadcast(self._buffer_buckets)
        self.training = module.training
        self._place = {
            id(t): (b, i)
            for b, bucket in enumerate(self._grad_buckets)
            for i, t in enumerate(bucket.tensors)
        }
        self._averaging = True  # False inside no_sync()
        self._reduction: _Reduction | None = None
        self._averaged: dict[int, Tensor] = {}  # the mean gradient handed to each parameter
        for param in params:
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(self._gradient_ready)
            register_step_check(param, self._check_averaged)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)``."""
        return self.module(*args, **kwargs)

    def sync_gradients(self) -> None:
        """Replace every parameter's gradient by its mean over all ranks (a collective),
        unless ``backward()`` already did: then it does nothing.

        Needed only after a backward inside :meth:`no_sync` (or gradients set by hand). A
        parameter without a gradient counts as a zero gradient (and gets the mean, so
        ranks that did and did not use it agree).

        Raises:
            PeerLostError: a rank did not take part before the deadline.
        """
        if self._averaged and all(
            t.grad is self._averaged.get(id(t))
            for bucket in self._grad_buckets
            for t in bucket.tensors
        ):
            return
        for bucket in self._grad_buckets:
            bucket.gather([None if t.grad is None else t.grad.numpy() for t in bucket.tensors])
        self._average([distributed._start_all_reduce(b.buffer) for b in self._grad_buckets])

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Inside this context ``backward()`` leaves each rank its own gradients (PyTorch's
        ``no_sync``); call :meth:`sync_gradients` before stepping on them."""
        previous, self._averaging = self._averaging, False
        try:
            yield
        finally:
            self._averaging = previous

    # ----- the average during backward() -------------------------------------------------
    def _gradient_ready(self, param: Tensor) -> None:
        """A parameter's gradient is final: copy it into its bucket, and start every bucket
        that is full (in order); the first call of a backward queues the finish."""
        if not self._averaging:
            return
        reduction = self._reduction
        if reduction is None:
            reduction = self._reduction = _Reduction(counts=[0] * len(self._grad_buckets))
            queue_callback(self._finish_average)
        b, i = self._place[id(param)]
        assert param.grad is not None  # the hook runs once .grad is set
        self._grad_buckets[b].view(i)[...] = param.grad.numpy()
        reduction.ready.add(id(param))
        reduction.counts[b] += 1
        self._start_full_buckets(reduction)
        for request in reduction.requests:  # lets MPI move the started ones along
            distributed._test(request, "DistributedDataParallel.sync_gradients")

    def _start_full_buckets(self, reduction: _Reduction) -> None:
        """Start the all-reduce of each full bucket after the last one started, in order."""
        buckets = self._grad_buckets
        while len(reduction.requests) < len(buckets) and reduction.counts[
            len(reduction.requests)
        ] == len(buckets[len(reduction.requests)].tensors):
            buffer = buckets[len(reduction.requests)].buffer
            reduction.requests.append(distributed._start_all_reduce(buffer))

    def _finish_average(self) -> None:
        """The end of backward(): parameters this backward did not reach count as zeros, or,
        when it accumulates, as the gradient they hold (the mean of the earlier micro-batches,
        the same on every rank); start the remaining buckets, wait for them all and hand out
        the means."""
        reduction, self._reduction = self._reduction, None
        assert reduction is not None, "queued by the backward's first _gradient_ready"
        accumulating = backward_accumulates()
        for b, bucket in enumerate(self._grad_buckets):
            for i, t in enumerate(bucket.tensors):
                if id(t) not in reduction.ready:
                    kept = t.grad if accumulating else None
                    bucket.view(i)[...] = 0 if kept is None else kept.numpy()
                    reduction.counts[b] += 1
        self._start_full_buckets(reduction)
        self._average(reduction.requests)

    def _average(self, requests: list[Any]) -> None:
        """Wait for each bucket's all-reduce and give its parameters the mean."""
        self._averaged = {}
        for bucket, request in zip(self._grad_buckets, requests):
            distributed._wait(request, "DistributedDataParallel.sync_gradients")
            bucket.buffer /= self.world_size
            for param, view in zip(bucket.tensors, bucket.views()):
                param.grad = Tensor(
                    view, device=param.device, dtype=param.dtype, requires_grad=False
                )
                self._averaged[id(param)] = param.grad

    def _check_averaged(self, param: Tensor) -> None:
        """An optimizer step's check: ``param``'s gradient is the mean this model made."""
        if param.grad is not None and param.grad is not self._averaged.get(id(param)):
            raise RuntimeError(
                "DistributedDataParallel: an optimizer step on gradients that were not "
                "averaged over the ranks (backward() ran inside no_sync(), or a gradient was "
                "set by hand); call model.sync_gradients() before opt.step(), or the replicas "
                "drift apart"
            )

    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (e.g. running statistics) to every rank (a collective)."""
        self._broadcast(self._buffer_buckets)

    def _broadcast(self, buckets: list[_Bucket]) -> None:
        """Overwrite the tensors of ``buckets`` with rank 0's values."""
        for bucket in buckets:
            bucket.gather([t.numpy() for t in bucket.tensors])
            distributed._wait(
                distributed._start_broadcast(bucket.buffer, 0), "DistributedDataParallel.broadcast"
            )
            for tensor, view in zip(bucket.tensors, bucket.views()):
                _set_array(tensor, view)

    def train(self, mode: bool = True) -> DistributedDataParallel:
        """Set the mode of the wrapped module; ``eval()`` also takes rank 0's buffers."""
        super().train(mode)
        if not mode and self.broadcast_buffers:
            self.sync_buffers()
        return self

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """The wrapped module's state dict (its keys, without a ``module.`` prefix)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Load into the wrapped module (see :meth:`Module.load_state_dict`)."""
        return self.module.load_state_dict(state, strict=strict)

    def extra_repr(self) -> str:
        return (
            f"world_size={self.world_size}, buckets={len(self._grad_buckets)}, "
            f"broadcast_buffers={self.broadcast_buffers}"
        )


def _named_tensors(module: Module) -> list[tuple[str, Tensor]]:
    """The module's parameters, then its buffers, with their dotted names."""
    return list(module.named_parameters()) + list(module.named_buffers())

"""``DistributedDataParallel``: one model replica per rank, gradients averaged over MPI.

Usage, in every rank of an MPI job (see docs/distributed.md)::

    dist.init()
    model = nn.DistributedDataParallel(MLPResNet(784))   # rank 0's weights everywhere
    opt = optim.Adam(model.parameters(), lr=1e-3)
    for X, y in loader:                                    # a DistributedSampler's shard
        loss = loss_fn(model(X), y)
        opt.reset_grad()
        loss.backward()
        model.sync_gradients()                             # mean gradient of all ranks
        opt.step()

needle's autograd has no backward hooks, so the gradient average is one explicit call after
``backward()`` (``needle.apps.mlp_resnet.run_epoch`` makes it for a wrapped model).
Gradients travel in flat buckets of at most ``bucket_cap_mb`` megabytes, one all-reduce
each, all started before the first is waited for.

Buffers (BatchNorm's running statistics) follow one rule: during training each rank
updates its own from its own batches; when the model is put in evaluation mode
(``eval()``) every rank takes rank 0's (with ``broadcast_buffers=True``, the default).
So evaluation and checkpoints (written by rank 0) use rank 0's statistics, and a run
resumed from a checkpoint continues exactly like an uninterrupted one.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .. import distributed
from ..autograd import Tensor
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
        return [self.buffer[start:stop].reshape(t.shape) for t, start, stop
                in zip(self.tensors, self.offsets, self.offsets[1:])]

    def gather(self, arrays: list[np.ndarray | None]) -> None:
        """Copy one array per tensor into the buffer (None: zeros)."""
        for view, array in zip(self.views(), arrays):
            view[...] = 0 if array is None else array


def _make_buckets(tensors: list[Tensor], cap_bytes: float) -> list[_Bucket]:
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


def _set_array(tensor: Tensor, array: np.ndarray) -> None:
    """Replace ``tensor``'s data by a copy of the NumPy ``array`` (any backend)."""
    tensor.data = Tensor(array, device=tensor.device, dtype=tensor.dtype, requires_grad=False)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over MPI (after ``distributed.init()``).

    At construction (a collective: every rank must build it) it checks that every rank
    has the same parameter names, shapes and dtypes, then copies rank 0's parameters and
    buffers to all ranks, so every replica starts identical. After each ``backward()``,
    :meth:`sync_gradients` replaces every gradient by its mean over the ranks; as every
    rank then applies the same update to the same weights, the replicas stay identical.

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

    def __init__(self, module: Module, bucket_cap_mb: float = DEFAULT_BUCKET_MB,
                 broadcast_buffers: bool = True) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nn.Module, got "
                            f"{type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, "
                             f"got {bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.world_size = distributed.world_size()
        layout = [(name, tuple(t.shape), str(t.dtype)) for name, t in _named_tensors(module)]
        distributed._check_agreement("DistributedDataParallel", layout)
        cap = bucket_cap_mb * 1e6
        self._grad_buckets = _make_buckets(module.parameters(), cap)
        self._buffer_buckets = _make_buckets(module.buffers(), cap)
        self._broadcast(self._grad_buckets)
        self._broadcast(self._buffer_buckets)
        self.training = module.training

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)``."""
        return self.module(*args, **kwargs)

    def sync_gradients(self) -> None:
        """Replace every parameter's gradient by its mean over all ranks (a collective).

        A parameter without a gradient counts as a zero gradient (and gets the mean, so
        ranks that did and did not use it agree).

        Raises:
            PeerLostError: a rank did not take part before the deadline.
        """
        requests = []
        for bucket in self._grad_buckets:
            bucket.gather([None if t.grad is None else t.grad.numpy() for t in bucket.tensors])
            requests.append(distributed._start_all_reduce(bucket.buffer))
        for bucket, request in zip(self._grad_buckets, requests):
            distributed._wait(request, "DistributedDataParallel.sync_gradients")
            bucket.buffer /= self.world_size
            for param, view in zip(bucket.tensors, bucket.views()):
                param.grad = Tensor(view, device=param.device, dtype=param.dtype,
                                    requires_grad=False)

    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (e.g. running statistics) to every rank (a collective)."""
        self._broadcast(self._buffer_buckets)

    def _broadcast(self, buckets: list[_Bucket]) -> None:
        """Overwrite the tensors of ``buckets`` with rank 0's values."""
        for bucket in buckets:
            bucket.gather([t.numpy() for t in bucket.tensors])
            distributed._wait(distributed._start_broadcast(bucket.buffer, 0),
                              "DistributedDataParallel.broadcast")
            for tensor, view in zip(bucket.tensors, bucket.views()):
                _set_array(tensor, view)

    def train(self, mode: bool = True) -> "DistributedDataParallel":
        """Set the mode of the wrapped module; ``eval()`` also takes rank 0's buffers."""
        super().train(mode)
        if not mode and self.broadcast_buffers:
            self.sync_buffers()
        return self

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """The wrapped module's state dict (its keys, without a ``module.`` prefix)."""
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Load into the wrapped module (see :meth:`Module.load_state_dict`)."""
        return self.module.load_state_dict(state, strict=strict)

    def extra_repr(self) -> str:
        return (f"world_size={self.world_size}, buckets={len(self._grad_buckets)}, "
                f"broadcast_buffers={self.broadcast_buffers}")


def _named_tensors(module: Module) -> list[tuple[str, Tensor]]:
    """The module's parameters, then its buffers, with their dotted names."""
    return list(module.named_parameters()) + list(module.named_buffers())

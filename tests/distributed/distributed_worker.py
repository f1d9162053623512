"""The program each rank runs in tests/distributed/test_distributed.py (started by mpiexec).

``python distributed_worker.py MODE OUT [ARGS]``:

* ``train OUT OPTIMIZER EPOCHS``: data-parallel training of a small MLP ResNet (LayerNorm,
  no dropout: its forward pass is per sample, so a data-parallel step equals a
  single-process step on the global batch). After every step each rank's parameters are
  hashed and compared across ranks. Rank 0 writes ``OUT/result.npz``: the final
  parameters and, per step, whether every rank held bit-identical parameters.
* ``collectives OUT``: every collective on rank-dependent values; each rank writes
  ``OUT/rank{R}.json`` with what it received.
* ``replicas OUT``: each rank builds a BatchNorm model from its own seed, wraps it, and
  records digests of its parameters and buffers: before wrapping, after wrapping, after
  a training-mode forward pass on its own data, and after ``eval()``; with
  ``broadcast_buffers`` True and False. Each rank writes ``OUT/rank{R}.json``.
* ``pytorch_loop OUT``: PyTorch's loop as users write it: each rank seeds NumPy with its
  own rank before building the model, wraps it, then ``loss.backward(); opt.step()`` on its
  own data with no other call; each rank writes ``OUT/rank{R}.json`` with the digest of its
  parameters after every step.
* ``die OUT SIGNAL``: trains for many steps; at step 3 the last rank sends itself
  ``SIGNAL`` (``KILL``: it dies; ``STOP``: it hangs, alive but silent).

The test process imports :func:`build_model`, :func:`make_loader` and :func:`train` to
compute the single-process reference with exactly the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

import needle as ndl
from needle import distributed, nn, optim
from needle.apps.mlp_resnet import MLPResNet, run_epoch
from needle.data import DataLoader, DistributedSampler, NDArrayDataset

DIM, HIDDEN, BLOCKS, CLASSES = 12, 16, 2, 5
SAMPLES, GLOBAL_BATCH, SEED = 48, 12, 7


def build_model() -> nn.Module:
    """The model every run starts from (seeded, so the same on every rank)."""
    np.random.seed(SEED)
    return MLPResNet(DIM, HIDDEN, BLOCKS, CLASSES, norm=nn.LayerNorm1d, drop_prob=0.0)


def make_loader(num_replicas: int, rank: int) -> DataLoader:
    """Rank ``rank``'s loader: batches of ``GLOBAL_BATCH / num_replicas`` samples."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((SAMPLES, DIM)).astype(np.float32)
    y = rng.integers(0, CLASSES, SAMPLES).astype(np.uint8)
    sampler = DistributedSampler(SAMPLES, num_replicas, rank, seed=SEED)
    return DataLoader(NDArrayDataset(X, y), GLOBAL_BATCH // num_replicas, sampler=sampler)


def make_optimizer(model: nn.Module, name: str) -> optim.Optimizer:
    if name == "adam":
        return optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    return optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def train(model: nn.Module, loader: DataLoader, opt_name: str, epochs: int, on_batch=None) -> None:
    """``epochs`` passes of :func:`run_epoch` (a DDP model averages its gradients in backward())."""
    opt = make_optimizer(model, opt_name)
    for _ in range(epochs):
        run_epoch(loader, model, opt, on_batch=on_batch)


def parameters(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def _digest(model: nn.Module) -> str:
    return hashlib.sha256(b"".join(p.numpy().tobytes() for p in model.parameters())).hexdigest()


def run_train(out: Path, opt_name: str, epochs: int) -> None:
    model = nn.DistributedDataParallel(build_model(), bucket_cap_mb=0.002)  # several buckets
    identical = []

    def check_ranks(_result) -> None:
        digests = distributed.all_gather_object(_digest(model))
        identical.append(len(set(digests)) == 1)

    train(
        model,
        make_loader(distributed.world_size(), distributed.rank()),
        opt_name,
        epochs,
        on_batch=check_ranks,
    )
    if distributed.rank() == 0:
        np.savez(
            out / "result.npz",
            identical=np.array(identical),
            buckets=len(model._grad_buckets),
            **parameters(model.module),
        )


def run_collectives(out: Path) -> None:
    rank, size = distributed.rank(), distributed.world_size()
    x = np.arange(4, dtype=np.float64) * (rank + 1)
    result = {
        "sum": distributed.all_reduce(x).tolist(),
        "mean_tensor": distributed.all_reduce(ndl.Tensor(x, dtype="float32"), op="mean")
        .numpy()
        .tolist(),
        "tensor_type": type(distributed.all_reduce(ndl.Tensor(x))).__name__,
        "broadcast": distributed.broadcast(np.full(3, rank), root=size - 1).tolist(),
        "gathered": distributed.all_gather_object({"rank": rank}),
        "input_unchanged": x.tolist() == (np.arange(4) * (rank + 1)).tolist(),
    }
    try:
        distributed.all_reduce(np.zeros(rank + 1))
    except distributed.CollectiveMismatchError as e:
        result["mismatch"] = str(e)
    distributed.barrier()
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def _digests(tensors: list) -> str:
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()


def run_replicas(out: Path) -> None:
    rank = distributed.rank()
    result = {}
    for broadcast in (True, False):
        np.random.seed(100 + rank)  # every rank starts with other weights
        model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2))
        steps = {"built": (_digests(model.parameters()), _digests(model.buffers()))}
        ddp = nn.DistributedDataParallel(model, broadcast_buffers=broadcast)
        steps["wrapped"] = (_digests(model.parameters()), _digests(model.buffers()))
        ddp(ndl.Tensor(np.random.randn(8, 4).astype(np.float32)))  # own batch statistics
        steps["trained"] = (_digests(model.parameters()), _digests(model.buffers()))
        ddp.eval()
        steps["eval"] = (_digests(model.parameters()), _digests(model.buffers()))
        result[str(broadcast)] = steps
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def run_pytorch_loop(out: Path) -> None:
    rank = distributed.rank()
    np.random.seed(1000 + rank)  # replicas built from different weights
    model = nn.DistributedDataParallel(
        nn.Sequential(
            nn.Linear(DIM, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, CLASSES)
        ),
        bucket_cap_mb=0.003,
    )
    opt = optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.SoftmaxLoss()
    digests = []
    for _ in range(4):
        X = ndl.Tensor(np.random.randn(6, DIM), dtype="float32")  # this rank's own batch
        y = ndl.Tensor(np.random.randint(0, CLASSES, 6), dtype="int64")
        loss = loss_fn(model(X), y)
        opt.reset_grad()
        loss.backward()
        opt.step()
        digests.append(_digest(model))
    (out / f"rank{rank}.json").write_text(
        json.dumps({"digests": digests, "buckets": len(model._grad_buckets)})
    )


class _TwoHeads(nn.Module):
    """A trunk and two heads; ``use_a=False`` leaves head ``a`` out of the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.a, self.b = nn.Linear(DIM, 8), nn.Linear(8, CLASSES), nn.Linear(8, CLASSES)

    def forward(self, x: ndl.Tensor, use_a: bool) -> ndl.Tensor:
        h = ndl.ops.relu(self.trunk(x))
        return self.b(h) + self.a(h) if use_a else self.b(h)


def run_unused_accumulate(out: Path) -> None:
    """Two micro-batches, head ``a`` used only in the first: the gradients DDP leaves after
    ``backward(); backward(accumulate=True)`` against the same micro-batches run in
    ``no_sync()`` and averaged once by ``sync_gradients()``."""
    rank = distributed.rank()
    np.random.seed(3000 + rank)
    model = nn.DistributedDataParallel(_TwoHeads())
    loss_fn = nn.SoftmaxLoss()
    batches = [
        (ndl.Tensor(np.random.randn(6, DIM), dtype="float32"), np.random.randint(0, CLASSES, 6))
        for _ in range(2)
    ]

    def accumulated(averaging: bool) -> list[np.ndarray]:
        for p in model.parameters():
            p.grad = None
        with contextlib.nullcontext() if averaging else model.no_sync():
            for position, (X, y) in enumerate(batches):
                loss = loss_fn(model(X, position == 0), ndl.Tensor(y, dtype="int64"))
                loss.backward(create_graph=False, accumulate=position > 0)
        if not averaging:
            model.sync_gradients()
        return [p.grad.numpy().copy() for p in model.parameters()]

    expected, got = accumulated(False), accumulated(True)
    result = {
        "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(expected, got)),
        "smallest_gradient_norm": min(float(np.abs(a).max()) for a in expected),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def run_die(out: Path, signal_name: str) -> None:
    model = nn.DistributedDataParallel(build_model())
    victim = distributed.world_size() - 1
    steps = []

    def maybe_die(_result) -> None:
        steps.append(1)
        if len(steps) == 3 and distributed.rank() == victim:
            os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}"))

    loader = make_loader(distributed.world_size(), distributed.rank())
    train(model, loader, "sgd", epochs=1000, on_batch=maybe_die)


def main(argv: list[str]) -> None:
    mode, out = argv[0], Path(argv[1])
    distributed.init()
    try:
        if mode == "train":
            run_train(out, argv[2], int(argv[3]))
        elif mode == "collectives":
            run_collectives(out)
        elif mode == "replicas":
            run_replicas(out)
        elif mode == "pytorch_loop":
            run_pytorch_loop(out)
        elif mode == "unused_accumulate":
            run_unused_accumulate(out)
        else:
            run_die(out, argv[2])
    except distributed.DistributedError as e:
        # What needle train does: say what happened, then end the whole job. The message also
        # goes to a file: MPI_Abort can end mpiexec before it forwards the rank's stderr.
        message = f"rank {distributed.rank()}: {type(e).__name__}: {e}"
        (out / f"error-rank{distributed.rank()}.txt").write_text(message)
        print(message, file=sys.stderr, flush=True)
        distributed.abort(3)


if __name__ == "__main__":
    main(sys.argv[1:])

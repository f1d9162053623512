"""How much of the gradient all-reduce data-parallel training hides behind the backward pass.

Runs itself under ``mpiexec -n N`` (one thread per process) for each N of ``--processes``
and times, per training step (forward, backward, Adam step) of two models — an MLP ResNet
of ~10M parameters (784-1024, 9 blocks, batch 100 per rank) and ResNet9 (3×32×32 images,
batch 16 per rank):

* ``compute``: the same model without a DistributedDataParallel wrapper (no communication);
* ``after``: the wrapped model with the average after backward, as it was done before
  hooks: ``backward()`` inside ``no_sync()``, then ``sync_gradients()``;
* ``overlap``: the wrapped model as users write it, ``loss.backward(); opt.step()``: the
  hooks start each bucket's all-reduce while backward goes on.

``hidden = (after - overlap) / (after - compute)``: the fraction of the communication time
that overlapping took off the step. Each figure is the median over rounds that time every
variant once (alternating), on the slowest rank. See docs/distributed.md.

    python benchmarks/bench_ddp_overlap.py                  # N = 2 and 4, 5 rounds
    python benchmarks/bench_ddp_overlap.py --processes 2 --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
from bench_allreduce import run_workers, timed


def _mlp():
    import needle as ndl
    from needle.apps.mlp_resnet import MLPResNet

    X = ndl.Tensor(np.random.rand(100, 784).astype(np.float32), requires_grad=False)
    return MLPResNet(784, 1024, 9, 10), X


def _resnet9():
    import needle as ndl
    from needle.apps.models_conv import ResNet9

    X = ndl.Tensor(np.random.rand(16, 3, 32, 32).astype(np.float32), requires_grad=False)
    return ResNet9(), X


MODELS = {"MLP ResNet 10M": _mlp, "ResNet9": _resnet9}


def measure(make, repeat: int) -> dict[str, float]:
    """compute / after / overlap medians (ms) of one model on this rank."""
    import needle as ndl
    from needle import nn, optim

    np.random.seed(0)
    plain, X = make()
    np.random.seed(0)
    wrapped = nn.DistributedDataParallel(make()[0])
    y = ndl.Tensor(np.random.randint(0, 10, X.shape[0]), dtype="int64")
    loss_fn = nn.SoftmaxLoss()
    opts = {id(m): optim.Adam(m.parameters(), lr=1e-4) for m in (plain, wrapped)}

    def step(model, separate: bool) -> None:
        opt = opts[id(model)]
        opt.reset_grad()
        loss = loss_fn(model(X), y)
        if separate:
            with model.no_sync():
                loss.backward()
            model.sync_gradients()
        else:
            loss.backward()
        opt.step()

    variants = {
        "compute": lambda: step(plain, False),
        "after": lambda: step(wrapped, True),
        "overlap": lambda: step(wrapped, False),
    }
    for run in variants.values():
        run()  # warm up: optimizer state, buffer pool
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, run in variants.items():
            times[name].append(timed(run))
    return {name: statistics.median(values) for name, values in times.items()}


def worker(repeat: int) -> None:
    """What each rank runs: every model, then rank 0 prints the table row."""
    from needle import distributed

    distributed.init()
    for name, make in MODELS.items():
        f = measure(make, repeat)
        if distributed.rank() == 0:
            comm = f["after"] - f["compute"]
            hidden = (f["after"] - f["overlap"]) / comm if comm > 0 else float("nan")
            print(
                f"| {name} | {distributed.world_size()} | {f['compute']:.1f} | "
                f"{f['after']:.1f} | {f['overlap']:.1f} | {comm:.1f} | {hidden:.0%} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (median)")
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.repeat)
        return
    print("| model | ranks | compute ms | after ms | overlap ms | communication ms | hidden |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in args.processes:
        code = run_workers(__file__, n, args.repeat)
        if code:
            sys.exit(code)


if __name__ == "__main__":
    main()

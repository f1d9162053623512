"""Cost of the gradient all-reduce of data-parallel training, and what it predicts at scale.

Runs itself under ``mpiexec -n 2`` (one thread per process) and measures, for the default
MLP ResNet (110,860 parameters) and an MLP ResNet of ~10M parameters:

* ``compute``: one training step (forward, backward, optimizer) on a per-rank batch of
  100, both ranks computing at once;
* ``sync``: ``DistributedDataParallel.sync_gradients()`` for several bucket sizes
  (``per-param``: one message per parameter), copies into and out of the buckets included;
* ``raw``: a blocking ``MPI_Allreduce`` of all the gradients in one buffer (the MPI floor).

Bus bandwidth is the ring algorithm's traffic per rank over the time,
``2 (N - 1) / N · bytes / t``. Then the ring model ``t = 2 (N - 1) / N · bytes / BW +
2 (N - 1) · latency`` predicts the step time and scaling efficiency
(``compute / (compute + all-reduce)``, no overlap) on 8 and 64 workers at 10 and
100 Gbit/s. See docs/distributed.md.

    python benchmarks/bench_allreduce.py            # 20 repetitions (median)
    python benchmarks/bench_allreduce.py --repeat 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MODELS = {"MLP ResNet (default)": (100, 3), "MLP ResNet 10M": (1024, 9)}  # hidden, blocks
BUCKETS_MB = [None, 0.25, 1.0, 4.0, 25.0]  # None: one message per parameter
BATCH = 100
#: Assumed per-message latency of each network for the prediction (not measured here).
NETWORKS = {"10 Gbit/s": (10e9 / 8, 20e-6), "100 Gbit/s": (100e9 / 8, 5e-6)}
WORKERS = (8, 64)


def median_ms(run, repeat: int) -> float:
    """Median wall time of ``run()`` in ms, every rank starting together."""
    from needle import distributed

    times = []
    for _ in range(repeat):
        distributed.barrier()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    # The slowest rank sets the pace of a collective: take every rank's worst.
    return 1e3 * statistics.median(_maximum(np.array(times)))


def _maximum(values: np.ndarray) -> np.ndarray:
    """The element-wise maximum over the ranks (via MPI's MAX)."""
    from mpi4py import MPI

    result = np.empty_like(values)
    MPI.COMM_WORLD.Allreduce(values, result, op=MPI.MAX)
    return result


def build(hidden: int, blocks: int):
    """The model, its optimizer and one batch of random data."""
    import needle as ndl
    from needle import optim
    from needle.apps.mlp_resnet import MLPResNet

    np.random.seed(0)
    model = MLPResNet(784, hidden, blocks, 10)
    X = ndl.Tensor(np.random.rand(BATCH, 784).astype(np.float32), requires_grad=False)
    y = ndl.Tensor(np.random.randint(0, 10, BATCH).astype(np.uint8), requires_grad=False)
    return model, optim.Adam(model.parameters(), lr=1e-3), X, y


def measure(hidden: int, blocks: int, repeat: int) -> dict:
    """Every figure of one model, on this rank."""
    from mpi4py import MPI

    from needle import nn

    model, opt, X, y = build(hidden, blocks)
    loss_fn = nn.SoftmaxLoss()
    ddp = nn.DistributedDataParallel(model)

    def step() -> None:
        loss = loss_fn(ddp(X), y)
        opt.reset_grad()
        loss.backward()
        ddp.sync_gradients()
        opt.step()

    step()  # warm up: allocate the optimizer state
    figures = {"params": sum(p.size for p in model.parameters()),
               "step": median_ms(step, repeat)}
    figures["bytes"] = 4 * figures["params"]
    for cap in BUCKETS_MB:
        wrapped = nn.DistributedDataParallel(model, bucket_cap_mb=cap or 1e-9)
        figures[f"sync {cap}"] = median_ms(wrapped.sync_gradients, repeat)
    flat = np.ones(figures["params"], dtype=np.float32)
    out = np.empty_like(flat)
    figures["raw"] = median_ms(lambda: MPI.COMM_WORLD.Allreduce(flat, out), repeat)
    figures["latency"] = median_ms(lambda: MPI.COMM_WORLD.Allreduce(flat[:1], out[:1]),
                                   10 * repeat)
    figures["compute"] = figures["step"] - figures["sync 4.0"]
    return figures


def report(results: dict[str, dict], n: int) -> None:
    """Print the measurements and the predictions."""
    print(f"\n{n} processes on one machine (shared memory), 1 thread each; median ms")
    header = "model                   params   MB   compute  " + "  ".join(
        f"{'per-param' if c is None else f'{c:g} MB':>9}" for c in BUCKETS_MB) + "      raw"
    print(header)
    for name, f in results.items():
        syncs = "  ".join(f"{f[f'sync {c}']:9.3f}" for c in BUCKETS_MB)
        print(f"{name:22} {f['params']:>8,} {f['bytes'] / 1e6:5.2f} {f['compute']:8.2f}  "
              f"{syncs} {f['raw']:8.3f}")
    for name, f in results.items():
        bus = 2 * (n - 1) / n * f["bytes"] / (f["raw"] / 1e3)
        print(f"{name}: raw all-reduce bus bandwidth {bus / 1e9:.2f} GB/s, one-float "
              f"all-reduce (latency) {f['latency'] * 1e3:.1f} us")
    print("\nRing all-reduce prediction: t = 2(N-1)/N * bytes/BW + 2(N-1)*latency; "
          "efficiency = compute / (compute + t)")
    for name, f in results.items():
        for network, (bandwidth, latency) in NETWORKS.items():
            for workers in WORKERS:
                t = 2 * (workers - 1) / workers * f["bytes"] / bandwidth \
                    + 2 * (workers - 1) * latency
                step = f["compute"] + 1e3 * t
                print(f"  {name:22} {network:>10} N={workers:<3} all-reduce {1e3 * t:7.2f} ms  "
                      f"step {step:8.2f} ms  efficiency {f['compute'] / step:5.1%}")


def worker(repeat: int) -> None:
    """What each rank runs."""
    from needle import distributed

    distributed.init()
    results = {name: measure(hidden, blocks, repeat)
               for name, (hidden, blocks) in MODELS.items()}
    if distributed.rank() == 0:
        report(results, distributed.world_size())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="repetitions (median)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.repeat)
        return
    from needle import distributed

    launcher = distributed.find_mpiexec()
    if launcher is None:
        sys.exit("bench_allreduce: no mpiexec found; pip install \"needle-dl[distributed]\"")
    env = dict(os.environ, **{name: "1" for name in THREAD_VARS})
    command = [launcher, "-n", str(args.processes), sys.executable, __file__, "--worker",
               "--repeat", str(args.repeat)]
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()

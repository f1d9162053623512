"""Cost of the gradient all-reduce of data-parallel training, and what it predicts at scale.

Runs itself under ``mpiexec -n 2`` (one thread per process) and measures, for the default
MLP ResNet (110,860 parameters) and an MLP ResNet of ~10M parameters:

* ``compute``: one training step (forward, backward, optimizer; no communication) on a
  per-rank batch of 100, both ranks computing at once;
* ``sync``: ``DistributedDataParallel.sync_gradients()`` for several bucket sizes
  (``per-param``: one message per parameter), copies into and out of the buckets included;
* ``raw``: one ``MPI_Iallreduce`` of all the gradients in one ready buffer, waited for
  as needle waits (the floor: no copies, one message);
* ``latency``: the same for a single float.

Bus bandwidth is the ring algorithm's traffic per rank over the time,
``2 (N - 1) / N · bytes / t``. Then the ring model ``t = 2 (N - 1) / N · bytes / BW +
2 (N - 1) · latency`` predicts the step time and scaling efficiency
(``compute / (compute + all-reduce)``, no overlap) on 8 and 64 workers at 10 and
100 Gbit/s. Each figure is the median of rounds that time every variant once
(alternating, so load drift hits all alike). See docs/distributed.md.

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
#: The last column assumes compute this many times faster (a GPU instead of one core).
FAST_COMPUTE = 100


def timed(run) -> float:
    """Wall time of ``run()`` in ms on the slowest rank, every rank starting together."""
    from mpi4py import MPI

    # Two blocking barriers (MPI spins in them): the ranks leave them nearly together, even
    # on a loaded machine where a rank that slept in the first one wakes up late.
    MPI.COMM_WORLD.Barrier()
    MPI.COMM_WORLD.Barrier()
    start = time.perf_counter()
    run()
    elapsed = np.array([time.perf_counter() - start])
    # The slowest rank sets the pace of a collective: take every rank's worst.
    return 1e3 * float(_maximum(elapsed)[0])


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
    """Every figure of one model, on this rank: medians over ``repeat`` rounds.

    Each round times every variant once, so load drift hits them all alike.
    """
    from needle import distributed, nn
    from needle.loop import run_batches
    from needle.tasks.image import Classification

    model, opt, X, y = build(hidden, blocks)
    objective = Classification()

    def compute() -> None:  # one step of needle's batch loop, without communication
        run_batches([(X, y)], model, objective, opt)

    compute()  # warm up: gradients exist and the optimizer state is allocated
    size = sum(p.size for p in model.parameters())
    flat, one = np.ones(size, dtype=np.float32), np.ones(1, dtype=np.float32)
    variants = {
        "compute": compute,
        "raw": lambda: distributed._wait(distributed._start_all_reduce(flat), "raw"),
        "latency": lambda: distributed._wait(distributed._start_all_reduce(one), "one"),
    }
    for cap in BUCKETS_MB:
        ddp = nn.DistributedDataParallel(model, bucket_cap_mb=cap or 1e-9)
        variants[f"sync {cap}"] = ddp.sync_gradients
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, run in variants.items():
            times[name].append(timed(run))
    figures = {name: statistics.median(values) for name, values in times.items()}
    figures.update(params=size, bytes=4 * size)
    return figures


def report(results: dict[str, dict], n: int) -> None:
    """Print the measurements and the predictions."""
    print(f"\n{n} processes on one machine (shared memory), 1 thread each; median ms")
    header = (
        "model                   params   MB   compute  "
        + "  ".join(f"{'per-param' if c is None else f'{c:g} MB':>9}" for c in BUCKETS_MB)
        + "      raw"
    )
    print(header)
    for name, f in results.items():
        syncs = "  ".join(f"{f[f'sync {c}']:9.3f}" for c in BUCKETS_MB)
        print(
            f"{name:22} {f['params']:>8,} {f['bytes'] / 1e6:5.2f} {f['compute']:8.2f}  "
            f"{syncs} {f['raw']:8.3f}"
        )
    for name, f in results.items():
        bus = 2 * (n - 1) / n * f["bytes"] / (f["raw"] / 1e3)
        print(
            f"{name}: raw all-reduce bus bandwidth {bus / 1e9:.2f} GB/s, one-float "
            f"all-reduce (latency) {f['latency'] * 1e3:.1f} us"
        )
    print(
        "\nRing all-reduce prediction: t = 2(N-1)/N * bytes/BW + 2(N-1)*latency; "
        "efficiency = compute / (compute + t); last column: with compute "
        f"{FAST_COMPUTE}x faster"
    )
    for name, f in results.items():
        for network, (bandwidth, latency) in NETWORKS.items():
            for workers in WORKERS:
                t = (
                    2 * (workers - 1) / workers * f["bytes"] / bandwidth
                    + 2 * (workers - 1) * latency
                )
                step = f["compute"] + 1e3 * t
                fast = f["compute"] / FAST_COMPUTE
                print(
                    f"  {name:22} {network:>10} N={workers:<3} all-reduce {1e3 * t:7.2f} ms  "
                    f"step {step:8.2f} ms  efficiency {f['compute'] / step:5.1%}  "
                    f"{fast / (fast + 1e3 * t):5.1%}"
                )


def worker(repeat: int) -> None:
    """What each rank runs."""
    from needle import distributed

    distributed.init()
    results = {name: measure(hidden, blocks, repeat) for name, (hidden, blocks) in MODELS.items()}
    if distributed.rank() == 0:
        report(results, distributed.world_size())


def run_workers(script: str, processes: int, repeat: int) -> int:
    """``script --worker --repeat R`` on ``processes`` MPI ranks, one thread each; the exit
    status (the script says why when there is no mpiexec)."""
    from needle import distributed

    launcher = distributed.find_mpiexec()
    if launcher is None:
        sys.exit(
            f'{os.path.basename(script)}: no mpiexec found; pip install "needle-dl[distributed]"'
        )
    env = dict(os.environ, **{name: "1" for name in THREAD_VARS})
    command = [
        launcher,
        "-n",
        str(processes),
        sys.executable,
        script,
        "--worker",
        "--repeat",
        str(repeat),
    ]
    return subprocess.run(command, env=env).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="repetitions (median)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.repeat)
        return
    sys.exit(run_workers(__file__, args.processes, args.repeat))


if __name__ == "__main__":
    main()

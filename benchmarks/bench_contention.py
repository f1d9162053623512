"""Threads on a busy machine: a training epoch at the default thread count against one thread,
with another CPU-bound process running.

A busy loop (another process, spinning on one core) runs the whole time. Meanwhile an
"epoch" — ``--steps`` training steps of the MLP ResNet (784 → ``--hidden``, batch
``--batch``, Adam, ``loss.backward()``) on random data — runs in a fresh subprocess, in turn
at the default thread count (nothing set) and at one thread (``OMP_NUM_THREADS=1``, BLAS
pinned), round after round. Printed: each setting's median seconds and the ratio
default / one thread (the goal is at most 1.2: threads must not make a busy machine slower).
Without ``--busy`` the same on a quiet machine.

    python benchmarks/bench_contention.py                     # 5 rounds, 1 busy process
    python benchmarks/bench_contention.py --busy 0 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from _harness import THREAD_VARS


def spin() -> None:
    """A CPU-bound busy loop (the competing process)."""
    while True:
        pass


def epoch(hidden: int, batch: int, steps: int) -> float:
    """Seconds for ``steps`` training steps, in this process."""
    import numpy as np

    import needle as ndl
    from needle.apps.mlp_resnet import MLPResNet
    from needle.loop import run_batches
    from needle.tasks.image import Classification

    np.random.seed(0)
    model = MLPResNet(784, hidden)
    opt = ndl.optim.Adam(model.parameters(), lr=1e-3)
    X = ndl.Tensor(np.random.rand(batch, 784), dtype="float32")
    y = ndl.Tensor(np.random.randint(0, 10, batch), dtype="int64")
    start = time.perf_counter()
    run_batches([(X, y)] * steps, model, Classification(), opt)
    return time.perf_counter() - start


def run(threads: str, args) -> float:
    env = dict(os.environ)
    for name in THREAD_VARS + ("NEEDLE_NUM_THREADS",):
        env.pop(name, None)
    if threads == "1":
        env.update({name: "1" for name in THREAD_VARS})
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--hidden",
        str(args.hidden),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    return float(
        subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(epoch(args.hidden, args.batch, args.steps))
        return
    busy = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()
    try:
        times: dict[str, list[float]] = {"default": [], "1": []}
        for _ in range(args.rounds):
            for threads in times:
                times[threads].append(run(threads, args))
    finally:
        for process in busy:
            process.terminate()
    default, one = (statistics.median(times[k]) for k in ("default", "1"))
    print(
        f"MLP ResNet {args.hidden} × {args.batch}, {args.steps} steps, {args.busy} busy "
        f"process(es): default threads {default:.2f} s, one thread {one:.2f} s, "
        f"ratio {default / one:.2f} (rounds: default "
        f"{', '.join(f'{t:.2f}' for t in times['default'])}; one "
        f"{', '.join(f'{t:.2f}' for t in times['1'])})"
    )


if __name__ == "__main__":
    main()

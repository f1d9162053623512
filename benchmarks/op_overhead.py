"""Per-op overhead on small tensors: microseconds per call, needle (nd and np) vs PyTorch.

Small tensors make the framework's own cost visible (graph node creation, argument
checks, dispatch) rather than the arithmetic. Every input is float32 and requires
grad, as in training, so each op also records its graph node. needle is timed on both
backends (``NEEDLE_BACKEND=nd`` and ``=np``, each in its own subprocess, since the
backend is chosen once per process); PyTorch (CPU, one thread) side by side when it
can be imported. A second table gives matmul GFLOP/s at the MLP ResNet step's shapes:
the NDArray on ``cpu()`` next to NumPy.

Usage::

    python benchmarks/op_overhead.py           # full run (~30 s)
    python benchmarks/op_overhead.py --quick   # a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import needle as ndl  # noqa: E402

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # PyTorch is optional: needle's column is printed alone
    torch = None


def time_call(fn: Callable[[], object], repeats: int, budget_s: float) -> tuple[float, float]:
    """(best, median) microseconds per call over ``repeats`` timed loops, after a warm-up."""
    # Warm up, and size the inner loop so each timed loop takes about budget_s / repeats.
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    number = max(1, int(budget_s / repeats / per_call))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e6)
    return min(samples), statistics.median(samples)


def _arrays(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.uniform(0.5, 1.5, size=s).astype(np.float32) for s in shapes]


def _needle(*arrays: np.ndarray) -> list[ndl.Tensor]:
    return [ndl.Tensor(a, requires_grad=True) for a in arrays]


def _torch(*arrays: np.ndarray) -> list:
    return [torch.tensor(a, requires_grad=True) for a in arrays]


def _mlp_arrays() -> list[np.ndarray]:
    batch, width, classes = 8, 32, 10
    x, w1, b1, w2 = _arrays((batch, width), (width, width), (1, width), (width, classes))
    y = np.eye(classes, dtype=np.float32)[np.arange(batch) % classes]
    return [x, w1 * 0.1, b1 * 0.1, w2 * 0.1, y]


def _mlp_step(lib):
    """Forward and backward of relu(x W1 + b1) W2 with a softmax loss, built from ops."""
    x, w1, b1, w2, y = _mlp_arrays()
    if lib == "needle":
        x, y = ndl.Tensor(x, requires_grad=False), ndl.Tensor(y, requires_grad=False)
        w1, b1, w2 = _needle(w1, b1, w2)

        def step():
            logits = ndl.relu(x @ w1 + b1) @ w2
            loss = (ndl.logsumexp(logits, 1).sum() - (logits * y).sum()) / 8
            loss.backward(create_graph=False)

        return step
    x, y = torch.tensor(x), torch.tensor(y)
    w1, b1, w2 = _torch(w1, b1, w2)

    def step():
        logits = torch.relu(x @ w1 + b1) @ w2
        loss = (torch.logsumexp(logits, 1).sum() - (logits * y).sum()) / 8
        for p in (w1, b1, w2):
            p.grad = None
        loss.backward()

    return step


# Each case: name, input shapes, needle body, torch body (bodies take the input tensors).
CASES = [
    ("add (10,10)", [(10, 10)] * 2, lambda a, b: a + b, lambda a, b: a + b),
    ("add (100,100)", [(100, 100)] * 2, lambda a, b: a + b, lambda a, b: a + b),
    ("mul (10,10)", [(10, 10)] * 2, lambda a, b: a * b, lambda a, b: a * b),
    ("mul (100,100)", [(100, 100)] * 2, lambda a, b: a * b, lambda a, b: a * b),
    (
        "add broadcast (100,100)+(100,)",
        [(100, 100), (100,)],
        lambda a, b: a + b,
        lambda a, b: a + b,
    ),
    ("add_scalar (10,10)", [(10, 10)], lambda a: a + 1.0, lambda a: a + 1.0),
    ("mul_scalar (100,100)", [(100, 100)], lambda a: a * 2.0, lambda a: a * 2.0),
    ("power_scalar 2 (10,10)", [(10, 10)], lambda a: a**2, lambda a: a**2),
    ("exp (10,10)", [(10, 10)], ndl.exp, lambda a: torch.exp(a)),
    ("relu (100,100)", [(100, 100)], ndl.relu, lambda a: torch.relu(a)),
    ("matmul 64x64", [(64, 64)] * 2, lambda a, b: a @ b, lambda a, b: a @ b),
    ("summation (100,100) all", [(100, 100)], lambda a: a.sum(), lambda a: a.sum()),
    ("summation (100,100) axis 0", [(100, 100)], lambda a: a.sum(0), lambda a: a.sum(0)),
    (
        "logsumexp (8,10) axis 1",
        [(8, 10)],
        lambda a: ndl.logsumexp(a, 1),
        lambda a: torch.logsumexp(a, 1),
    ),
]


def run_cases(lib: str, quick: bool) -> dict[str, float]:
    """Median µs per case for ``lib`` ("needle", on this process's backend, or "torch")."""
    if lib == "torch" and torch is None:
        return {}
    repeats, budget = (3, 0.1) if quick else (7, 1.0)
    make, pick = (_needle, 2) if lib == "needle" else (_torch, 3)
    times = {}
    for case in CASES:
        xs = make(*_arrays(*case[1]))
        body = case[pick]
        times[case[0]] = time_call(lambda body=body, xs=xs: body(*xs), repeats, budget)[1]
    times[MLP] = time_call(_mlp_step(lib), repeats, budget * 2)[1]
    return times


MLP = "MLP fwd+bwd (batch 8, 32-32-10)"


def _needle_column(backend: str, quick: bool) -> dict[str, float]:
    """Run this script as a worker under ``NEEDLE_BACKEND=backend``; {} if that fails."""
    env = dict(os.environ, NEEDLE_BACKEND=backend)
    cmd = [sys.executable, __file__, "--worker"] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"needle ({backend}) worker failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(columns: dict[str, dict[str, float]]) -> None:
    names = [c[0] for c in CASES] + [MLP]
    width = max(len(n) for n in names)
    heads = list(columns)
    header = f"{'op (float32, requires_grad)':<{width}}" + "".join(
        f"  {h + ' µs':>14}" for h in heads
    )
    if "torch" in columns:
        header += f"  {'nd/torch':>8}  {'np/torch':>8}"
    print(header)
    print("-" * len(header))
    for name in names:
        cells = [columns[h].get(name) for h in heads]
        line = f"{name:<{width}}" + "".join(
            f"  {c:>14.1f}" if c is not None else f"  {'-':>14}" for c in cells
        )
        if "torch" in columns:
            t = columns["torch"].get(name)
            for key in ("needle nd", "needle np"):
                v = columns[key].get(name)
                line += f"  {v / t:>8.1f}" if v is not None and t else f"  {'-':>8}"
        print(line)
    print(
        "\nmedian of repeated timed loops after warm-up; ratios = needle / torch"
        + ("" if torch else " (PyTorch not installed)")
    )


# (m, n, p) of every product in the MLP ResNet step (batch 100, 784-100-50-100-10).
STEP_MATMULS = [
    (100, 784, 100),
    (784, 100, 100),
    (100, 100, 50),
    (100, 50, 100),
    (50, 100, 100),
    (100, 100, 10),
    (100, 10, 100),
]


def matmul_gflops(quick: bool) -> None:
    """GFLOP/s of ``a @ b`` at the step's shapes: NDArray on cpu() vs NumPy (best of runs)."""
    from needle import backend_ndarray as nd

    repeats = 20 if quick else 200
    print(f"\n{'matmul (m, n, p)':<18}  {'NDArray cpu()':>14}  {'NumPy':>8}   GFLOP/s")
    for m, n, p in STEP_MATMULS:
        a, b = _arrays((m, n), (n, p))
        flops = 2 * m * n * p / 1e3  # GFLOP per µs -> divide by µs
        numpy_us = time_call(lambda a=a, b=b: a @ b, repeats, 0.2 if quick else 1.0)[0]
        cells = ["-"]
        if nd.cpu().enabled():
            x, y = nd.array(a, device=nd.cpu()), nd.array(b, device=nd.cpu())
            best_us = time_call(lambda x=x, y=y: x @ y, repeats, 0.2 if quick else 1.0)[0]
            cells = [f"{flops / best_us:.2f}"]
        print(f"{str((m, n, p)):<18}  {cells[0]:>14}  {flops / numpy_us:>8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_cases("needle", args.quick)))
        return
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__} (1 thread)" if torch else ""))
    columns = {
        "needle nd": _needle_column("nd", args.quick),
        "needle np": _needle_column("np", args.quick),
    }
    if torch is not None:
        columns["torch"] = run_cases("torch", args.quick)
    print_table(columns)
    matmul_gflops(args.quick)


if __name__ == "__main__":
    main()

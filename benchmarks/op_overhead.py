"""Per-op overhead on small tensors: microseconds per call, needle vs PyTorch.

Small tensors make the framework's own cost visible (graph node creation, argument
checks, dispatch) rather than the arithmetic. Every input is float32 and requires
grad, as in training, so each op also records its graph node. PyTorch (CPU, one
thread) is timed side by side when it can be imported.

Usage::

    python benchmarks/op_overhead.py           # full run (~30 s)
    python benchmarks/op_overhead.py --quick   # a few seconds
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

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
    ("add broadcast (100,100)+(100,)", [(100, 100), (100,)],
     lambda a, b: a + b, lambda a, b: a + b),
    ("add_scalar (10,10)", [(10, 10)], lambda a: a + 1.0, lambda a: a + 1.0),
    ("mul_scalar (100,100)", [(100, 100)], lambda a: a * 2.0, lambda a: a * 2.0),
    ("power_scalar 2 (10,10)", [(10, 10)], lambda a: a**2, lambda a: a**2),
    ("exp (10,10)", [(10, 10)], ndl.exp, lambda a: torch.exp(a)),
    ("relu (100,100)", [(100, 100)], ndl.relu, lambda a: torch.relu(a)),
    ("matmul 64x64", [(64, 64)] * 2, lambda a, b: a @ b, lambda a, b: a @ b),
    ("summation (100,100) all", [(100, 100)], lambda a: a.sum(), lambda a: a.sum()),
    ("summation (100,100) axis 0", [(100, 100)], lambda a: a.sum(0), lambda a: a.sum(0)),
    ("logsumexp (8,10) axis 1", [(8, 10)], lambda a: ndl.logsumexp(a, 1),
     lambda a: torch.logsumexp(a, 1)),
]


def run(quick: bool) -> list[tuple[str, float, float | None]]:
    repeats, budget = (3, 0.1) if quick else (7, 1.0)
    rows = []
    for name, shapes, needle_body, torch_body in CASES:
        arrays = _arrays(*shapes)
        xs = _needle(*arrays)
        needle_us = time_call(lambda: needle_body(*xs), repeats, budget)[1]
        torch_us = None
        if torch is not None:
            ts = _torch(*arrays)
            torch_us = time_call(lambda: torch_body(*ts), repeats, budget)[1]
        rows.append((name, needle_us, torch_us))
    name = "MLP fwd+bwd (batch 8, 32-32-10)"
    needle_us = time_call(_mlp_step("needle"), repeats, budget * 2)[1]
    torch_us = time_call(_mlp_step("torch"), repeats, budget * 2)[1] if torch else None
    rows.append((name, needle_us, torch_us))
    return rows


def print_table(rows) -> None:
    width = max(len(r[0]) for r in rows)
    title = "op (float32, requires_grad)"
    header = f"{title:<{width}}  {'needle µs':>10}  {'torch µs':>9}  {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name, needle_us, torch_us in rows:
        if torch_us is None:
            print(f"{name:<{width}}  {needle_us:>10.1f}  {'-':>9}  {'-':>6}")
        else:
            ratio = needle_us / torch_us
            print(f"{name:<{width}}  {needle_us:>10.1f}  {torch_us:>9.1f}  {ratio:>6.1f}")
    print("\nmedian of repeated timed loops after warm-up; ratio = needle / torch"
          + ("" if torch else " (PyTorch not installed)"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    args = parser.parse_args(argv)
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__} (1 thread)" if torch else ""))
    print_table(run(args.quick))


if __name__ == "__main__":
    main()

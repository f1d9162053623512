"""GFLOP/s of the compiled CPU backend's matmul against np.matmul, at one BLAS thread.

`ndarray_backend_cpu.matmul` hands zero-copy NumPy views of its buffers to `numpy.matmul`, so
it should run at NumPy's speed plus a fixed call cost; `matmul_tiled` (the course's hand-written
8×8 tiled loop) is shown for comparison at tile-multiple sizes. Runs alternate (needle, NumPy,
needle, ...) and each keeps its best time.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/backend_matmul.py [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads OpenBLAS

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from needle.backend_ndarray import ndarray_backend_cpu as cpu  # noqa: E402

SIZES = [(100, 784, 100), (1000, 2048, 2048)]
TILED_SIZES = [(96, 784, 96), (256, 256, 256)]


def upload(x: np.ndarray) -> cpu.Array:
    arr = cpu.Array(x.size, str(x.dtype))
    cpu.from_numpy(np.ascontiguousarray(x), arr)
    return arr


def best_seconds(call: Callable[[], None], budget: float) -> float:
    """Best single-call time over repeated calls for about `budget` seconds (at least 3)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or spent < budget:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
    return best


def compare(m: int, n: int, p: int, kernel: str, budget: float) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, n), dtype=np.float32)
    b = rng.standard_normal((n, p), dtype=np.float32)
    ref = np.empty((m, p), dtype=np.float32)
    ha, hb, hout = upload(a), upload(b), cpu.Array(m * p)
    ours = lambda: getattr(cpu, kernel)(ha, hb, hout, m, n, p)  # noqa: E731
    theirs = lambda: np.matmul(a, b, out=ref)  # noqa: E731
    best = {"needle": float("inf"), "numpy": float("inf")}
    for _ in range(3):  # alternate so that background load hits both alike
        best["needle"] = min(best["needle"], best_seconds(ours, budget))
        best["numpy"] = min(best["numpy"], best_seconds(theirs, budget))
    flops = 2.0 * m * n * p
    print(
        f"  {kernel:13s} {m}x{n} @ {n}x{p}: needle {flops / best['needle'] / 1e9:6.1f} GFLOP/s"
        f" ({best['needle'] * 1e3:8.3f} ms), np.matmul {flops / best['numpy'] / 1e9:6.1f}"
        f" GFLOP/s ({best['numpy'] * 1e3:8.3f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    budget = 0.1 if parser.parse_args().quick else 0.5
    print(f"float32, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    for m, n, p in SIZES:
        compare(m, n, p, "matmul", budget)
    for m, n, p in TILED_SIZES:
        compare(m, n, p, "matmul_tiled", budget)


if __name__ == "__main__":
    main()

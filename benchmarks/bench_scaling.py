"""Training-step speed of the MLP ResNet at growing sizes: needle vs PyTorch, with a roofline.

The course's MLP ResNet (784 → hidden, 3 residual blocks of width hidden/2, 10 classes,
BatchNorm, dropout 0.1, Adam with weight decay) at hidden ∈ {100, 512, 2048} × batch ∈
{100, 1000}, on random inputs (no dataset needed). For each size needle (default backend,
``backward(create_graph=False)``) and PyTorch eager run in alternation, each in its own
subprocess on ``--threads`` BLAS/OpenMP threads (default one), about a second of steps per run.
Printed per size: ms/step (each run's median step, then the median over the runs), the ratio
needle / PyTorch (the median of each round's ratio, the two runs of a round being back to
back) with every round's ratio sorted, and the peak RSS of each.

The roofline measures this machine's memory bandwidth (a large copy) and GEMM rate (a large
float32 product on the same thread count), counts the FLOPs of each step's matrix products
and the bytes the memory-bound parts must move at least once (the Adam update; elementwise
ops, BatchNorm, dropout and the loss), and prints how close needle's measured time for each
part comes to its limit (100% = at the limit).

    python benchmarks/bench_scaling.py --quick         # 2 rounds, 2048 x 1000 left out
    python benchmarks/bench_scaling.py                 # every size, 5 rounds
    python benchmarks/bench_scaling.py --threads 2
    python benchmarks/bench_scaling.py --sizes 512x1000,2048x100 --runs 5
    python benchmarks/bench_scaling.py --paired --sizes 512x1000 --runs 3   # one process each
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from _harness import alternate, has_torch, peak_rss_mb, pin_threads, run_worker, status_mb
from bench_mlp_resnet import (
    BLOCKS,
    CLASSES,
    _needle_step_fn,
    _torch_step_fn,
    gemm_floor_ms,
    layer_shapes,
)

SIZES = [(100, 100), (100, 1000), (512, 100), (512, 1000), (2048, 100), (2048, 1000)]
HEAVY = (2048, 1000)  # left out by --quick
FLOAT = 4  # bytes per float32
# Elementwise passes over one (batch, width) activation that cannot be avoided, counting one
# read or one write of the array as a pass; the fused kernels are designed to reach these.
NORM_PASSES = 3 + 4  # forward: read x (stats) + read x, write out; backward: g, xhat, dx, ...
DROPOUT_PASSES = 3 + 3  # forward: read x and mask, write; backward: read g and mask, write
ELEMENTWISE_PASSES = 2 + 3  # a ReLU or bias add: read, write; its gradient: two reads, write
ADAM_PASSES = 7  # read p, g, m, v; write p, m, v


# ----- counts ----------------------------------------------------------------------------------


def num_params(hidden: int) -> int:
    """Parameters of the network: Linear weights and biases plus two per BatchNorm feature."""
    linear = sum(i * o + o for i, o in layer_shapes(hidden))
    return linear + BLOCKS * 2 * (hidden // 2 + hidden)


def gemm_flops(hidden: int, batch: int) -> float:
    """FLOPs of the step's matrix products: forward, weight gradient, and input gradient
    for every layer but the first (whose input needs none)."""
    per_layer = [2 * batch * i * o for i, o in layer_shapes(hidden)]
    return 3 * sum(per_layer) - per_layer[0]


def memory_bytes(hidden: int, batch: int) -> dict[str, float]:
    """Bytes the memory-bound parts move at the least (one pass per read or write)."""
    inner = hidden // 2
    block_widths = [inner, hidden]  # each block normalises both, drops out the inner one
    activations = batch * (hidden + BLOCKS * (inner + hidden))  # bias adds / ReLUs
    return {
        "Adam": ADAM_PASSES * num_params(hidden) * FLOAT,
        "norm": NORM_PASSES * BLOCKS * batch * sum(block_widths) * FLOAT,
        "dropout": DROPOUT_PASSES * BLOCKS * batch * inner * FLOAT,
        "elementwise": ELEMENTWISE_PASSES * 2 * activations * FLOAT,  # bias add + ReLU/residual
        "loss": 4 * batch * CLASSES * FLOAT,  # read logits, write softmax; read, write dlogits
    }


# ----- the machine's limits --------------------------------------------------------------------


def _best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes per second of a large copy (each byte read once and written once)."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // FLOAT, dtype=np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)  # touch the pages first
    return 2 * source.nbytes / _best_seconds(lambda: np.copyto(target, source), repeats)


def gemm_rate(n: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of an n×n float32 product through NumPy's BLAS (this process's threads)."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in "ab")
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    return 2 * n**3 / _best_seconds(lambda: np.matmul(a, b, out=out), repeats)


# ----- workers ---------------------------------------------------------------------------------


def _random_batch(batch: int):
    """A batch of random images (batch, 784) and labels, the same in every worker."""
    import numpy as np

    rng = np.random.default_rng(0)
    return (
        rng.random((batch, 784), dtype=np.float32),
        rng.integers(0, CLASSES, batch).astype(np.uint8),
    )


def worker(framework: str, hidden: int, batch: int, steps: int, warmup: int) -> dict:
    """Time ``steps`` steps after ``warmup`` on random data; needle also reports its phases."""
    x, y = _random_batch(batch)
    phases: dict[str, float] = {}
    if framework == "needle":
        step = _needle_step_fn(hidden=hidden, phases=phases)
    else:
        step = _torch_step_fn(hidden)
    baseline = status_mb("VmRSS")  # model built: "over start" is what the steps add
    for _ in range(warmup):
        step(x, y)
    phases.clear()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - start)
    peak = peak_rss_mb()
    # The median step: this machine's speed drifts by 10-20% over seconds (other tenants of
    # the host), and the median ignores the steps a slow spell hits.
    result = {
        "ms_per_step": statistics.median(times) * 1e3,
        "mean_ms_per_step": statistics.fmean(times) * 1e3,
        "peak_rss_mb": peak,
        "peak_over_start_mb": peak - baseline,
    }
    result.update({f"{k}_ms": v / steps * 1e3 for k, v in phases.items()})
    return result


def paired_worker(hidden: int, batch: int, steps: int, warmup: int, rounds: int = 20) -> dict:
    """needle and PyTorch in this one process, taking turns every few steps (the order swapped
    each round), so that both see the same moment of the machine: the ratio of each round's
    two times, and their medians. Peak memory means nothing here (both live in the process)."""
    x, y = _random_batch(batch)
    steps_by = {"needle": _needle_step_fn(hidden=hidden), "torch": _torch_step_fn(hidden)}
    for step in steps_by.values():
        for _ in range(warmup):
            step(x, y)
    per_turn = max(1, steps // rounds)
    times: dict[str, list[float]] = {"needle": [], "torch": []}
    for r in range(rounds):
        for name in ("needle", "torch") if r % 2 == 0 else ("torch", "needle"):
            start = time.perf_counter()
            for _ in range(per_turn):
                steps_by[name](x, y)
            times[name].append((time.perf_counter() - start) / per_turn)
    ratios = [n / t for n, t in zip(times["needle"], times["torch"])]
    return {
        "needle_ms": statistics.median(times["needle"]) * 1e3,
        "torch_ms": statistics.median(times["torch"]) * 1e3,
        "ratio": statistics.median(ratios),
        "steps_per_turn": per_turn,
    }


def measure_paired(sizes, runs: int, threads: int) -> None:
    """--paired: ``runs`` paired workers per size; prints each run's median ratio."""
    print("| hidden × batch | needle ms/step | PyTorch ms/step | ratio | each run's ratio |")
    print("|---|---:|---:|---:|---|")
    for hidden, batch in sizes:
        steps, warmup = steps_for(hidden, batch)
        extra = [
            "--hidden",
            str(hidden),
            "--batch",
            str(batch),
            "--steps",
            str(2 * steps),
            "--warmup",
            str(warmup),
        ]
        results = [
            r
            for r in (run_worker(__file__, "paired", extra, threads=threads) for _ in range(runs))
            if r
        ]
        if not results:
            continue
        each = " ".join(f"{r['ratio']:.2f}" for r in sorted(results, key=lambda r: r["ratio"]))
        print(
            f"| {hidden} × {batch} | {_median(results, 'needle_ms'):.1f} | "
            f"{_median(results, 'torch_ms'):.1f} | {_median(results, 'ratio'):.2f} | {each} |",
            flush=True,
        )


def steps_for(hidden: int, batch: int) -> tuple[int, int]:
    """(steps, warm-up) so that one run does about 60 GFLOP of products (about a second;
    5 to 300 steps)."""
    steps = max(5, min(300, int(6e10 / gemm_flops(hidden, batch))))
    return steps, max(2, steps // 10)


# ----- the report ------------------------------------------------------------------------------


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else float("nan")


def measure(sizes, runs: int, threads: int) -> dict:
    """{(hidden, batch): {framework: [worker results]}}, the frameworks alternating."""
    results = {}
    for hidden, batch in sizes:
        steps, warmup = steps_for(hidden, batch)
        extra = [
            "--hidden",
            str(hidden),
            "--batch",
            str(batch),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
        ]
        results[hidden, batch] = alternate(
            runs, lambda f, extra=extra: run_worker(__file__, f, extra, threads=threads)
        )
        print_speed_row(hidden, batch, results[hidden, batch])
    return results


def print_speed_header() -> None:
    print(
        "| hidden × batch | needle ms/step | PyTorch ms/step | ratio | ratio per round | "
        "needle peak MB (+ over start) | PyTorch peak MB (+ over start) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")


def round_ratios(runs: dict) -> list[float]:
    """needle / PyTorch of each round (the two runs made one after the other)."""
    pairs = zip(runs.get("needle", []), runs.get("torch", []))
    return [n["ms_per_step"] / t["ms_per_step"] for n, t in pairs]


def print_speed_row(hidden: int, batch: int, runs: dict) -> None:
    needle, torch = runs.get("needle", []), runs.get("torch", [])
    ms_n, ms_t = _median(needle, "ms_per_step"), _median(torch, "ms_per_step")
    ratios = round_ratios(runs)
    ratio = f"{statistics.median(ratios):.2f}" if ratios else "—"
    spread = " ".join(f"{r:.2f}" for r in sorted(ratios)) or "—"

    def memory(rs):
        if not rs:
            return "—"
        return f"{max(r['peak_rss_mb'] for r in rs):.0f} (+{_median(rs, 'peak_over_start_mb'):.0f})"

    print(
        f"| {hidden} × {batch} | {ms_n:.1f} | {ms_t:.1f} | {ratio} | {spread} | "
        f"{memory(needle)} | {memory(torch)} |",
        flush=True,
    )


def print_roofline(results: dict, bandwidth: float, rate: float) -> None:
    """Per size: each part's least time at the machine's limits vs needle's measured time."""
    print(
        f"\nroofline: memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy), "
        f"GEMM {rate / 1e9:.1f} GFLOP/s (2048² sgemm)"
    )
    print("| hidden × batch | part | work | limit ms | measured ms | % of limit |")
    print("|---|---|---:|---:|---:|---:|")
    for (hidden, batch), runs in results.items():
        needle = runs.get("needle", [])
        if not needle:
            continue
        flops = gemm_flops(hidden, batch)
        floor = gemm_floor_ms(repeats=3, hidden=hidden, batch=batch)
        moved = memory_bytes(hidden, batch)
        adam = moved.pop("Adam")
        rest = sum(moved.values())
        fwd_bwd = _median(needle, "forward_ms") + _median(needle, "backward_ms")
        rows = [
            ("matmuls (NumPy alone)", f"{flops / 1e9:.2f} GFLOP", flops / rate * 1e3, floor),
            (
                "Adam update",
                f"{adam / 2**20:.0f} MB",
                adam / bandwidth * 1e3,
                _median(needle, "optimizer_ms"),
            ),
            (
                "fwd+bwd beyond matmuls",
                f"{rest / 2**20:.0f} MB",
                rest / bandwidth * 1e3,
                max(fwd_bwd - floor, 0.0),
            ),
        ]
        for part, work, limit, measured in rows:
            # the NumPy matmul time can exceed needle's fwd+bwd under load: no share then
            share = f"{100 * limit / measured:.0f}%" if measured > 0 else "—"
            print(
                f"| {hidden} × {batch} | {part} | {work} | {limit:.2f} | {measured:.2f} | {share} |"
            )
    print(
        "(fwd+bwd beyond matmuls = needle's forward+backward minus the NumPy matmul time;\n"
        " its limit counts one pass per read/write of each activation: norm, dropout,\n"
        " bias/ReLU/residual and the loss)"
    )


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        hidden, _, batch = item.partition("x")
        if not (hidden.isdigit() and batch.isdigit()):
            raise argparse.ArgumentTypeError(f"sizes are HIDDENxBATCH, got {item!r}")
        sizes.append((int(hidden), int(batch)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds, no 2048x1000")
    parser.add_argument("--runs", type=int, default=None, help="rounds per size (default 5)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=None,
        help="comma-separated HIDDENxBATCH, e.g. 512x100,2048x1000",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="needle and PyTorch in one process, taking turns every few steps "
        "(needs PyTorch; no memory or roofline)",
    )
    parser.add_argument("--worker", choices=["needle", "torch", "paired"], help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pin_threads(args.threads)  # before NumPy is imported
    if args.worker == "paired":
        print(json.dumps(paired_worker(args.hidden, args.batch, args.steps, args.warmup)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.hidden, args.batch, args.steps, args.warmup)))
        return
    sizes = args.sizes or [s for s in SIZES if not (args.quick and s == HEAVY)]
    runs = args.runs or (2 if args.quick else 5)
    mode = (
        f"{runs} processes per size, each 20 turns of both"
        if args.paired
        else f"{runs} alternating rounds per size"
    )
    print(
        f"MLP ResNet 784-hidden (3 blocks of hidden/2)-10, Adam; {args.threads} thread(s) "
        f"each; {os.cpu_count()} CPUs; {mode}" + ("" if has_torch() else " (PyTorch not installed)")
    )
    if args.paired:
        if not has_torch():
            parser.error("--paired needs PyTorch: pip install torch==2.13.0")
        measure_paired(sizes, runs, args.threads)
        return
    print_speed_header()
    results = measure(sizes, runs, args.threads)
    print_roofline(results, memory_bandwidth(), gemm_rate())


if __name__ == "__main__":
    main()

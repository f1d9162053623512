"""Plumbing for needle-vs-PyTorch benchmarks: one-thread workers in subprocesses, run in
alternation, and the report of medians, ratio and peak memory (used by bench_mlp_resnet
and bench_resnet9).

A benchmark script re-runs itself with ``--worker needle|torch ...``; the worker prints
one JSON object as its last line (``ms_per_step``, ``peak_rss_mb``, ...).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(threads: int = 1) -> None:
    """``threads`` BLAS/OpenMP threads in this process (call before NumPy is imported)."""
    os.environ.update({v: str(threads) for v in THREAD_VARS})


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``; ``/proc``, so Linux only).

    Not ``ru_maxrss``: that survives fork and exec, so a worker would report its parent's
    peak whenever the parent's is the higher (the orchestrator imports torch).
    """
    return status_mb("VmHWM")


def status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...) in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def has_torch() -> bool:
    """Whether PyTorch is importable here."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_worker(script: str, framework: str, extra: list[str], threads: int = 1) -> dict | None:
    """Run ``script --worker framework *extra`` on ``threads`` BLAS/OpenMP threads (default
    one); its last stdout line as JSON.

    A framework named ``…-np`` runs needle on the NumPy backend (``NEEDLE_BACKEND=np``).
    """
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    if framework.endswith("-np"):
        env["NEEDLE_BACKEND"] = "np"
    cmd = [sys.executable, script, "--worker", framework, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"{framework} worker failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(
    runs: int, run_one: Callable[[str], dict | None], needles: Sequence[str] = ("needle",)
) -> dict[str, list[dict]]:
    """``runs`` rounds of each needle variant, then torch (if installed), in turn.

    Alternating makes machine drift hit every framework alike.
    """
    frameworks = list(needles) + (["torch"] if has_torch() else [])
    results = {f: [] for f in frameworks}
    for _ in range(runs):
        for framework in frameworks:
            out = run_one(framework)
            if out:
                results[framework].append(out)
    return results


def report(results: dict[str, list[dict]], key: str, unit: str, scale: float = 1.0) -> None:
    """Print each framework's median ``key`` (its runs, peak RSS) and each needle / torch."""
    for framework, runs in results.items():
        if not runs:
            continue
        values = [r[key] * scale for r in runs]
        peak = max(r["peak_rss_mb"] for r in runs)
        print(
            f"{framework:>12}: {statistics.median(values):8.2f} {unit} (median of {len(values)}; "
            f"runs {', '.join(f'{v:.2f}' for v in values)})  peak RSS {peak:.0f} MB"
        )
    for needle in [f for f in results if f != "torch"]:
        if not (results.get("torch") and results[needle]):
            continue
        ratio = statistics.median(r[key] for r in results[needle]) / statistics.median(
            r[key] for r in results["torch"]
        )
        print(f"  ratio {needle} / torch = {ratio:.2f}  (<= 1.0: needle is at least as fast)")
    for needle in [f for f in results if f != "torch" and f + "-np" in results]:
        if results[needle] and results[needle + "-np"]:
            ratio = statistics.median(r[key] for r in results[needle]) / statistics.median(
                r[key] for r in results[needle + "-np"]
            )
            print(f"  ratio {needle} (nd) / {needle}-np = {ratio:.2f}  (<= 1.0: nd is as fast)")
    if not has_torch():
        print("  (PyTorch not installed: pip install torch==2.13.0 for the comparison)")

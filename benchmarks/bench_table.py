"""The performance table: every model needle ships against PyTorch, as users write the loop.

For each model — the MLP ResNet at three sizes, ResNet9, the RNN, LSTM and Transformer
language models — it times a training step (forward, loss, backward, optimizer step) of:

* needle with ``loss.backward()``, the loop as the course and PyTorch users write it;
* needle with ``loss.backward(create_graph=False)``, the explicit fast path;
* PyTorch eager, with the same weights and batches,

at one thread (``OMP_NUM_THREADS=1`` and the BLAS pinned) and at the default thread count
(nothing set: every core, for needle's kernels, the BLAS and PyTorch). Each measurement is
its own subprocess (peak memory per run), and the three run in turn, round after round, so
machine drift hits all alike; each cell is the median over rounds, each ratio the median of
the rounds' ratios. The table, with the machine's description, is printed as Markdown (and
written to ``--out``); docs/performance.md shows it.

    python benchmarks/bench_table.py                      # every model, 3 rounds
    python benchmarks/bench_table.py --models mlp-100x100 resnet9 --rounds 5
    python benchmarks/bench_table.py --out /tmp/table.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from _harness import THREAD_VARS, has_torch, peak_rss_mb

#: name: (label, steps, warmup)
MODELS = {
    "mlp-100x100": ("MLP ResNet 100 × 100", 200, 20),
    "mlp-512x100": ("MLP ResNet 512 × 100", 150, 15),
    "mlp-512x1000": ("MLP ResNet 512 × 1000", 30, 5),
    "resnet9": ("ResNet9, batch 128", 6, 2),
    "rnn": ("RNN language model", 10, 2),
    "lstm": ("LSTM language model", 10, 2),
    "transformer": ("Transformer language model", 6, 2),
}
#: worker names: (framework, create_graph for needle's backward)
VARIANTS = {"default": ("needle", None), "fast": ("needle", False), "torch": ("torch", None)}


def _step_and_batches(model: str, variant: str, weights: str):
    """The step function of ``variant`` for ``model`` and the batches to feed it."""
    framework, create_graph = VARIANTS[variant]
    if model.startswith("mlp-"):
        import bench_mlp_resnet as mlp
        from bench_scaling import _random_batch

        hidden, batch = (int(x) for x in model[4:].split("x"))
        step = (
            mlp._torch_step_fn(hidden)
            if framework == "torch"
            else mlp._needle_step_fn(create_graph=create_graph, hidden=hidden)
        )
        return step, [_random_batch(batch)]
    if model == "resnet9":
        import bench_resnet9 as conv

        step = (
            conv._torch_step_fn(weights, model)
            if framework == "torch"
            else conv._needle_step_fn(weights, model, create_graph=create_graph)
        )
        return step, conv._batches(model)
    import bench_lm as lm

    step = (
        lm._torch_step_fn(model)
        if framework == "torch"
        else lm._needle_step_fn(model, create_graph=create_graph)
    )
    return step, list(lm._token_chunks(model, 4))


def worker(model: str, variant: str, weights: str) -> dict:
    """ms per step (median step) and peak memory of one variant, in this process."""
    _, steps, warmup = MODELS[model]
    step, batches = _step_and_batches(model, variant, weights)
    for i in range(warmup):
        step(*batches[i % len(batches)])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(*batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    return {"ms": statistics.median(times) * 1e3, "peak_mb": peak_rss_mb()}


def _run(model: str, variant: str, threads: str, weights: str) -> dict | None:
    env = dict(os.environ)
    for name in THREAD_VARS + ("NEEDLE_NUM_THREADS",):
        env.pop(name, None)
    if threads == "1":
        env.update({name: "1" for name in THREAD_VARS})
    command = [sys.executable, __file__, "--worker", model, variant, "--weights", weights]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        print(f"{model} {variant} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(model: str, threads: str, rounds: int, weights: str) -> dict[str, list[dict]]:
    variants = [v for v in VARIANTS if v != "torch" or has_torch()]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            result = _run(model, variant, threads, weights)
            if result is not None:
                runs[variant].append(result)
    return runs


def _ratio(runs: dict[str, list[dict]], variant: str) -> str:
    pairs = list(zip(runs[variant], runs.get("torch", [])))
    if not pairs:
        return "—"
    return f"{statistics.median(a['ms'] / b['ms'] for a, b in pairs):.2f}"


def _cell(runs: list[dict], key: str, fmt: str) -> str:
    return format(statistics.median(r[key] for r in runs), fmt) if runs else "—"


def machine() -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    torch_version = "not installed"
    if has_torch():
        import torch

        torch_version = torch.__version__
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores available; Python "
        f"{platform.python_version()}, NumPy {np.__version__}, PyTorch {torch_version}"
    )


def table(models: list[str], rounds: int) -> str:
    import tempfile

    import bench_resnet9

    lines = [
        f"Machine: {machine()}. Command: `python benchmarks/bench_table.py "
        f"--rounds {rounds}`; ms per step (median over rounds), ratios needle / PyTorch "
        f"(median of the rounds' ratios; below 1.0 needle is faster), peak RSS in MB.",
        "",
        "| model | threads | `backward()` ms | fast path ms | PyTorch ms | "
        "`backward()` / PyTorch | fast path / PyTorch | peak MB (`backward()` / fast / "
        "PyTorch) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "resnet9.npz")
        if "resnet9" in models:
            bench_resnet9.save_weights(weights, "resnet9")
        for model in models:
            for threads in ("1", "default"):
                runs = measure(model, threads, rounds, weights)
                peaks = " / ".join(_cell(runs.get(v, []), "peak_mb", ".0f") for v in VARIANTS)
                line = (
                    f"| {MODELS[model][0]} | {threads} | {_cell(runs['default'], 'ms', '.1f')}"
                    f" | {_cell(runs['fast'], 'ms', '.1f')} | "
                    f"{_cell(runs.get('torch', []), 'ms', '.1f')} | "
                    f"{_ratio(runs, 'default')} | {_ratio(runs, 'fast')} | {peaks} |"
                )
                print(line, flush=True)
                lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.weights)))
        return
    text = table(args.models, args.rounds)
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)


if __name__ == "__main__":
    main()

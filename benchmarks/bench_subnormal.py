"""Training steps from a checkpoint full of subnormal floats, against fresh weights.

The checkpoint (``shared/data/mlp512-epoch20-subnormal.npz``: MLP ResNet hidden 512 after
20 epochs of the README's best recipe, model and Adam state) holds weights and Adam
moments below float32's normal range (1.18e-38). On CPUs that take a microcode assist per
subnormal result (Intel, notably) a step from it is several times slower than one from
fresh weights, unless subnormals are flushed to zero. Each measurement runs in its own
process at one thread; the settings alternate so machine drift hits all of them.

    python benchmarks/bench_subnormal.py
    python benchmarks/bench_subnormal.py --checkpoint PATH --steps 50 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_CHECKPOINT = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mlp512-epoch20-subnormal.npz"
)
BATCH = 100


def _subnormal_fraction(arrays) -> float:
    import numpy as np

    tiny = np.finfo(np.float32).tiny
    total = sum(a.size for a in arrays)
    return sum(int(((a != 0) & (np.abs(a) < tiny)).sum()) for a in arrays) / total


def worker(checkpoint: str, start: str, flush: bool, steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps of the checkpoint's model from ``start`` weights."""
    import numpy as np

    import needle as ndl
    from needle import tasks, training
    from needle.loop import run_batches

    ndl.set_flush_denormal(flush)
    state = training.load_checkpoint(checkpoint)
    config = training.checkpoint_config(checkpoint, state)
    np.random.seed(config.run.seed)
    task = tasks.create(config)
    model = task.build_model()
    opt = training.build_optimizer(model, config)
    if start == "checkpoint":
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    X, Y = ndl.Tensor(x, requires_grad=False), ndl.Tensor(y, requires_grad=False)

    def step():  # one step of needle's batch loop
        run_batches([(X, Y)], model, task.objective, opt)

    fraction = _subnormal_fraction([p.numpy() for p in model.parameters()])
    for _ in range(warmup):
        step()
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    ms = (time.perf_counter() - begin) / steps * 1e3
    return {"ms_per_step": ms, "subnormal_weights": fraction}


def _run(setting: tuple[str, bool], args) -> dict | None:
    start, flush = setting
    env = dict(os.environ, **{v: "1" for v in THREAD_VARS})
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        start,
        "--flush",
        str(int(flush)),
        "--checkpoint",
        args.checkpoint,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"worker {setting} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--worker", choices=["fresh", "checkpoint"], help=argparse.SUPPRESS)
    parser.add_argument("--flush", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(
                worker(args.checkpoint, args.worker, bool(args.flush), args.steps, args.warmup)
            )
        )
        return
    if not Path(args.checkpoint).is_file():
        sys.exit(
            f"bench_subnormal: no checkpoint at {args.checkpoint}; pass --checkpoint PATH "
            f"(it ships in the project's shared/data folder)"
        )
    import needle as ndl
    from needle.backends import BACKEND

    print(
        f"backend {BACKEND}; CPU: {_cpu_name()}; flush supported here: "
        f"{ndl.set_flush_denormal(False)}"
    )
    settings = [("fresh", True), ("checkpoint", True), ("fresh", False), ("checkpoint", False)]
    results: dict = {s: [] for s in settings}
    for _ in range(args.runs):
        for setting in settings:
            out = _run(setting, args)
            if out:
                results[setting].append(out)
    median = {
        s: statistics.median(r["ms_per_step"] for r in runs) for s, runs in results.items() if runs
    }
    for (start, flush), ms in median.items():
        frac = results[(start, flush)][0]["subnormal_weights"]
        print(
            f"{start:>10} weights, flush {'on ' if flush else 'off'}: {ms:8.2f} ms/step "
            f"(subnormal weights {frac:.1%})"
        )
    for flush in (True, False):
        if ("fresh", flush) in median and ("checkpoint", flush) in median:
            ratio = median[("checkpoint", flush)] / median[("fresh", flush)]
            print(
                f"  flush {'on ' if flush else 'off'}: checkpoint / fresh = {ratio:.2f}"
                + ("  (goal <= 1.1)" if flush else "")
            )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()

"""Training-step speed of the default MLP ResNet: needle vs PyTorch eager, one thread each.

Each measurement runs in its own subprocess (so peak memory is per framework), and
the frameworks alternate (needle, torch, needle, torch, ...) so machine drift hits
both. needle runs three times: on the default NDArray backend with
backward(create_graph=False), the fast path its training loops use ("needle"); the same
on the NumPy backend (NEEDLE_BACKEND=np, "needle-np"); and with plain backward(), the
default as the course writes it ("needle-default": differentiable gradients, their graph
recorded only if one is differentiated).
Prints ms per step (median over runs), the ratios, peak RSS, and the "GEMM
floor": the step's matrix products alone, timed in NumPy.

    python benchmarks/bench_mlp_resnet.py                # steps: 300 x 5 runs each
    python benchmarks/bench_mlp_resnet.py --epoch        # also a full epoch, data loading included
    python benchmarks/bench_mlp_resnet.py --profile      # cProfile of needle's step (top 25)
    python benchmarks/bench_mlp_resnet.py --breakdown    # needle's step: data/fwd/bwd/optimizer
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _harness import alternate, peak_rss_mb, pin_threads, report, run_worker

BATCH, HIDDEN, BLOCKS, CLASSES = 100, 100, 3, 10


def _load_fashion_mnist():
    import needle as ndl

    train = ndl.data.FashionMNIST(train=True)
    return train.images, train.labels


def _batches(images, labels, steps, seed=0):
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(labels))
    per_epoch = len(labels) // BATCH
    for step in range(steps):
        idx = order[(step % per_epoch) * BATCH : (step % per_epoch + 1) * BATCH]
        yield images[idx], labels[idx]


# ----- workers: each runs in its own process ------------------------------------------------


def _needle_step_fn(
    create_graph: bool | None = False, hidden: int = HIDDEN, phases: dict | None = None
):
    """needle's step at width ``hidden``, calling ``loss.backward(create_graph=...)``: None
    is plain ``backward()`` (the default), False the explicit fast path. With a ``phases``
    dict, the seconds spent in forward, backward and optimizer are added to its keys of
    those names."""
    import numpy as np

    import needle as ndl
    from needle.apps.mlp_resnet import MLPResNet

    np.random.seed(4)
    model = MLPResNet(784, hidden, num_blocks=BLOCKS, num_classes=CLASSES)
    opt = ndl.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = ndl.nn.SoftmaxLoss()
    model.train()
    totals = phases if phases is not None else {}

    def step(x, y):
        t0 = time.perf_counter()
        loss = loss_fn(
            model(ndl.Tensor(x, requires_grad=False)), ndl.Tensor(y, requires_grad=False)
        )
        t1 = time.perf_counter()
        opt.reset_grad()
        loss.backward(create_graph=create_graph)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for key, seconds in (("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
            totals[key] = totals.get(key, 0.0) + seconds

    return step


def _torch_step_fn(hidden: int = HIDDEN):
    """PyTorch's step for the same network at width ``hidden``, on the BLAS thread count."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(4)

    def block(dim, hidden):
        inner = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden),
            torch.nn.BatchNorm1d(hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(hidden, dim),
            torch.nn.BatchNorm1d(dim),
        )
        return inner

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Linear(784, hidden)
            self.blocks = torch.nn.ModuleList(block(hidden, hidden // 2) for _ in range(BLOCKS))
            self.last = torch.nn.Linear(hidden, CLASSES)

        def forward(self, x):
            x = torch.relu(self.first(x))
            for b in self.blocks:
                x = torch.relu(b(x) + x)
            return self.last(x)

    model = Net().train()
    opt = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y.astype("int64")))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _needle_epoch(images, labels):
    """One training epoch through needle's batch loop (``needle train``'s, metrics included)."""
    import numpy as np

    import needle as ndl
    from needle.apps.mlp_resnet import MLPResNet
    from needle.loop import run_batches
    from needle.tasks.image import Classification

    np.random.seed(4)
    model = MLPResNet(784, HIDDEN)
    opt = ndl.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loader = ndl.data.DataLoader(ndl.data.NDArrayDataset(images, labels), BATCH, shuffle=True)
    start = time.perf_counter()
    run_batches(loader, model, Classification(), opt)
    return time.perf_counter() - start


def _torch_epoch(images, labels):
    import torch

    step = _torch_step_fn()
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))
    start = time.perf_counter()
    order = torch.randperm(len(labels))
    for i in range(0, len(labels), BATCH):
        idx = order[i : i + BATCH]
        step(x_all[idx].numpy(), y_all[idx].numpy())
    return time.perf_counter() - start


def worker(framework: str, steps: int, warmup: int, epoch: bool) -> dict:
    images, labels = _load_fashion_mnist()
    result = {"framework": framework}
    if epoch:
        run = _torch_epoch if framework == "torch" else _needle_epoch
        result["epoch_s"] = run(images, labels)
    else:
        steps_by_framework = {
            "needle": _needle_step_fn,
            "needle-default": lambda: _needle_step_fn(create_graph=None),
            "needle-np": _needle_step_fn,
            "torch": _torch_step_fn,
        }
        step = steps_by_framework[framework]()
        for x, y in _batches(images, labels, warmup, seed=1):
            step(x, y)
        start = time.perf_counter()
        for x, y in _batches(images, labels, steps):
            step(x, y)
        result["ms_per_step"] = (time.perf_counter() - start) / steps * 1e3
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# ----- the orchestrator ------------------------------------------------------------------------


def layer_shapes(hidden: int = HIDDEN) -> list[tuple[int, int]]:
    """The (in, out) shapes of the network's Linear layers at width ``hidden``, in order."""
    return (
        [(784, hidden)]
        + [(hidden, hidden // 2), (hidden // 2, hidden)] * BLOCKS
        + [(hidden, CLASSES)]
    )


def gemm_floor_ms(repeats: int = 200, hidden: int = HIDDEN, batch: int = BATCH) -> float:
    """The step's matrix products (forward and backward) alone, in NumPy float32."""
    import numpy as np

    rng = np.random.default_rng(0)
    mats = [
        (
            rng.standard_normal((batch, i), dtype=np.float32),
            rng.standard_normal((i, o), dtype=np.float32),
            rng.standard_normal((batch, o), dtype=np.float32),
        )
        for i, o in layer_shapes(hidden)
    ]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for layer, (x, w, g) in enumerate(mats):
            x @ w  # forward
            x.T @ g  # weight gradient
            if layer:
                g @ w.T  # input gradient (not needed for the data)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _compare(args, key: str, unit: str, scale: float = 1.0) -> None:
    # "needle-default" is plain backward(), as users write it; "needle" is the
    # create_graph=False fast path that needle's own training loops use.
    needles = ["needle", "needle-np"] + ([] if args.epoch_mode else ["needle-default"])
    extra = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    extra += ["--epoch"] if args.epoch_mode else []
    results = alternate(args.runs, lambda f: run_worker(__file__, f, extra), needles)
    report(results, key, unit, scale)


def profile_needle(steps: int) -> None:
    import cProfile
    import pstats

    images, labels = _load_fashion_mnist()
    step = _needle_step_fn()
    for x, y in _batches(images, labels, 20, seed=1):
        step(x, y)
    profiler = cProfile.Profile()
    profiler.enable()
    for x, y in _batches(images, labels, steps):
        step(x, y)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def breakdown_needle(steps: int, warmup: int) -> None:
    """Time each phase of needle's step: batch to tensors, forward, backward, optimizer."""
    import numpy as np

    import needle as ndl
    from needle.apps.mlp_resnet import MLPResNet

    images, labels = _load_fashion_mnist()
    np.random.seed(4)
    model = MLPResNet(784, HIDDEN, num_blocks=BLOCKS, num_classes=CLASSES).train()
    opt = ndl.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = ndl.nn.SoftmaxLoss()
    totals = dict.fromkeys(["data", "forward", "backward", "optimizer"], 0.0)
    for step, (x, y) in enumerate(_batches(images, labels, warmup + steps)):
        t0 = time.perf_counter()
        x, y = ndl.Tensor(x, requires_grad=False), ndl.Tensor(y, requires_grad=False)
        t1 = time.perf_counter()
        loss = loss_fn(model(x), y)
        t2 = time.perf_counter()
        opt.reset_grad()
        loss.backward(create_graph=False)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= warmup:
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt
    parts = "  ".join(f"{k} {v / steps * 1e3:.3f}" for k, v in totals.items())
    print(f"needle ms/step: {parts}  total {sum(totals.values()) / steps * 1e3:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--epoch", dest="epoch_mode", action="store_true", help="time full epochs too"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument(
        "--worker",
        choices=["needle", "needle-np", "needle-default", "torch"],
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()
    # Pin this process too (the GEMM floor is timed here); NumPy is imported lazily, so
    # the variables take effect.
    pin_threads()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.epoch_mode)))
        return
    if args.profile:
        profile_needle(args.steps)
        return
    if args.breakdown:
        breakdown_needle(args.steps, args.warmup)
        return
    print(
        f"MLP ResNet 784-{HIDDEN}x{BLOCKS} blocks-{CLASSES}, batch {BATCH}, Adam; one thread each; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"GEMM floor (matmuls alone, NumPy): {gemm_floor_ms():.3f} ms/step")
    epoch_mode = args.epoch_mode
    args.epoch_mode = False
    print(f"training step ({args.steps} steps after {args.warmup} warm-up, {args.runs} runs each):")
    _compare(args, "ms_per_step", "ms/step")
    if epoch_mode:
        args.epoch_mode = True
        print("full epoch of 60k images (loader included):")
        _compare(args, "epoch_s", "s/epoch")


if __name__ == "__main__":
    main()

"""Training-step speed of ResNet9 (batch 128, 3×32×32, Adam): needle vs PyTorch, one thread.

needle runs on both backends ("needle" is the default ``nd``, "needle-np" NumPy).
``--model smallcnn`` times ``SmallCNN(1, (28, 28), width=32)`` (``needle train --model cnn``)
on 1×28×28 batches instead.

Both frameworks start from the same weights (needle's ResNet9 drawn with seed 4, copied
into an equivalent torch model) and train on the same synthetic batches (CIFAR-10's
shape; the data's values do not change the cost). Each measurement runs in its own
subprocess, so peak RSS is per framework, and the frameworks alternate (needle, torch,
needle, ...) so machine drift hits both. Prints ms per step (median of runs), the
ratio, peak RSS, and the im2col + GEMM floor: the step's patch copies and matrix
products alone, timed in NumPy.

    python benchmarks/bench_resnet9.py                 # 20 steps x 3 runs each
    python benchmarks/bench_resnet9.py --steps 50 --runs 5
    python benchmarks/bench_resnet9.py --profile       # cProfile of needle's step (top 25)
    python benchmarks/bench_resnet9.py --model smallcnn --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from _harness import alternate, peak_rss_mb, pin_threads, report, run_worker

BATCH, N_BATCHES = 128, 4
# (in, out, kernel, stride, input size) of ResNet9's eight convolutions on 32×32 images.
CONVS = [
    (3, 16, 7, 4, 32),
    (16, 32, 3, 2, 8),
    (32, 32, 3, 1, 4),
    (32, 32, 3, 1, 4),
    (32, 64, 3, 2, 4),
    (64, 128, 3, 2, 2),
    (128, 128, 3, 1, 1),
    (128, 128, 3, 1, 1),
]
LINEARS = [(128, 128), (128, 10)]


#: Input shape (C, H, W) of each model.
IMAGES = {"resnet9": (3, 32, 32), "smallcnn": (1, 28, 28)}


def _batches(model: str):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (BATCH,) + IMAGES[model]
    return [
        (rng.random(shape, dtype=np.float32), rng.integers(0, 10, BATCH)) for _ in range(N_BATCHES)
    ]


def _needle_model(model: str):
    import numpy as np

    from needle.apps.models import ResNet9, SmallCNN

    np.random.seed(4)
    return ResNet9() if model == "resnet9" else SmallCNN(1, (28, 28), width=32)


def save_weights(path: str, model: str) -> None:
    """needle's seed-4 model parameters, in creation order, to ``path`` (.npz)."""
    import numpy as np

    params = _needle_model(model).parameters()
    np.savez(path, *[p.numpy() for p in params])


# ----- workers: each runs in its own process ------------------------------------------------


def _needle_step_fn(weights: str, model_name: str, create_graph: bool | None = False):
    """needle's step, calling ``loss.backward(create_graph=...)`` (None: plain backward())."""
    import numpy as np

    import needle as ndl

    model = _needle_model(model_name)
    saved = np.load(weights)
    for i, p in enumerate(model.parameters()):
        # The NumPy backend's float32 draws may differ in the last bit (docs/backends.md):
        # every variant starts from the orchestrator's copy, like torch.
        p.data = ndl.Tensor(saved[f"arr_{i}"], device=p.device, dtype=p.dtype, requires_grad=False)
    opt = ndl.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = ndl.nn.SoftmaxLoss()
    model.train()

    def step(x, y):
        out = model(ndl.Tensor(x, requires_grad=False))
        loss = loss_fn(out, ndl.Tensor(y, requires_grad=False))
        opt.reset_grad()
        loss.backward(create_graph=create_graph)
        opt.step()

    return step


def _torch_model(weights: str, model_name: str):
    """The model in torch with needle's weights (conv weights permuted KKIO → OIKK)."""
    import numpy as np
    import torch

    tnn = torch.nn

    class Residual(tnn.Module):
        def __init__(self, *layers):
            super().__init__()
            self.fn = tnn.Sequential(*layers)

        def forward(self, x):
            return self.fn(x) + x

    def convbn(a, b, k, s):
        return tnn.Sequential(
            tnn.Conv2d(a, b, k, stride=s, padding=k // 2), tnn.BatchNorm2d(b), tnn.ReLU()
        )

    if model_name == "resnet9":
        model = tnn.Sequential(
            convbn(3, 16, 7, 4),
            convbn(16, 32, 3, 2),
            Residual(convbn(32, 32, 3, 1), convbn(32, 32, 3, 1)),
            convbn(32, 64, 3, 2),
            convbn(64, 128, 3, 2),
            Residual(convbn(128, 128, 3, 1), convbn(128, 128, 3, 1)),
            tnn.Flatten(),
            tnn.Linear(128, 128),
            tnn.ReLU(),
            tnn.Linear(128, 10),
        )
    else:  # SmallCNN(1, (28, 28), width=32): 28 → 28 → 14 → 14 → 7 → 4
        model = tnn.Sequential(
            convbn(1, 32, 3, 1),
            convbn(32, 64, 3, 2),
            Residual(convbn(64, 64, 3, 1)),
            convbn(64, 128, 3, 2),
            convbn(128, 128, 3, 2),
            tnn.Flatten(),
            tnn.Linear(128 * 4 * 4, 10),
        )
    saved = np.load(weights)
    arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    with torch.no_grad():
        for p, a in zip(model.parameters(), arrays):
            if a.ndim == 4:
                a = a.transpose(3, 2, 0, 1)
            elif p.ndim == 2:
                a = a.T  # needle's Linear weight is (in, out)
            p.copy_(torch.tensor(np.ascontiguousarray(a)).reshape(p.shape))
    return model


def _torch_step_fn(weights: str, model_name: str):
    import torch

    torch.set_num_threads(1)
    model = _torch_model(weights, model_name).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def worker(framework: str, steps: int, warmup: int, weights: str, model: str) -> dict:
    batches = _batches(model)
    step = (_torch_step_fn if framework == "torch" else _needle_step_fn)(weights, model)
    for i in range(warmup):
        step(*batches[i % N_BATCHES])
    start = time.perf_counter()
    for i in range(steps):
        step(*batches[i % N_BATCHES])
    return {
        "framework": framework,
        "ms_per_step": (time.perf_counter() - start) / steps * 1e3,
        "peak_rss_mb": peak_rss_mb(),
    }


# ----- the orchestrator ---------------------------------------------------------------------


def floor_ms(repeats: int = 10) -> float:
    """The step's im2col copies and GEMMs alone (NumPy float32): what no framework can skip.

    Per convolution: the patch matrix (one strided copy), the forward GEMM, the weight
    gradient GEMM and, except for the first layer (whose input is data), the input
    gradient GEMM. Per Linear: the same three products.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    rng = np.random.default_rng(0)
    layers = []
    for c, o, k, s, size in CONVS:
        x = np.pad(
            rng.random((BATCH, size, size, c), dtype=np.float32),
            ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)),
        )
        out = (size + 2 * (k // 2) - k) // s + 1
        w = rng.random((k * k * c, o), dtype=np.float32)
        g = rng.random((BATCH * out * out, o), dtype=np.float32)
        layers.append((x, k, s, out, w, g))
    dense = [
        (
            rng.random((BATCH, i), dtype=np.float32),
            rng.random((i, o), dtype=np.float32),
            rng.random((BATCH, o), dtype=np.float32),
        )
        for i, o in LINEARS
    ]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for index, (x, k, s, out, w, g) in enumerate(layers):
            view = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s][:, :out, :out]
            cols = np.ascontiguousarray(view.transpose(0, 1, 2, 4, 5, 3)).reshape(g.shape[0], -1)
            cols @ w
            cols.T @ g
            if index:
                g @ w.T
        for x, w, g in dense:
            x @ w
            x.T @ g
            g @ w.T
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def compare(args) -> None:
    extra = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--model", args.model]
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, f"{args.model}_seed4.npz")
        save_weights(weights, args.model)
        extra += ["--weights", weights]
        results = alternate(
            args.runs, lambda f: run_worker(__file__, f, extra), ("needle", "needle-np")
        )
    report(results, "ms_per_step", "ms/step")
    if args.model == "resnet9":
        print(f"  im2col + GEMM floor: {floor_ms():.1f} ms/step (NumPy, one thread)")


def profile_needle(steps: int, model: str) -> None:
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "w.npz")
        save_weights(weights, model)
        step = _needle_step_fn(weights, model)
    batches = _batches(model)
    step(*batches[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(steps):
        step(*batches[i % N_BATCHES])
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--model", choices=sorted(IMAGES), default="resnet9")
    parser.add_argument(
        "--worker", choices=["needle", "needle-np", "torch"], help=argparse.SUPPRESS
    )
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    pin_threads()  # the floor is timed here; NumPy is imported lazily, so this takes effect
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.weights, args.model)))
        return
    if args.profile:
        profile_needle(args.steps, args.model)
        return
    shape = "x".join(map(str, IMAGES[args.model]))
    print(
        f"{args.model}, batch {BATCH}x{shape}, Adam; one thread each; {os.cpu_count()} CPUs "
        f"(shared: figures under load are noisy)"
    )
    compare(args)


if __name__ == "__main__":
    main()

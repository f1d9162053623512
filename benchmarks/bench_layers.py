"""One row per layer: a training-style step of each needle layer against its PyTorch twin.

For every layer below it times a step — forward, a scalar loss ``(out * g).sum()`` (``g`` a
fixed random array of the output's shape, so that normalisations get a non-zero gradient),
``loss.backward()``, which fills the parameters' gradients and the input's — in needle and
in PyTorch eager, with the same weights (needle's parameters copied into the torch layer)
and the same input. Before timing, each layer's output and input gradient are checked to
agree between the two to float32 tolerance (it raises otherwise: the rows compare one
computation).

Both frameworks live in this one process and take turns — needle's block of steps, then
PyTorch's, round after round — so machine drift hits both alike. Each block's time is its
median step; a cell is the median over rounds, the ratio (needle / PyTorch, below 1.0
needle is faster) the median of the rounds' ratios. One thread by default (the BLAS and
OpenMP pinned before NumPy and torch are imported, ``torch.set_num_threads``,
``needle.set_num_threads``). Peak memory is not reported (both share the process).

    python benchmarks/bench_layers.py                       # every layer, 5 rounds
    python benchmarks/bench_layers.py --quick               # 2 short rounds (under a minute)
    python benchmarks/bench_layers.py --layers conv3x3 lstm --rounds 9 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _harness import pin_threads

# Shapes: images (N, C, H, W) are NCHW in both frameworks (needle's public layout; its
# convolutions move channels last inside); sequences (T, B, H) are time-major in both
# (needle's only layout, PyTorch's default); attention inputs are (B, T, F).
IMAGE = (32, 16, 16, 16)
POOL = (32, 16, 32, 32)
SEQ = (20, 16, 64)  # T, B, H
TOKENS = (32, 64, 128)  # B, T, D for LayerNorm and RMSNorm


@dataclass
class Case:
    """A layer in both frameworks: ``needle(x)`` and ``torch(x)`` map the same input (the
    needle and torch tensors of ``x``) to the same output; ``torch_params`` get zeroed."""

    shapes: str
    x: Any  # the input, a float32 NumPy array (PyTorch's layout)
    needle: Callable
    torch: Callable
    torch_params: list
    forward_nhwc: Callable | None = None  # needle's layer on channels-last arrays, if any
    nhwc: bool = False  # time needle's forward_nhwc: its input, output and gradients NHWC

    def channels_last(self) -> Case:
        """needle's layer called channels-last (``forward_nhwc``, the layout its models chain
        between layers: no NCHW ↔ NHWC copies around it); PyTorch stays NCHW."""
        if self.forward_nhwc is None:
            return self
        self.needle, self.nhwc = self.forward_nhwc, True
        self.shapes += "; needle NHWC (forward_nhwc), PyTorch NCHW"
        return self


def _copy(torch, dst, array) -> None:
    import numpy as np

    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.ascontiguousarray(array)))


def _conv_case(in_ch, out_ch, k, x_shape, transposed=False, **kw) -> Case:
    """Conv2d or ConvTranspose2d; needle's weight (K_h, K_w, ·, ·) is torch's permuted by
    (2, 3, 1, 0), so torch's is needle's transposed by (3, 2, 0, 1)."""
    import torch

    import needle as ndl

    ours = (ndl.nn.ConvTranspose2d if transposed else ndl.nn.Conv2d)(in_ch, out_ch, k, **kw)
    theirs = (torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d)(in_ch, out_ch, k, **kw)
    _copy(torch, theirs.weight, ours.weight.numpy().transpose(3, 2, 0, 1))
    _copy(torch, theirs.bias, ours.bias.numpy())
    name = "ConvTranspose2d" if transposed else "Conv2d"
    options = ", ".join(f"{key}={value}" for key, value in kw.items())
    out_shape = tuple(theirs(torch.zeros(x_shape)).shape)
    return Case(
        f"{name}({in_ch}, {out_ch}, {k}, {options}): {_shape(x_shape)} → {_shape(out_shape)}",
        _input(x_shape),
        ours,
        theirs,
        list(theirs.parameters()),
        ours.forward_nhwc,
    )


def _plain_case(ours, theirs, x_shape, label) -> Case:
    """A layer whose parameters (if any) are ``weight`` and ``bias`` of the same shapes."""
    import torch

    for name in ("weight", "bias"):
        mine = getattr(ours, name, None)
        if mine is not None:
            _copy(torch, getattr(theirs, name), mine.numpy())
    return Case(
        f"{label}: {_shape(x_shape)}",
        _input(x_shape),
        ours,
        theirs,
        list(theirs.parameters()),
        getattr(ours, "forward_nhwc", None),
    )


def _recurrent_case(kind: str) -> Case:
    """GRU or LSTM, one layer; needle's W_ih, W_hh are (in, out), torch's transposed."""
    import torch

    import needle as ndl

    T, B, H = SEQ
    ours, theirs = getattr(ndl.nn, kind)(H, H), getattr(torch.nn, kind)(H, H)
    cell = (ours.gru_cells if kind == "GRU" else ours.lstm_cells)[0]
    _copy(torch, theirs.weight_ih_l0, cell.W_ih.numpy().T)
    _copy(torch, theirs.weight_hh_l0, cell.W_hh.numpy().T)
    _copy(torch, theirs.bias_ih_l0, cell.bias_ih.numpy())
    _copy(torch, theirs.bias_hh_l0, cell.bias_hh.numpy())
    return Case(
        f"{kind}({H}, {H}): (T={T}, B={B}, {H}) time-major, both",
        _input(SEQ),
        lambda x: ours(x)[0],
        lambda x: theirs(x)[0],
        list(theirs.parameters()),
    )


def _attention_case() -> Case:
    """needle's AttentionLayer (pre-norm, bias-free projections; causal=False) with a
    key-padding mask, and PyTorch's LayerNorm ×3 + MultiheadAttention(bias=False)."""
    import numpy as np
    import torch

    import needle as ndl

    T, B, F = SEQ
    heads = 4
    ours = ndl.nn.AttentionLayer(F, heads, F // heads, causal=False)

    class PreNormAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(F) for _ in range(3))
            self.mha = torch.nn.MultiheadAttention(F, heads, bias=False, batch_first=True)

        def forward(self, x, mask):
            q, k, v = (norm(x) for norm in self.norms)
            return self.mha(q, k, v, key_padding_mask=mask, need_weights=False)[0]

    theirs = PreNormAttention()
    projections = [ours.q_projection, ours.k_projection, ours.v_projection]
    _copy(
        torch, theirs.mha.in_proj_weight, np.concatenate([p.weight.numpy().T for p in projections])
    )
    _copy(torch, theirs.mha.out_proj.weight, ours.out_projection.weight.numpy().T)
    for norm, mine in zip(theirs.norms, (ours.prenorm_q, ours.prenorm_k, ours.prenorm_v)):
        _copy(torch, norm.weight, mine.weight.numpy())
        _copy(torch, norm.bias, mine.bias.numpy())
    lengths = np.random.default_rng(1).integers(T // 2, T + 1, B)
    padded = np.arange(T)[None, :] >= lengths[:, None]  # (B, S): True at padded keys
    padded_t = torch.from_numpy(padded)
    return Case(
        f"AttentionLayer({F}, {heads} heads × {F // heads}, causal=False) with "
        f"key_padding_mask (B, S): (B={B}, T={T}, {F}); torch: LayerNorm ×3 + "
        f"MultiheadAttention(bias=False, batch_first=True)",
        _input((B, T, F)),
        lambda x: ours(x, key_padding_mask=padded),
        lambda x: theirs(x, padded_t),
        list(theirs.parameters()),
    )


def _cases() -> dict[str, Callable[[], Case]]:
    """name: a builder of its Case (called after the threads are pinned)."""
    import torch

    import needle as ndl

    N, C, H, W = IMAGE
    nn, tnn = ndl.nn, torch.nn
    return {
        "conv-stem": lambda: _conv_case(3, 16, 3, (N, 3, 32, 32), padding=1),
        "conv3x3": lambda: _conv_case(C, 2 * C, 3, IMAGE, padding=1),
        "conv-stride2": lambda: _conv_case(C, 2 * C, 3, IMAGE, stride=2, padding=1),
        "conv-depthwise": lambda: _conv_case(
            2 * C, 2 * C, 3, (N, 2 * C, H, W), padding=1, groups=2 * C
        ),
        "conv-dilated": lambda: _conv_case(C, C, 3, IMAGE, padding=2, dilation=2),
        "conv-transpose": lambda: _conv_case(
            C, C, 3, IMAGE, transposed=True, stride=2, padding=1, output_padding=1
        ),
        "upsample": lambda: _plain_case(
            nn.Upsample(2), tnn.Upsample(scale_factor=2), IMAGE, "Upsample(2), nearest"
        ),
        "maxpool": lambda: _plain_case(nn.MaxPool2d(2), tnn.MaxPool2d(2), POOL, "MaxPool2d(2)"),
        "avgpool": lambda: _plain_case(nn.AvgPool2d(2), tnn.AvgPool2d(2), POOL, "AvgPool2d(2)"),
        "adaptive-avgpool": lambda: _plain_case(
            nn.AdaptiveAvgPool2d(1), tnn.AdaptiveAvgPool2d(1), (N, 64, 8, 8), "AdaptiveAvgPool2d(1)"
        ),
        "batchnorm2d": lambda: _plain_case(
            nn.BatchNorm2d(C), tnn.BatchNorm2d(C), IMAGE, f"BatchNorm2d({C}), training"
        ),
        "groupnorm": lambda: _plain_case(
            nn.GroupNorm(4, C), tnn.GroupNorm(4, C), IMAGE, f"GroupNorm(4, {C})"
        ),
        "layernorm": lambda: _plain_case(
            nn.LayerNorm(TOKENS[2]),
            tnn.LayerNorm(TOKENS[2]),
            TOKENS,
            f"LayerNorm({TOKENS[2]}), last axis",
        ),
        "rmsnorm": lambda: _plain_case(
            nn.RMSNorm(TOKENS[2]),
            tnn.RMSNorm(TOKENS[2]),
            TOKENS,
            f"RMSNorm({TOKENS[2]}), last axis",
        ),
        "gru": lambda: _recurrent_case("GRU"),
        "lstm": lambda: _recurrent_case("LSTM"),
        "attention": _attention_case,
    }


LAYERS = [
    "conv-stem",
    "conv3x3",
    "conv-stride2",
    "conv-depthwise",
    "conv-dilated",
    "conv-transpose",
    "upsample",
    "maxpool",
    "avgpool",
    "adaptive-avgpool",
    "batchnorm2d",
    "groupnorm",
    "layernorm",
    "rmsnorm",
    "gru",
    "lstm",
    "attention",
]


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _input(shape):
    import numpy as np

    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


# ----- the two steps -----------------------------------------------------------------------


def _steps(case: Case):
    """needle's and PyTorch's step on the case; each returns (output, input gradient) as
    framework tensors. The input leaves and the loss weights ``g`` are made once."""
    import numpy as np
    import torch

    import needle as ndl

    out_shape = tuple(case.torch(torch.from_numpy(case.x)).shape)
    g = np.random.default_rng(2).standard_normal(out_shape).astype(np.float32)
    own = _to_nhwc if case.nhwc else np.asarray
    x_n = ndl.Tensor(own(case.x), requires_grad=True)
    g_n = ndl.Tensor(own(g), requires_grad=False)
    x_t, g_t = torch.from_numpy(case.x.copy()).requires_grad_(), torch.from_numpy(g)

    def needle_step():
        out = case.needle(x_n)
        loss = (out * g_n).sum()
        loss.backward()  # replaces every .grad: nothing to zero
        return out, x_n.grad

    def torch_step():
        x_t.grad = None
        for p in case.torch_params:
            p.grad = None
        out = case.torch(x_t)
        loss = (out * g_t).sum()
        loss.backward()
        return out, x_t.grad

    return needle_step, torch_step


def _to_nhwc(array):
    import numpy as np

    return np.ascontiguousarray(array.transpose(0, 2, 3, 1))


def check(
    name: str, case: Case, needle_step, torch_step, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """Raise unless the output and the input gradient agree to float32 tolerance (``atol``
    relative to the reference's largest magnitude)."""
    import numpy as np

    ours, theirs = needle_step(), torch_step()
    for what, a, b in zip(("output", "input gradient"), ours, theirs):
        a, b = a.numpy(), b.detach().numpy()
        if case.nhwc:
            a = a.transpose(0, 3, 1, 2)
        if a.shape != b.shape:
            raise AssertionError(
                f"{name}: {what} shapes differ: needle {a.shape}, PyTorch {b.shape}"
            )
        scale = max(float(np.abs(b).max()), 1e-30)
        bad = np.abs(a - b) > atol * scale + rtol * np.abs(b)
        if bad.any():
            raise AssertionError(
                f"{name}: needle's {what} differs from PyTorch's at {bad.sum()} of {b.size} "
                f"elements (max |diff| {np.abs(a - b).max():.3g}, max |PyTorch| {scale:.3g}): "
                f"the benchmark would compare different computations"
            )


def _time_block(step, steps: int) -> float:
    """Median seconds of ``steps`` calls of ``step``."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, rounds: int, block_s: float, nhwc: bool = False) -> tuple[Case, dict]:
    """Check the layer, warm both up, then ``rounds`` rounds of needle's block then
    PyTorch's; the block's step count is fixed from the warm-up so a block takes about
    ``block_s`` seconds (3 to 200 steps). ``nhwc``: needle's conv and BatchNorm2d layers
    are called channels-last."""
    case = _cases()[name]()
    if nhwc:
        case = case.channels_last()
    needle_step, torch_step = _steps(case)
    check(name, case, needle_step, torch_step)
    per_step = [_time_block(needle_step, 3), _time_block(torch_step, 3)]
    steps = max(3, min(200, int(block_s / max(per_step))))
    times: dict[str, list[float]] = {"needle": [], "torch": []}
    for _ in range(rounds):
        times["needle"].append(_time_block(needle_step, steps))
        times["torch"].append(_time_block(torch_step, steps))
    ratios = [n / t for n, t in zip(times["needle"], times["torch"])]
    return case, {
        "needle_ms": statistics.median(times["needle"]) * 1e3,
        "torch_ms": statistics.median(times["torch"]) * 1e3,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "steps": steps,
    }


def machine(threads: int) -> str:
    import os
    import platform

    import numpy as np
    import torch

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores available, {threads} thread(s) each; "
        f"Python {platform.python_version()}, NumPy {np.__version__}, "
        f"PyTorch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", nargs="+", choices=LAYERS, default=LAYERS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--nhwc",
        action="store_true",
        help="call needle's convolutions and BatchNorm2d channels-last "
        "(forward_nhwc), PyTorch's NCHW",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 rounds of short blocks (a smoke run, under a minute)",
    )
    args = parser.parse_args()
    pin_threads(args.threads)  # before NumPy and torch are imported
    try:
        import torch
    except ImportError:
        sys.exit("bench_layers needs PyTorch: pip install torch==2.13.0")
    import needle

    torch.set_num_threads(args.threads)
    needle.set_num_threads(args.threads)
    rounds, block_s = (2, 0.05) if args.quick else (args.rounds, 0.3)
    command = "python benchmarks/bench_layers.py" + (
        " --quick" if args.quick else f" --rounds {rounds}"
    )
    if args.threads != 1:
        command += f" --threads {args.threads}"
    if args.nhwc:
        command += " --nhwc"
    print(
        f"Machine: {machine(args.threads)}. Command: `{command}`; ms per step (forward, "
        f"loss, backward; median over {rounds} rounds), ratio needle / PyTorch (median of "
        f"the rounds' ratios; below 1.0 needle is faster).\n"
    )
    print("| layer | shapes | needle ms | PyTorch ms | ratio | ratio per round |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.layers:
        case, r = measure(name, rounds, block_s, args.nhwc)
        each = " ".join(f"{x:.2f}" for x in r["ratios"])
        print(
            f"| {name} | {case.shapes} | {r['needle_ms']:.3f} | {r['torch_ms']:.3f} | "
            f"{r['ratio']:.2f} | {each} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

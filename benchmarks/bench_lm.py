"""Language-model training-step speed: needle vs PyTorch eager, same weights, one thread each.

Models are the course's ``LanguageModel`` with ``seq_model`` "rnn", "lstm" and
"transformer" on a 10,000-word vocabulary. Settings follow the course: the recurrent
models take batch 16 × 40 steps with 2 layers; the Transformer batch 256 × 20 tokens.
A step is what ``epoch_general_ptb`` does per chunk: forward, token-weighted softmax
loss, backward, SGD update, the hidden state carried (detached) to the next chunk. The
data are random token ids, so no corpus is needed.

Each measurement runs in its own subprocess (peak RSS is per framework and model), and
the frameworks alternate (needle, torch, needle, ...) so machine drift hits both. The
PyTorch model gets needle's initial weights (transposed where layouts differ). Both wall
and CPU time per step are reported: on a loaded machine the CPU time (the process's own
work, one thread) is the steadier of the two.

    python benchmarks/bench_lm.py                       # all three models, 3 runs each
    python benchmarks/bench_lm.py --models lstm --runs 5 --steps 30
    python benchmarks/bench_lm.py --profile rnn         # cProfile of needle's step (top 25)
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _harness import alternate, has_torch, peak_rss_mb, pin_threads, report, run_worker

VOCAB = 10_000
SETTINGS = {  # model: (batch, sequence length, layers, embedding size, hidden size)
    "rnn": (16, 40, 2, 100, 100),
    "lstm": (16, 40, 2, 100, 100),
    "transformer": (256, 20, 2, 64, 128),
}
LR = 0.1


def _token_chunks(model_name: str, steps: int, seed: int = 0):
    """``steps`` (ids (T, B) float32, targets (T·B,) int64) chunks of random tokens."""
    import numpy as np

    batch, length = SETTINGS[model_name][:2]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        ids = rng.integers(0, VOCAB, (length + 1, batch))
        yield ids[:-1].astype(np.float32), ids[1:].reshape(-1)


def _needle_model(model_name: str):
    import numpy as np

    from needle.apps.models_lm import LanguageModel

    _, length, layers, embedding, hidden = SETTINGS[model_name]
    np.random.seed(4)
    return LanguageModel(embedding, VOCAB, hidden, layers, model_name, seq_len=length)


def _needle_step_fn(model_name: str, create_graph: bool | None = False):
    """needle's step, calling ``loss.backward(create_graph=...)`` (None: plain backward())."""
    import needle as ndl
    from needle.tasks.language import detach_state  # what the training loop does to it

    model = _needle_model(model_name).train()
    opt = ndl.optim.SGD(model.parameters(), lr=LR)
    loss_fn = ndl.nn.SoftmaxLoss()
    state = {"h": None}

    def step(ids, targets):
        out, h = model(ndl.Tensor(ids, requires_grad=False), state["h"])
        state["h"] = detach_state(h)
        loss = loss_fn(out, targets)
        opt.reset_grad()
        loss.backward(create_graph=create_graph)
        opt.step()

    return step


# ----- the PyTorch mirror ----------------------------------------------------------------------


def _torch_tensor(t, transpose=False):
    import torch

    array = t.numpy().T if transpose else t.numpy()
    return torch.tensor(array.copy())


def _torch_recurrent(ours, torch):
    """torch.nn.RNN/LSTM with our cells' weights (ours are (in, out), torch's (out, in))."""
    cells = getattr(ours, "rnn_cells", None) or ours.lstm_cells
    kind = torch.nn.RNN if hasattr(ours, "rnn_cells") else torch.nn.LSTM
    theirs = kind(ours.input_size, ours.hidden_size, ours.num_layers)
    with torch.no_grad():
        for k, cell in enumerate(cells):
            for name, value in (("weight_ih", cell.W_ih), ("weight_hh", cell.W_hh)):
                getattr(theirs, f"{name}_l{k}").copy_(_torch_tensor(value, transpose=True))
            for name, value in (("bias_ih", cell.bias_ih), ("bias_hh", cell.bias_hh)):
                getattr(theirs, f"{name}_l{k}").copy_(_torch_tensor(value))
    return theirs


def _torch_linear(ours, torch):
    out_features, in_features = ours.weight.shape[1], ours.weight.shape[0]
    theirs = torch.nn.Linear(in_features, out_features, bias=ours.bias is not None)
    with torch.no_grad():
        theirs.weight.copy_(_torch_tensor(ours.weight, transpose=True))
        if ours.bias is not None:
            theirs.bias.copy_(_torch_tensor(ours.bias).reshape(-1))
    return theirs


def _torch_layer_norm(ours, torch):
    theirs = torch.nn.LayerNorm(ours.dim, eps=ours.eps)
    with torch.no_grad():
        theirs.weight.copy_(_torch_tensor(ours.weight))
        theirs.bias.copy_(_torch_tensor(ours.bias))
    return theirs


def _torch_transformer_layer(ours, torch):
    """Our pre-norm TransformerLayer in torch, attention by scaled_dot_product_attention."""
    F = torch.nn.functional
    attn = ours.attention
    heads, dim = attn.num_head, attn.dim_head
    from needle.nn import LayerNorm1d

    parts = {
        name: getattr(attn, name)
        for name in (
            "prenorm_q",
            "prenorm_k",
            "prenorm_v",
            "q_projection",
            "k_projection",
            "v_projection",
            "out_projection",
        )
    }
    parts.update({name: getattr(ours, name) for name in ("norm", "linear1", "linear2")})
    mods = torch.nn.ModuleDict(
        {
            name: (_torch_layer_norm if isinstance(part, LayerNorm1d) else _torch_linear)(
                part, torch
            )
            for name, part in parts.items()
        }
    )

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = mods

        def _heads(self, x, which):
            batch, length, _ = x.shape
            out = self.mods[f"{which}_projection"](self.mods[f"prenorm_{which}"](x))
            return out.reshape(batch, length, heads, dim).transpose(1, 2)

        def forward(self, x):
            q, k, v = (self._heads(x, which) for which in "qkv")
            merged = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            batch, length = x.shape[:2]
            x = x + self.mods["out_projection"](
                merged.transpose(1, 2).reshape(batch, length, heads * dim)
            )
            hidden = torch.relu(self.mods["linear1"](self.mods["norm"](x)))
            return x + self.mods["linear2"](hidden)

    return Layer()


def _torch_model(model_name: str):
    import torch

    ours = _needle_model(model_name)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(VOCAB, ours.embedding_size)
            with torch.no_grad():
                self.embedding.weight.copy_(_torch_tensor(ours.embedding.weight))
            self.linear = _torch_linear(ours.linear, torch)
            if model_name == "transformer":
                self.positions = torch.nn.Parameter(
                    _torch_tensor(ours.seq_model.positional_embedding.weight)
                )
                self.layers = torch.nn.ModuleList(
                    _torch_transformer_layer(layer, torch) for layer in ours.seq_model.layers
                )
            else:
                self.seq = _torch_recurrent(ours.seq_model, torch)

        def forward(self, ids, h):
            x = self.embedding(ids)
            if model_name == "transformer":
                x = x.transpose(0, 1) + self.positions[: x.shape[0]]
                for layer in self.layers:
                    x = layer(x)
                out, h = x.transpose(0, 1), None
            else:
                out, h = self.seq(x, h)
            return self.linear(out.reshape(-1, out.shape[-1])), h

    return LM()


def _torch_step_fn(model_name: str):
    import torch

    torch.set_num_threads(1)
    model = _torch_model(model_name).train()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    state = {"h": None}

    def step(ids, targets):
        out, h = model(torch.from_numpy(ids).long(), state["h"])
        if h is not None:
            state["h"] = tuple(p.detach() for p in h) if isinstance(h, tuple) else h.detach()
        loss = loss_fn(out, torch.from_numpy(targets))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


# ----- workers and the orchestrator ------------------------------------------------------------


def worker(framework: str, model_name: str, steps: int, warmup: int) -> dict:
    make = _needle_step_fn if framework == "needle" else _torch_step_fn
    step = make(model_name)
    for ids, targets in _token_chunks(model_name, warmup, seed=1):
        step(ids, targets)
    start, cpu_start = time.perf_counter(), time.process_time()
    for ids, targets in _token_chunks(model_name, steps):
        step(ids, targets)
    return {
        "ms_per_step": (time.perf_counter() - start) / steps * 1e3,
        "cpu_ms_per_step": (time.process_time() - cpu_start) / steps * 1e3,
        "peak_rss_mb": peak_rss_mb(),
    }


def compare(model_name: str, args) -> None:
    extra = ["--models", model_name, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    results = alternate(args.runs, lambda framework: run_worker(__file__, framework, extra))
    batch, length, layers, embedding, hidden = SETTINGS[model_name]
    print(
        f"{model_name}: batch {batch}, {length} tokens, {layers} layers, embedding "
        f"{embedding}, hidden {hidden}, vocabulary {VOCAB}"
    )
    if has_torch():
        print(f"  same function: max |logits difference| = {check_same_function(model_name):.1e}")
    for key, what in (("ms_per_step", "wall"), ("cpu_ms_per_step", "CPU")):
        print(f" {what} time:")
        report(results, key, "ms/step")


def check_same_function(model_name: str) -> float:
    """Max |needle logits - torch logits| on one chunk: the two models are the same function."""
    import numpy as np
    import torch

    import needle as ndl

    ids, _ = next(_token_chunks(model_name, 1))
    ours = _needle_model(model_name)
    theirs = _torch_model(model_name)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids).long(), None)[0].numpy()
    got = ours(ndl.Tensor(ids, requires_grad=False))[0].numpy()
    return float(np.abs(got - expected).max())


def profile_needle(model_name: str, steps: int) -> None:
    import cProfile
    import pstats

    step = _needle_step_fn(model_name)
    for ids, targets in _token_chunks(model_name, 3, seed=1):
        step(ids, targets)
    profiler = cProfile.Profile()
    profiler.enable()
    for ids, targets in _token_chunks(model_name, steps):
        step(ids, targets)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default="rnn,lstm,transformer",
        help="comma-separated subset of rnn, lstm, transformer",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=list(SETTINGS))
    parser.add_argument("--worker", choices=["needle", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    pin_threads()  # before NumPy is imported
    models = args.models.split(",")
    unknown = set(models) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(SETTINGS)}")
    if args.worker:
        print(json.dumps(worker(args.worker, models[0], args.steps, args.warmup)))
        return
    if args.profile:
        profile_needle(args.profile, args.steps)
        return
    print(f"language-model training step, SGD; one thread each; {os.cpu_count()} CPUs")
    for model_name in models:
        compare(model_name, args)


if __name__ == "__main__":
    main()

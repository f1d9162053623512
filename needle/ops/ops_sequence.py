"""Ops for sequence models: the embedding gather and fused recurrent cell steps.

* :func:`embedding_lookup` picks rows of a table by integer id, and its gradient is
  :func:`scatter_add_rows`; each is the other's gradient, so both are differentiable to
  any order. This computes the course's ``one_hot(ids) @ weight`` exactly (every row
  of the product is one row of ``weight``), without building the one-hot matrix.
* :func:`rnn_cell` and :func:`lstm_cell` compute one time step of an Elman RNN or an
  LSTM as one op with a hand-derived gradient, like the fused layers of
  :mod:`needle.ops.ops_fused` (whose second derivatives raise); :func:`rnn_layer` and
  :func:`lstm_layer` run a whole sequence through one layer as one op. The
  compositions in ``needle.nn.nn_sequence`` (``fused=False``) are the reference the
  tests check them against.

Array code here uses only what both array backends offer (slices, ``stack``, ``reshape``,
``transpose``, ``matmul``, elementwise math); the gather, the scatter-add and the LSTM gate
arithmetic (one kernel each way) are entry points of :data:`needle.backends.kernels`.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_indices
from ..autograd import Saved, Tensor, TensorOp, TensorTuple, TensorTupleOp
from ..backends import NDArray, array_api, kernels
from .ops_fused import _link_gradients
from .ops_mathematic import _check_tensor


def integer_ids(owner: str, ids, num_rows: int) -> np.ndarray:
    """``ids`` (a Tensor or array of integral values) as int64, each checked to be in [0, num_rows).

    Float ids are accepted when integral (token batches are float32 tensors). Raises
    ValueError naming ``owner``, the offending values as passed and the valid range.
    """
    return check_indices(
        owner,
        "ids",
        ids.numpy() if isinstance(ids, Tensor) else ids,
        num_rows,
        f" for a table of {num_rows} rows",
    )


# ----- embedding gather ------------------------------------------------------------------------


class EmbeddingLookup(TensorOp):
    """Rows of ``weight`` (n, D) picked by ``ids`` (int array): ``ids.shape + (D,)``."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def compute(self, weight: NDArray):
        return kernels.take_rows(weight, self.ids)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return scatter_add_rows(out_grad, self.ids, node.inputs[0].shape[0])


def embedding_lookup(weight: Tensor, ids) -> Tensor:
    """``weight[ids]``: weight (n, D), integral ids of any shape in [0, n) → ``ids.shape + (D,)``.

    Equal to ``one_hot(n, ids) @ weight`` in values and gradient.

    >>> import needle as ndl
    >>> w = ndl.Tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    >>> embedding_lookup(w, [[2], [0]]).numpy().tolist()
    [[[4.0, 5.0]], [[0.0, 1.0]]]
    """
    _check_tensor("embedding_lookup", weight, "weight")
    if len(weight.shape) != 2:
        raise ValueError(f"embedding_lookup: weight must be (n, D), got shape {weight.shape}")
    return EmbeddingLookup(integer_ids("embedding_lookup", ids, weight.shape[0]))(weight)


class ScatterAddRows(TensorOp):
    """Sum the rows of ``a`` (ids.shape + (D,)) into ``num_rows`` rows by id: (num_rows, D)."""

    def __init__(self, ids: np.ndarray, num_rows: int):
        self.ids = ids
        self.num_rows = num_rows

    def compute(self, a: NDArray):
        return kernels.add_rows(a, self.ids, self.num_rows)

    def gradient(self, out_grad: Tensor, node: Tensor):
        return EmbeddingLookup(self.ids)(out_grad)


def scatter_add_rows(a: Tensor, ids, num_rows: int) -> Tensor:
    """``out[ids[k]] += a[k]`` into zeros (num_rows, D): the adjoint of :func:`embedding_lookup`.

    ``a`` has shape ``ids.shape + (D,)``; repeated ids accumulate.
    """
    _check_tensor("scatter_add_rows", a)
    ids = integer_ids("scatter_add_rows", ids, num_rows)
    if a.shape != ids.shape + a.shape[-1:]:
        raise ValueError(
            f"scatter_add_rows: a.shape={a.shape} must be ids.shape + (D,) = {ids.shape} + (D,)"
        )
    return ScatterAddRows(ids, num_rows)(a)


# ----- recurrent gate arithmetic on arrays (shared by the step and the layer ops) -------------


def _mm(a: NDArray, b: NDArray) -> NDArray:
    """``a @ b`` straight to the BLAS: transposed views are not copied (``array_api.matmul``)."""
    return array_api.matmul(a, b)


def _pre_activation(x: NDArray, h: NDArray, W_ih: NDArray, W_hh: NDArray, biases) -> NDArray:
    """``x @ W_ih + h @ W_hh (+ b_ih + b_hh)``; the biases broadcast over the batch rows."""
    return _add_biases(_mm(x, W_ih) + _mm(h, W_hh), biases)


def _add_biases(out: NDArray, biases) -> NDArray:
    for bias in biases:
        out = out + bias.reshape((1, bias.shape[0]))
    return out


def _input_grads(
    g_pre: NDArray, x: NDArray, h: NDArray, W_ih: NDArray, W_hh: NDArray, num_biases: int
) -> tuple:
    """Gradients of ``x, h, W_ih, W_hh`` and each bias from that of the pre-activation.

    ``x`` (N, in), ``h`` (N, H) and ``g_pre`` (N, G·H): N is the batch of one step, or
    all T·B rows of a sequence at once (the weight gradients then sum over time).
    """
    grads = (
        _mm(g_pre, array_api.transpose(W_ih)),
        _mm(g_pre, array_api.transpose(W_hh)),
        _mm(array_api.transpose(x), g_pre),
        _mm(array_api.transpose(h), g_pre),
    )
    return grads + (g_pre.sum(axis=0),) * num_biases


def _rnn_activate(pre: NDArray, nonlinearity: str) -> NDArray:
    return array_api.tanh(pre) if nonlinearity == "tanh" else array_api.maximum(pre, 0)


def _rnn_pre_grad(g: NDArray, out: NDArray, nonlinearity: str) -> NDArray:
    # tanh' = 1 - tanh², relu' = [out > 0] (0 at the kink, as ops.relu)
    return g * (1 - out * out) if nonlinearity == "tanh" else g * (out > 0)


def _step(a: NDArray, t: int) -> NDArray:
    """Time step t of a (T, B, F) array as (B, F); the slice keeps the axis on both backends."""
    return a[t : t + 1].reshape(a.shape[1:])


def _flat(a: NDArray) -> NDArray:
    """(T, B, F) → (T·B, F)."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


# ----- fused recurrent steps -------------------------------------------------------------------


class RNNCellStep(TensorOp):
    """``act(x @ W_ih + h @ W_hh + b_ih + b_hh)`` with act tanh or relu; inputs as in rnn_cell."""

    def __init__(self, nonlinearity: str):
        self.nonlinearity = nonlinearity

    def compute(self, x, h, W_ih, W_hh, *biases):
        return _rnn_activate(_pre_activation(x, h, W_ih, W_hh, biases), self.nonlinearity)

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, h, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:4])
        g_pre = _rnn_pre_grad(
            out_grad.realize_cached_data(), node.realize_cached_data(), self.nonlinearity
        )
        grads = _input_grads(g_pre, x, h, W_ih, W_hh, len(node.inputs) - 4)
        return _link_gradients("RNNCell", out_grad, node, grads)


class LSTMCellStep(TensorTupleOp):
    """One LSTM step ``(h', c')``; gate blocks i, f, g, o along the columns of the weights."""

    def compute(self, x, h, c, W_ih, W_hh, *biases):
        pre = _pre_activation(x, h, W_ih, W_hh, biases)
        h_new, c_new, act, tanh_c = kernels.lstm_cell_forward(pre, c)
        return Saved((h_new, c_new), c, act, tanh_c)

    def gradient(self, out_grad, node):
        x, h, _, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:5])
        g_pre, grad_c = kernels.lstm_cell_backward(*out_grad.realize_cached_data(), *node.saved)
        grad_x, grad_h, *rest = _input_grads(g_pre, x, h, W_ih, W_hh, len(node.inputs) - 5)
        return _link_gradients("LSTMCell", out_grad, node, (grad_x, grad_h, grad_c, *rest))


# ----- fused recurrent layers: a whole sequence in one op --------------------------------------
#
# One op per layer instead of one per step: the input projection of every step is one
# (T·B, in) @ (in, G·H) product, and backpropagation through time runs as an array loop
# with the weight gradients again one product each. The graph holds one node per layer.


class RNNLayer(TensorTupleOp):
    """An Elman RNN layer over a sequence: ``(output (T, B, H), h_n (B, H))``."""

    def __init__(self, nonlinearity: str):
        self.nonlinearity = nonlinearity

    def compute(self, X, h0, W_ih, W_hh, *biases):
        projected = _add_biases(_mm(_flat(X), W_ih), biases).reshape(X.shape[:2] + (h0.shape[1],))
        h, outputs = h0, []
        for t in range(X.shape[0]):
            h = _rnn_activate(_step(projected, t) + _mm(h, W_hh), self.nonlinearity)
            outputs.append(h)
        return array_api.stack(outputs, axis=0), h

    def gradient(self, out_grad, node):
        X, h0, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:4])
        output = node.realize_cached_data()[0]
        grad_output, grad_h = out_grad.realize_cached_data()
        W_hh_t = array_api.transpose(W_hh)
        g_pres = []  # from the last step back, reversed below
        for t in reversed(range(X.shape[0])):
            grad = _step(grad_output, t) + grad_h
            g_pres.append(_rnn_pre_grad(grad, _step(output, t), self.nonlinearity))
            grad_h = _mm(g_pres[-1], W_hh_t)
        g_pres.reverse()
        grads = _sequence_grads(g_pres, X, h0, output, W_ih, W_hh, len(node.inputs) - 4)
        return _link_gradients("RNN", out_grad, node, (grads[0], grad_h) + grads[2:])


class LSTMLayer(TensorTupleOp):
    """An LSTM layer over a sequence: ``(output (T, B, H), h_n (B, H), c_n (B, H))``."""

    def compute(self, X, h0, c0, W_ih, W_hh, *biases):
        width = W_hh.shape[1]
        projected = _add_biases(_mm(_flat(X), W_ih), biases).reshape(X.shape[:2] + (width,))
        h, c, outputs, steps = h0, c0, [], []
        for t in range(X.shape[0]):
            c_prev = c
            h, c, act, tanh_c = kernels.lstm_cell_forward(_step(projected, t) + _mm(h, W_hh), c)
            outputs.append(h)
            steps.append((c_prev, act, tanh_c))
        return Saved((array_api.stack(outputs, axis=0), h, c), *steps)

    def gradient(self, out_grad, node):
        X, h0, _, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:5])
        output = node.realize_cached_data()[0]
        grad_output, grad_h, grad_c = out_grad.realize_cached_data()
        W_hh_t = array_api.transpose(W_hh)
        g_pres = []  # from the last step back, reversed below
        for t in reversed(range(X.shape[0])):
            g_pre, grad_c = kernels.lstm_cell_backward(
                _step(grad_output, t) + grad_h, grad_c, *node.saved[t]
            )
            g_pres.append(g_pre)
            grad_h = _mm(g_pre, W_hh_t)
        g_pres.reverse()
        grads = _sequence_grads(g_pres, X, h0, output, W_ih, W_hh, len(node.inputs) - 5)
        return _link_gradients("LSTM", out_grad, node, (grads[0], grad_h, grad_c) + grads[2:])


def _sequence_grads(
    g_pres: list,
    X: NDArray,
    h0: NDArray,
    output: NDArray,
    W_ih: NDArray,
    W_hh: NDArray,
    num_biases: int,
) -> tuple:
    """Gradients of X, (unused), W_ih, W_hh and the biases from the per-step pre-activation ones.

    Step t's hidden input was h0 for t = 0 and output[t-1] after: stacked, they are the
    rows that multiply W_hh, so every gradient is one product over all T·B rows.
    """
    g_pre = _flat(array_api.stack(g_pres, axis=0))
    previous = array_api.stack([h0] + [_step(output, t) for t in range(X.shape[0] - 1)], axis=0)
    grads = _input_grads(g_pre, _flat(X), _flat(previous), W_ih, W_hh, num_biases)
    return (grads[0].reshape(X.shape),) + grads[1:]


# ----- functions: validation, then the op ------------------------------------------------------


def _check_recurrent(
    op_name: str,
    x: Tensor,
    states: dict,
    W_ih: Tensor,
    W_hh: Tensor,
    biases: tuple,
    gates: int,
    x_rank: int,
) -> None:
    """Shapes: x (B, in) for a step or (T, B, in) for a layer, states (B, H),
    W_ih (in, G·H), W_hh (H, G·H), biases (G·H,) with G = ``gates``."""
    tensors = {"x": x, **states, "W_ih": W_ih, "W_hh": W_hh}
    tensors.update({f"bias {i}": bias for i, bias in enumerate(biases)})
    for name, value in tensors.items():
        _check_tensor(op_name, value, name)
    got = {name: value.shape for name, value in tensors.items()}
    first_state = next(iter(states.values()))
    if len(x.shape) != x_rank or len(first_state.shape) != 2:
        layout = "(B, in)" if x_rank == 2 else "(T, B, in)"
        raise ValueError(f"{op_name}: expected x {layout} and states (B, H), got shapes {got}")
    batch, features, size = x.shape[-2], x.shape[-1], first_state.shape[1]
    width = gates * size
    expected = {
        "x": x.shape[:-1] + (features,),
        **{name: (batch, size) for name in states},
        "W_ih": (features, width),
        "W_hh": (size, width),
    }
    expected.update({f"bias {i}": (width,) for i in range(len(biases))})
    if got != expected:
        raise ValueError(f"{op_name}: got shapes {got}, expected {expected}")


def _check_biases(op_name: str, biases: tuple) -> tuple:
    present = tuple(b for b in biases if b is not None)
    if len(present) == 1:
        raise ValueError(f"{op_name}: pass both bias_ih and bias_hh or neither")
    return present


def _check_nonlinearity(op_name: str, nonlinearity: str) -> None:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{op_name}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def rnn_cell(
    x: Tensor,
    h: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One Elman RNN step as one op: ``act(x @ W_ih + b_ih + h @ W_hh + b_hh)`` → (B, H).

    x (B, in), h (B, H), W_ih (in, H), W_hh (H, H), biases (H,) or both None;
    ``nonlinearity`` is "tanh" or "relu".
    """
    _check_nonlinearity("rnn_cell", nonlinearity)
    biases = _check_biases("rnn_cell", (bias_ih, bias_hh))
    _check_recurrent("rnn_cell", x, {"h": h}, W_ih, W_hh, biases, 1, 2)
    return RNNCellStep(nonlinearity)(x, h, W_ih, W_hh, *biases)


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> TensorTuple:
    """One LSTM step as one op; returns the TensorTuple ``(h', c')``, each (B, H).

    x (B, in), h and c (B, H), W_ih (in, 4H), W_hh (H, 4H), biases (4H,) or both None.
    The gate blocks along the columns are i, f, g, o (PyTorch's order):
    ``c' = σ(f)·c + σ(i)·tanh(g)`` and ``h' = σ(o)·tanh(c')``.
    """
    biases = _check_biases("lstm_cell", (bias_ih, bias_hh))
    _check_recurrent("lstm_cell", x, {"h": h, "c": c}, W_ih, W_hh, biases, 4, 2)
    return LSTMCellStep()(x, h, c, W_ih, W_hh, *biases)


def rnn_layer(
    X: Tensor,
    h0: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> TensorTuple:
    """:func:`rnn_cell` over every step of X (T, B, in) as one op, from h0 (B, H).

    Returns the TensorTuple ``(output (T, B, H), h_n (B, H))``; ``output[t]`` is the
    state after step t and ``h_n`` the last one.
    """
    _check_nonlinearity("rnn_layer", nonlinearity)
    biases = _check_biases("rnn_layer", (bias_ih, bias_hh))
    _check_recurrent("rnn_layer", X, {"h0": h0}, W_ih, W_hh, biases, 1, 3)
    return RNNLayer(nonlinearity)(X, h0, W_ih, W_hh, *biases)


def lstm_layer(
    X: Tensor,
    h0: Tensor,
    c0: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
) -> TensorTuple:
    """:func:`lstm_cell` over every step of X (T, B, in) as one op, from (h0, c0) (B, H).

    Returns the TensorTuple ``(output (T, B, H), h_n (B, H), c_n (B, H))``.
    """
    biases = _check_biases("lstm_layer", (bias_ih, bias_hh))
    _check_recurrent("lstm_layer", X, {"h0": h0, "c0": c0}, W_ih, W_hh, biases, 4, 3)
    return LSTMLayer()(X, h0, c0, W_ih, W_hh, *biases)


__all__ = [
    "EmbeddingLookup",
    "embedding_lookup",
    "ScatterAddRows",
    "scatter_add_rows",
    "RNNCellStep",
    "rnn_cell",
    "LSTMCellStep",
    "lstm_cell",
    "RNNLayer",
    "rnn_layer",
    "LSTMLayer",
    "lstm_layer",
]

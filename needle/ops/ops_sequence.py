"""Ops for sequence models: the embedding gather and fused recurrent cell steps.

* :func:`embedding_lookup` picks rows of a table by integer id, and its gradient is
  :func:`scatter_add_rows`; each is the other's gradient, so both are differentiable to
  any order. This computes the course's ``one_hot(ids) @ weight`` exactly (every row
  of the product is one row of ``weight``), without building the one-hot matrix.
* :func:`rnn_cell` and :func:`lstm_cell` compute one time step of an Elman RNN or an
  LSTM as one op with a hand-derived gradient, like the fused layers of
  :mod:`needle.ops.ops_fused` (whose second derivatives raise). The compositions in
  ``needle.nn.nn_sequence`` (``fused=False``) are the reference the tests check them
  against.

Backend note: array code here uses only what both array backends offer (slices,
``stack``, ``reshape``, ``transpose``, ``@``, elementwise math). The gather and the
scatter-add are the exception: NumPy has fancy indexing, the strided NDArray does not.
They go through :func:`_take_rows` and :func:`_add_rows`, the only backend-specific
functions of this file.
"""

from __future__ import annotations

import numpy as np

from ..autograd import Tensor, TensorOp, TensorTupleOp
from ..backends import NDArray, array_api
from .ops_fused import _link_gradients
from .ops_mathematic import Sigmoid, _check_tensor

# ----- the backend-specific gather / scatter-add -------------------------------------------


def _take_rows(table: NDArray, ids: np.ndarray) -> NDArray:
    """``table[ids]``: rows of ``table`` (n, D) picked by int ids → ``ids.shape + (D,)``.

    NumPy gathers directly. Another array type (the NDArray backend, which has no
    gather kernel yet) falls back to the one-hot product the course computes.
    """
    if isinstance(table, np.ndarray):
        return table[ids]
    rows = _one_hot_rows(ids, table.shape[0], table) @ table
    return rows.reshape(ids.shape + (table.shape[1],))


def _add_rows(grad: NDArray, ids: np.ndarray, num_rows: int) -> NDArray:
    """Scatter-add: ``out[ids[k]] += grad[k]`` into zeros (num_rows, D); grad is ids.shape + (D,).

    NumPy uses ``np.add.at`` (repeated ids accumulate); another array type uses the
    transposed one-hot product.
    """
    width = grad.shape[-1]
    flat = grad.reshape((ids.size, width))
    if isinstance(grad, np.ndarray):
        out = np.zeros((num_rows, width), dtype=grad.dtype)
        np.add.at(out, ids.reshape(-1), flat)
        return out
    return array_api.transpose(_one_hot_rows(ids, num_rows, grad)) @ flat


def _one_hot_rows(ids: np.ndarray, num_rows: int, like: NDArray) -> NDArray:
    """The (ids.size, num_rows) one-hot matrix of ``ids`` as an array like ``like``."""
    one_hot = np.zeros((ids.size, num_rows), dtype=like.dtype)
    one_hot[np.arange(ids.size), ids.reshape(-1)] = 1
    return array_api.asarray(one_hot, dtype=like.dtype, device=like.device)


def integer_ids(owner: str, ids, num_rows: int) -> np.ndarray:
    """``ids`` (a Tensor or array of integral values) as int64, each checked to be in [0, num_rows).

    Float ids are accepted when integral (token batches are float32 tensors). Raises
    ValueError naming ``owner``, the offending values and the valid range.
    """
    array = np.asarray(ids.numpy() if isinstance(ids, Tensor) else ids)
    if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ValueError(f"{owner}: ids must be integers, got {array.reshape(-1)[:8]!r}")
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{owner}: ids must be numbers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= num_rows)]
    if bad.size:
        raise ValueError(
            f"{owner}: ids must be in [0, {num_rows}) for a table of {num_rows} rows, got "
            f"{np.unique(bad)[:8].tolist()} (out of range)"
        )
    return array


# ----- embedding gather ------------------------------------------------------------------------


class EmbeddingLookup(TensorOp):
    """Rows of ``weight`` (n, D) picked by ``ids`` (int array): ``ids.shape + (D,)``."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def compute(self, weight: NDArray):
        return _take_rows(weight, self.ids)

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
        return _add_rows(a, self.ids, self.num_rows)

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


# ----- fused recurrent steps -------------------------------------------------------------------


def _pre_activation(x: NDArray, h: NDArray, W_ih: NDArray, W_hh: NDArray, biases) -> NDArray:
    """``x @ W_ih + h @ W_hh (+ b_ih + b_hh)``; the biases broadcast over the batch rows."""
    out = x @ W_ih + h @ W_hh
    for bias in biases:
        out = out + bias.reshape((1, bias.shape[0]))
    return out


def _weight_grads(g_pre: NDArray, x: NDArray, h: NDArray, W_ih: NDArray, W_hh: NDArray,
                  num_biases: int) -> tuple:
    """Gradients of ``x, h, W_ih, W_hh`` and each bias given that of the pre-activation."""
    grads = (
        g_pre @ array_api.transpose(W_ih),
        g_pre @ array_api.transpose(W_hh),
        array_api.transpose(x) @ g_pre,
        array_api.transpose(h) @ g_pre,
    )
    return grads + (g_pre.sum(axis=0),) * num_biases


def _sigmoid(a: NDArray) -> NDArray:
    return Sigmoid().compute(a)  # the overflow-safe formula, shared with ops.sigmoid


class RNNCellStep(TensorOp):
    """``act(x @ W_ih + h @ W_hh + b_ih + b_hh)`` with act tanh or relu; inputs as in rnn_cell."""

    def __init__(self, nonlinearity: str):
        self.nonlinearity = nonlinearity

    def compute(self, x, h, W_ih, W_hh, *biases):
        pre = _pre_activation(x, h, W_ih, W_hh, biases)
        if self.nonlinearity == "tanh":
            return array_api.tanh(pre)
        return array_api.maximum(pre, 0)

    def gradient(self, out_grad: Tensor, node: Tensor):
        x, h, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:4])
        out = node.realize_cached_data()
        g = out_grad.realize_cached_data()
        # tanh' = 1 - tanh², relu' = [out > 0] (0 at the kink, as ops.relu)
        g_pre = g * (1 - out * out) if self.nonlinearity == "tanh" else g * (out > 0)
        grads = _weight_grads(g_pre, x, h, W_ih, W_hh, len(node.inputs) - 4)
        return _link_gradients("RNNCell", out_grad, node, grads)


class LSTMCellStep(TensorTupleOp):
    """One LSTM step ``(h', c')``; gate blocks i, f, g, o along the columns of the weights."""

    def compute(self, x, h, c, W_ih, W_hh, *biases):
        gates = _pre_activation(x, h, W_ih, W_hh, biases)
        size = h.shape[1]
        i, f, o = (_sigmoid(gates[:, k * size : (k + 1) * size]) for k in (0, 1, 3))
        g = array_api.tanh(gates[:, 2 * size : 3 * size])
        c_new = f * c + i * g
        tanh_c = array_api.tanh(c_new)
        self.saved = (i, f, g, o, tanh_c)  # for the gradient
        return o * tanh_c, c_new

    def gradient(self, out_grad, node):
        x, h, c, W_ih, W_hh = (t.realize_cached_data() for t in node.inputs[:5])
        grad_h, grad_c = out_grad.realize_cached_data()
        i, f, g, o, tanh_c = self.saved
        grad_c_total = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        grad_gates = (  # through σ' = σ(1 - σ) and tanh' = 1 - tanh², in block order i, f, g, o
            grad_c_total * g * i * (1 - i),
            grad_c_total * c * f * (1 - f),
            grad_c_total * i * (1 - g * g),
            grad_h * tanh_c * o * (1 - o),
        )
        g_pre = array_api.stack(grad_gates, axis=1).reshape((x.shape[0], 4 * h.shape[1]))
        grad_x, grad_h0, grad_W_ih, grad_W_hh, *grad_b = _weight_grads(
            g_pre, x, h, W_ih, W_hh, len(node.inputs) - 5
        )
        grads = (grad_x, grad_h0, grad_c_total * f, grad_W_ih, grad_W_hh, *grad_b)
        return _link_gradients("LSTMCell", out_grad, node, grads)


def _check_step(op_name: str, x: Tensor, states: dict, W_ih: Tensor, W_hh: Tensor,
                biases: tuple, gates: int) -> None:
    """One step's shapes: x (B, in), states (B, H), W_ih (in, GH), W_hh (H, GH), biases (GH,)."""
    tensors = {"x": x, **states, "W_ih": W_ih, "W_hh": W_hh}
    tensors.update({f"bias {i}": bias for i, bias in enumerate(biases)})
    for name, value in tensors.items():
        _check_tensor(op_name, value, name)
    got = {name: value.shape for name, value in tensors.items()}
    first_state = next(iter(states.values()))
    if len(x.shape) != 2 or len(first_state.shape) != 2:
        raise ValueError(f"{op_name}: x and the states must be 2-D (B, ·), got shapes {got}")
    (batch, features), size = x.shape, first_state.shape[1]
    width = gates * size
    expected = {"x": (batch, features), **{name: (batch, size) for name in states},
                "W_ih": (features, width), "W_hh": (size, width)}
    expected.update({f"bias {i}": (width,) for i in range(len(biases))})
    if got != expected:
        raise ValueError(f"{op_name}: got shapes {got}, expected {expected}")


def _check_biases(op_name: str, biases: tuple) -> tuple:
    present = tuple(b for b in biases if b is not None)
    if len(present) == 1:
        raise ValueError(f"{op_name}: pass both bias_ih and bias_hh or neither")
    return present


def rnn_cell(x: Tensor, h: Tensor, W_ih: Tensor, W_hh: Tensor, bias_ih: Tensor | None = None,
             bias_hh: Tensor | None = None, nonlinearity: str = "tanh") -> Tensor:
    """One Elman RNN step as one op: ``act(x @ W_ih + b_ih + h @ W_hh + b_hh)`` → (B, H).

    x (B, in), h (B, H), W_ih (in, H), W_hh (H, H), biases (H,) or both None;
    ``nonlinearity`` is "tanh" or "relu".
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    biases = _check_biases("rnn_cell", (bias_ih, bias_hh))
    _check_step("rnn_cell", x, {"h": h}, W_ih, W_hh, biases, 1)
    return RNNCellStep(nonlinearity)(x, h, W_ih, W_hh, *biases)


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, W_ih: Tensor, W_hh: Tensor,
              bias_ih: Tensor | None = None, bias_hh: Tensor | None = None):
    """One LSTM step as one op; returns the TensorTuple ``(h', c')``, each (B, H).

    x (B, in), h and c (B, H), W_ih (in, 4H), W_hh (H, 4H), biases (4H,) or both None.
    The gate blocks along the columns are i, f, g, o (PyTorch's order):
    ``c' = σ(f)·c + σ(i)·tanh(g)`` and ``h' = σ(o)·tanh(c')``.
    """
    biases = _check_biases("lstm_cell", (bias_ih, bias_hh))
    _check_step("lstm_cell", x, {"h": h, "c": c}, W_ih, W_hh, biases, 4)
    return LSTMCellStep()(x, h, c, W_ih, W_hh, *biases)


__all__ = [
    "EmbeddingLookup",
    "embedding_lookup",
    "ScatterAddRows",
    "scatter_add_rows",
    "RNNCellStep",
    "rnn_cell",
    "LSTMCellStep",
    "lstm_cell",
]

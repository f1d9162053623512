"""Recurrent layers and the embedding: Embedding, RNNCell, RNN, LSTMCell, LSTM, GRUCell, GRU.

Sequences are time-major, ``(T, B, features)``. Weights are ``(in, out)`` (PyTorch's
transposed) and the gate blocks run along their columns in PyTorch's order (LSTM i, f,
g, o; GRU r, z, n), so a PyTorch model's weights copy over with one transpose. Parameters
are drawn in the course's order and with its bounds (``U(-k, k)``, ``k = 1/√hidden_size``),
so a seeded run gives the course's numbers.

The cells compute a step as one fused op (``needle.ops.rnn_cell``/``lstm_cell``) with a
hand-derived gradient; ``fused=False`` composes it from elementary ops instead (twice
differentiable, and the reference the fused ops are tested against); the GRU is composed
from elementary ops only. Forward passes read
``W_ih``, ``W_hh`` and the biases at call time, so they may be replaced after construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .. import init, ops
from .._validation import check_positive_int
from ..autograd import Tensor
from ..backends import Device
from ..ops.ops_sequence import integer_ids
from .module import Module, Parameter
from .nn_basic import _check_tensor


class Embedding(Module):
    """Look up a ``embedding_dim`` vector per token id: ids (T, B) → (T, B, embedding_dim).

    ``weight`` (num_embeddings, embedding_dim) is drawn N(0, 1). The course computes
    ``one_hot(ids) @ weight``; this gathers the rows instead (the same values and
    gradient, see :func:`needle.ops.embedding_lookup`). Ids may be floats if integral.

    >>> import needle as ndl
    >>> Embedding(10, 4)(ndl.Tensor([[1, 2, 3]], requires_grad=False)).shape
    (1, 3, 4)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("Embedding", "embedding_dim", embedding_dim)
        self.weight = Parameter(
            init.randn(
                num_embeddings, embedding_dim, device=device, dtype=dtype, requires_grad=True
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """Token ids (T, B) in [0, num_embeddings) → (T, B, embedding_dim)."""
        _check_tensor("Embedding", x)
        if len(x.shape) != 2:
            raise ValueError(f"Embedding: expected token ids of shape (T, B), got {tuple(x.shape)}")
        owner = f"Embedding(num_embeddings={self.num_embeddings})"
        return ops.embedding_lookup(self.weight, integer_ids(owner, x, self.num_embeddings))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


# ----- cells ------------------------------------------------------------------------------------


class _Cell(Module):
    """What the cells share: sizes, the four draws, input checks, zeros state.

    ``gates`` is the number of H-wide blocks in the weights' columns (1, 3 or 4).
    """

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        device: Device | None,
        dtype: str,
        fused: bool,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_size = check_positive_int(name, "input_size", input_size)
        self.hidden_size = check_positive_int(name, "hidden_size", hidden_size)
        self.fused = fused
        width = self.gates * self.hidden_size
        bound = 1 / math.sqrt(self.hidden_size)

        def draw(*shape: int) -> Parameter:
            return Parameter(
                init.rand(
                    *shape, low=-bound, high=bound, device=device, dtype=dtype, requires_grad=True
                )
            )

        self.W_ih = draw(self.input_size, width)
        self.W_hh = draw(self.hidden_size, width)
        self.bias_ih = draw(width) if bias else None
        self.bias_hh = draw(width) if bias else None

    def _describe(self) -> str:
        name = type(self).__name__
        return f"{name}(input_size={self.input_size}, hidden_size={self.hidden_size})"

    def _check_input(self, X: Tensor) -> None:
        _check_tensor(type(self).__name__, X)
        if len(X.shape) != 2 or X.shape[1] != self.input_size:
            raise ValueError(
                f"{self._describe()}: expected input of shape (B, {self.input_size}), "
                f"got {tuple(X.shape)}"
            )

    def _state(self, X: Tensor, state: Tensor | None, name: str) -> Tensor:
        """``state`` checked to be (B, H), or zeros (B, H) on X's device when None."""
        shape = (X.shape[0], self.hidden_size)
        if state is None:
            return init.zeros(*shape, device=X.device, dtype=X.dtype)
        _check_tensor(type(self).__name__, state)
        if tuple(state.shape) != shape:
            raise ValueError(
                f"{self._describe()}: expected {name} of shape {shape} for input of shape "
                f"{tuple(X.shape)}, got {tuple(state.shape)}"
            )
        return state

    def _pre_activation(self, X: Tensor, h: Tensor) -> Tensor:
        """``X @ W_ih + b_ih + h @ W_hh + b_hh`` from elementary ops (the unfused path)."""
        return _affine(X, self.W_ih, self.bias_ih) + _affine(h, self.W_hh, self.bias_hh)

    def _gate_blocks(self, projection: Tensor) -> tuple[Tensor, ...]:
        """The H-wide column blocks of a (B, gates·H) projection, each (B, H)."""
        batch = projection.shape[0]
        return tuple(ops.split(projection.reshape((batch, self.gates, self.hidden_size)), 1))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCell(_Cell):
    """One Elman RNN step: ``h' = act(X @ W_ih + b_ih + h @ W_hh + b_hh)``, (B, in) → (B, H).

    Parameters, drawn in this order from ``U(-k, k)``, ``k = 1/√hidden_size``: ``W_ih``
    (in, H), ``W_hh`` (H, H), ``bias_ih`` (H,), ``bias_hh`` (H,) (the biases are None and
    not drawn when ``bias=False``). ``nonlinearity`` is "tanh" or "relu".

    >>> import needle as ndl
    >>> RNNCell(3, 5)(ndl.init.ones(2, 3)).shape
    (2, 5)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            )
        super().__init__(input_size, hidden_size, bias, device, dtype, fused)
        self.nonlinearity = nonlinearity

    def forward(self, X: Tensor, h: Tensor | None = None) -> Tensor:
        """X (B, input_size), h (B, hidden_size) or None (zeros) → h' (B, hidden_size).

        With h None the ``h @ W_hh`` term still runs on zeros, so every parameter gets a
        gradient.
        """
        self._check_input(X)
        h = self._state(X, h, "h")
        if self.fused:
            return ops.rnn_cell(
                X, h, self.W_ih, self.W_hh, self.bias_ih, self.bias_hh, self.nonlinearity
            )
        pre = self._pre_activation(X, h)
        return ops.tanh(pre) if self.nonlinearity == "tanh" else ops.relu(pre)


class LSTMCell(_Cell):
    """One LSTM step: (X (B, in), (h, c) each (B, H)) → (h', c').

    Parameters as in :class:`RNNCell` but 4H wide: ``W_ih`` (in, 4H), ``W_hh`` (H, 4H),
    ``bias_ih`` (4H,), ``bias_hh`` (4H,). The column blocks of the pre-activation are the
    gates i, f, g, o (PyTorch's order): ``c' = σ(f)·c + σ(i)·tanh(g)``,
    ``h' = σ(o)·tanh(c')``.

    >>> import needle as ndl
    >>> h, c = LSTMCell(3, 5)(ndl.init.ones(2, 3))
    >>> h.shape, c.shape
    ((2, 5), (2, 5))
    """

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, fused)

    def forward(self, X: Tensor, h: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """X (B, input_size), h = (h0, c0) each (B, hidden_size) or None → (h', c')."""
        self._check_input(X)
        h0, c0 = _state_pair(self._describe(), h)
        h0, c0 = self._state(X, h0, "h0"), self._state(X, c0, "c0")
        if self.fused:
            step = ops.lstm_cell(X, h0, c0, self.W_ih, self.W_hh, self.bias_ih, self.bias_hh)
            return step[0], step[1]
        blocks = self._gate_blocks(self._pre_activation(X, h0))
        i, f, o = (ops.sigmoid(blocks[k]) for k in (0, 1, 3))
        c_new = f * c0 + i * ops.tanh(blocks[2])
        return o * ops.tanh(c_new), c_new


class GRUCell(_Cell):
    """One GRU step (PyTorch's formulation): (X (B, in), h (B, H) or None) → h' (B, H).

    Parameters as in :class:`RNNCell` but 3H wide: ``W_ih`` (in, 3H), ``W_hh`` (H, 3H),
    ``bias_ih`` (3H,), ``bias_hh`` (3H,), column blocks r, z, n (PyTorch's order)::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)      z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r · (h W_hn + b_hn))
        h' = (1 − z) · n + z · h

    ``b_hn`` sits inside the reset product, so the two projections are kept apart.

    >>> import needle as ndl
    >>> GRUCell(3, 5)(ndl.init.ones(2, 3)).shape
    (2, 5)
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, fused=False)

    def forward(self, X: Tensor, h: Tensor | None = None) -> Tensor:
        """X (B, input_size), h (B, hidden_size) or None (zeros) → h' (B, hidden_size)."""
        self._check_input(X)
        h = self._state(X, h, "h")
        x_r, x_z, x_n = self._gate_blocks(_affine(X, self.W_ih, self.bias_ih))
        h_r, h_z, h_n = self._gate_blocks(_affine(h, self.W_hh, self.bias_hh))
        r, z = ops.sigmoid(x_r + h_r), ops.sigmoid(x_z + h_z)
        n = ops.tanh(x_n + r * h_n)
        return n + z * (h - n)  # = (1 − z)·n + z·h with one product


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight + bias`` for x (B, in), weight (in, out), bias (out,) or None → (B, out)."""
    out = x @ weight
    if bias is None:
        return out
    return out + bias.reshape((1, bias.shape[0])).broadcast_to(out.shape)


def _state_pair(owner: str, h: Any) -> tuple[Tensor | None, Tensor | None]:
    """An LSTM state: None → (None, None); an (h, c) pair is passed through; else an error."""
    if h is None:
        return None, None
    if not isinstance(h, (tuple, list)) or len(h) != 2:
        got = f"a Tensor of shape {tuple(h.shape)}" if isinstance(h, Tensor) else type(h).__name__
        raise TypeError(f"{owner}: the state must be an (h, c) pair of tensors or None, got {got}")
    return h[0], h[1]


# ----- multi-layer sequence models --------------------------------------------------------------


def _unroll(
    cells: Sequence[Module], X: Tensor, states: list, top: Callable[[Any], Tensor]
) -> tuple[Tensor, list]:
    """Run ``cells`` layer by layer over the time steps of X (T, B, ·).

    ``states`` holds each layer's initial state; ``top`` picks the output h from a
    cell's state. Returns the top layer's outputs stacked to (T, B, H) and each layer's
    last state.
    """
    inputs = list(ops.split(X, 0))
    finals = []
    for cell, state in zip(cells, states):
        outputs = []
        for x in inputs:
            state = cell(x, state)
            outputs.append(top(state))
        inputs = outputs
        finals.append(state)
    return ops.stack(inputs, 0), finals


class _Recurrent(Module):
    """What RNN, LSTM and GRU share: sizes and the layer list (layer 0 reads the input).

    With ``fused`` (the default) each layer runs the whole sequence as one op
    (``ops.rnn_layer``/``ops.lstm_layer``), reading its cell's weights at call time;
    ``fused=False`` steps through the cells' unfused compositions, splitting X and the
    states along axis 0 and stacking the results.
    """

    def _make_cells(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        fused: bool,
        make: Callable[[int], Module],
    ) -> list:
        name = type(self).__name__
        self.fused = fused
        self.input_size = check_positive_int(name, "input_size", input_size)
        self.hidden_size = check_positive_int(name, "hidden_size", hidden_size)
        self.num_layers = check_positive_int(name, "num_layers", num_layers)
        return [
            make(self.input_size if k == 0 else self.hidden_size) for k in range(self.num_layers)
        ]

    def _describe(self) -> str:
        return (
            f"{type(self).__name__}(input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, num_layers={self.num_layers})"
        )

    def _check_sequence(self, X: Tensor) -> None:
        _check_tensor(type(self).__name__, X)
        if len(X.shape) != 3 or X.shape[2] != self.input_size:
            raise ValueError(
                f"{self._describe()}: expected input of shape (T, B, {self.input_size}) "
                f"(time-major), got {tuple(X.shape)}"
            )

    def _layer_states(self, X: Tensor, h: Tensor | None, name: str) -> list:
        """The per-layer states of ``h`` (L, B, H), split along axis 0; None → L Nones."""
        if h is None:
            return [None] * self.num_layers
        _check_tensor(type(self).__name__, h)
        shape = (self.num_layers, X.shape[1], self.hidden_size)
        if tuple(h.shape) != shape:
            raise ValueError(
                f"{self._describe()}: expected {name} of shape {shape} (L, B, H) for input of "
                f"shape {tuple(X.shape)}, got {tuple(h.shape)}"
            )
        return list(ops.split(h, 0))

    def _or_zeros(self, X: Tensor, state: Tensor | None) -> Tensor:
        """A layer's state, or zeros (B, H) on X's device when None (still fed to W_hh)."""
        if state is not None:
            return state
        return init.zeros(X.shape[1], self.hidden_size, device=X.device, dtype=X.dtype)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"


class RNN(_Recurrent):
    """A multi-layer Elman RNN over a time-major sequence.

    ``forward(X (T, B, input_size), h0 (L, B, H) or None)`` → ``(output (T, B, H),
    h_n (L, B, H))``: ``output[t]`` is the top layer's state at step t, ``h_n[l]`` layer
    l's last state. ``rnn_cells`` is the list of :class:`RNNCell` (layer 0 first, each
    drawing its four parameters in order). ``bias`` is the 4th positional argument.

    >>> import needle as ndl
    >>> out, h = RNN(3, 4, 2)(ndl.init.ones(5, 2, 3))
    >>> out.shape, h.shape
    ((5, 2, 4), (2, 2, 4))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.rnn_cells = self._make_cells(
            input_size,
            hidden_size,
            num_layers,
            fused,
            lambda size: RNNCell(size, hidden_size, bias, nonlinearity, device, dtype, fused=fused),
        )

    def forward(self, X: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """X (T, B, input_size), h0 (L, B, H) or None → (output (T, B, H), h_n (L, B, H))."""
        self._check_sequence(X)
        states = self._layer_states(X, h0, "h0")
        if not self.fused:
            output, finals = _unroll(self.rnn_cells, X, states, lambda h: h)
            return output, ops.stack(finals, 0)
        finals = []
        for cell, h in zip(self.rnn_cells, states):
            X, h_n = ops.rnn_layer(
                X,
                self._or_zeros(X, h),
                cell.W_ih,
                cell.W_hh,
                cell.bias_ih,
                cell.bias_hh,
                cell.nonlinearity,
            )
            finals.append(h_n)
        return X, ops.stack(finals, 0)


class LSTM(_Recurrent):
    """A multi-layer LSTM over a time-major sequence.

    ``forward(X (T, B, input_size), h = (h0, c0) each (L, B, H), or None)`` →
    ``(output (T, B, H), (h_n, c_n))``. ``lstm_cells`` is the list of :class:`LSTMCell`.

    >>> import needle as ndl
    >>> out, (h, c) = LSTM(3, 4, 2)(ndl.init.ones(5, 2, 3))
    >>> out.shape, h.shape, c.shape
    ((5, 2, 4), (2, 2, 4), (2, 2, 4))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
        *,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.lstm_cells = self._make_cells(
            input_size,
            hidden_size,
            num_layers,
            fused,
            lambda size: LSTMCell(size, hidden_size, bias, device, dtype, fused=fused),
        )

    def forward(self, X: Tensor, h: tuple[Tensor, Tensor] | None = None):
        """X (T, B, input_size), h = (h0, c0) or None → (output (T, B, H), (h_n, c_n))."""
        self._check_sequence(X)
        h0, c0 = _state_pair(self._describe(), h)
        states = list(zip(self._layer_states(X, h0, "h0"), self._layer_states(X, c0, "c0")))
        if not self.fused:
            X, finals = _unroll(self.lstm_cells, X, states, lambda state: state[0])
        else:
            finals = []
            for cell, (h_start, c_start) in zip(self.lstm_cells, states):
                X, h_n, c_n = ops.lstm_layer(
                    X,
                    self._or_zeros(X, h_start),
                    self._or_zeros(X, c_start),
                    cell.W_ih,
                    cell.W_hh,
                    cell.bias_ih,
                    cell.bias_hh,
                )
                finals.append((h_n, c_n))
        return X, (ops.stack([s[0] for s in finals], 0), ops.stack([s[1] for s in finals], 0))


class GRU(_Recurrent):
    """A multi-layer GRU over a time-major sequence (composed from elementary ops).

    ``forward(X (T, B, input_size), h0 (L, B, H) or None)`` → ``(output (T, B, H),
    h_n (L, B, H))``, as :class:`RNN`. ``gru_cells`` is the list of :class:`GRUCell`
    (layer 0 first, each drawing its four parameters in order).

    >>> import needle as ndl
    >>> out, h = GRU(3, 4, 2)(ndl.init.ones(5, 2, 3))
    >>> out.shape, h.shape
    ((5, 2, 4), (2, 2, 4))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.gru_cells = self._make_cells(
            input_size,
            hidden_size,
            num_layers,
            False,
            lambda size: GRUCell(size, hidden_size, bias, device, dtype),
        )

    def forward(self, X: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """X (T, B, input_size), h0 (L, B, H) or None → (output (T, B, H), h_n (L, B, H))."""
        self._check_sequence(X)
        output, finals = _unroll(self.gru_cells, X, self._layer_states(X, h0, "h0"), lambda h: h)
        return output, ops.stack(finals, 0)


__all__ = ["Embedding", "RNNCell", "RNN", "LSTMCell", "LSTM", "GRUCell", "GRU"]

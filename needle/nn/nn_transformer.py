"""Attention and the Transformer: MultiHeadAttention, AttentionLayer, TransformerLayer, Transformer.

Everything follows the course's reference: pre-norm attention with bias-free
projections, a causal mask by default (except in the bare ``MultiHeadAttention``), a
learned positional embedding drawn first, and dropout draws in a fixed order. Every
argument after the leading sizes is keyword-only. Shapes: B batch, T query length,
S key length, ``num_head`` heads of ``dim_head`` features each.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import init, ops
from .._validation import check_positive_int
from ..autograd import Tensor
from ..backends import Device
from .module import Module
from .nn_basic import Dropout, LayerNorm1d, Linear, _check_tensor
from .nn_sequence import Embedding

#: The causal mask value: the most negative float32, never -inf (-inf times a
#: 0/1 mask would put NaN at the kept positions).
MASK_VALUE = -float(np.finfo(np.float32).max)


def _additive(hidden: np.ndarray, dtype: str) -> np.ndarray:
    """MASK_VALUE where ``hidden``, 0 elsewhere: a mask added to the attention logits."""
    return np.where(hidden, MASK_VALUE, 0.0).astype(dtype)


def _future(T: int, S: int) -> np.ndarray:
    """(1, 1, T, S) bool: True where key j > i + (S - T), the keys a causal query i never sees."""
    return np.triu(np.ones((T, S), dtype=bool), S - T + 1).reshape(1, 1, T, S)


def causal_mask(T: int, S: int, dtype: str = "float32") -> np.ndarray:
    """(1, 1, T, S): MASK_VALUE where key j > i + (S - T) (the future), 0 elsewhere.

    >>> causal_mask(2, 3)[0, 0].tolist() == [[0.0, 0.0, MASK_VALUE], [0.0, 0.0, 0.0]]
    True
    """
    return _additive(_future(T, S), dtype)


def _check_key_padding_mask(owner: str, mask, batch: int, length: int) -> np.ndarray:
    """``mask`` (a bool Tensor or array (B, S), True at padded keys) as a NumPy bool array.

    Raises TypeError for a non-bool mask and ValueError for a shape other than
    ``(batch, length)``, naming ``owner``.

    >>> _check_key_padding_mask("Transformer", [[False, True]], 1, 2).tolist()
    [[False, True]]
    """
    array = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask)
    if array.dtype != np.bool_:
        raise TypeError(
            f"{owner}: key_padding_mask must be boolean (True marks a padded key), got dtype "
            f"{array.dtype}; e.g. pass lengths[:, None] <= np.arange(S)"
        )
    if array.shape != (batch, length):
        raise ValueError(
            f"{owner}: key_padding_mask has shape {array.shape}, expected (B, S) = "
            f"({batch}, {length}): one row per batch entry, one column per key position"
        )
    return array


def _softmax_last(logits: Tensor) -> Tensor:
    """Softmax over the last axis of a 4-D tensor; the row max is subtracted as a constant."""
    peak = Tensor.make_const(logits.realize_cached_data().max(axis=3, keepdims=True))
    exps = ops.exp(logits - peak.broadcast_to(logits.shape))
    total = exps.sum(axes=(3,)).reshape(logits.shape[:3] + (1,))
    return exps / total.broadcast_to(logits.shape)


class MultiHeadAttention(Module):
    """Scaled dot-product attention over heads; no parameters, no draws at construction.

    ``forward(q (B, H, T, D), k (B, H, S, D), v (B, H, S, D))`` returns
    ``(result (B, H, T, D), probs (B, H, T, S))`` with
    ``probs = dropout(softmax(q kᵀ/√D + mask))``, the probs returned after dropout,
    and ``result = probs @ v``. With ``causal`` the mask hides key j > i + (S − T);
    ``key_padding_mask`` (B, S), True at padded keys, hides those keys from every query.
    Hidden keys get weight exactly 0 (a row whose keys are all hidden is uniform).

    >>> import needle as ndl
    >>> out, probs = MultiHeadAttention()(*[ndl.init.ones(1, 2, 3, 4)] * 3)
    >>> out.shape, probs.shape
    ((1, 2, 3, 4), (1, 2, 3, 3))
    """

    def __init__(
        self,
        *,
        dropout: float = 0.0,
        causal: bool = False,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()  # device and dtype: the course's signature; the mask follows q
        self.causal = causal
        self.dropout = Dropout(dropout)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, key_padding_mask=None
    ) -> tuple[Tensor, Tensor]:
        """q (B, H, T, D), k and v (B, H, S, D), key_padding_mask None or bool (B, S) →
        (result (B, H, T, D), probs (B, H, T, S))."""
        _check_heads(q, k, v)
        B, T, S, D = q.shape[0], q.shape[2], k.shape[2], q.shape[3]
        logits = (q @ ops.transpose(k)) / math.sqrt(D)
        hidden = self._hidden_keys(B, T, S, key_padding_mask)
        if hidden is not None:
            mask = Tensor(_additive(hidden, logits.dtype), device=q.device, requires_grad=False)
            logits = logits + mask.broadcast_to(logits.shape)
        probs = self.dropout(_softmax_last(logits))
        return probs @ v, probs

    def _hidden_keys(self, B: int, T: int, S: int, key_padding_mask) -> np.ndarray | None:
        """Bool, broadcastable to (B, 1, T, S): the keys each query may not see (None: all
        visible). One combined mask, so a key hidden twice still gets MASK_VALUE once."""
        padded = None
        if key_padding_mask is not None:
            padded = _check_key_padding_mask("MultiHeadAttention", key_padding_mask, B, S)
            padded = padded.reshape(B, 1, 1, S)
        if not self.causal:
            return padded
        return _future(T, S) if padded is None else _future(T, S) | padded

    def extra_repr(self) -> str:
        return f"dropout={self.dropout.p}, causal={self.causal}"


def _check_heads(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, value in (("q", q), ("k", k), ("v", v)):
        _check_tensor(f"MultiHeadAttention ({name})", value)
    shapes = f"q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}, v.shape={tuple(v.shape)}"
    if not len(q.shape) == len(k.shape) == len(v.shape) == 4:
        raise ValueError(f"MultiHeadAttention: {shapes}: expected 4-D (B, heads, length, dim)")
    if q.shape[:2] != k.shape[:2] or k.shape != v.shape or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"MultiHeadAttention: {shapes}: expected q (B, H, T, D) and k, v (B, H, S, D) "
            f"with equal batch, head count and head size D"
        )


class AttentionLayer(Module):
    """Pre-norm multi-head attention with bias-free projections: q (B, T, F) → (B, T, out).

    Created in this order: ``prenorm_q/k/v`` (LayerNorm1d of the q/k/v features),
    ``q/k/v_projection`` (Linear to ``num_head·dim_head``, no bias), ``attn``
    (:class:`MultiHeadAttention`), ``out_projection`` (Linear to ``out_features``, no bias).
    ``k`` and ``v`` default to ``q`` (self-attention). Causal by default.

    >>> import needle as ndl
    >>> AttentionLayer(6, 2, 3)(ndl.init.ones(1, 4, 6)).shape
    (1, 4, 6)
    """

    def __init__(
        self,
        q_features: int,
        num_head: int,
        dim_head: int,
        *,
        k_features: int | None = None,
        v_features: int | None = None,
        out_features: int | None = None,
        dropout: float = 0.0,
        causal: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.q_features = check_positive_int("AttentionLayer", "q_features", q_features)
        self.num_head = check_positive_int("AttentionLayer", "num_head", num_head)
        self.dim_head = check_positive_int("AttentionLayer", "dim_head", dim_head)
        self.k_features = k_features or q_features
        self.v_features = v_features or q_features
        self.out_features = out_features or q_features
        inner = self.num_head * self.dim_head
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.prenorm_q = LayerNorm1d(self.q_features, **kw)
        self.prenorm_k = LayerNorm1d(self.k_features, **kw)
        self.prenorm_v = LayerNorm1d(self.v_features, **kw)
        self.q_projection = Linear(self.q_features, inner, bias=False, **kw)
        self.k_projection = Linear(self.k_features, inner, bias=False, **kw)
        self.v_projection = Linear(self.v_features, inner, bias=False, **kw)
        self.attn = MultiHeadAttention(dropout=dropout, causal=causal, **kw)
        self.out_projection = Linear(inner, self.out_features, bias=False, **kw)

    def _heads(self, x: Tensor, norm: LayerNorm1d, projection: Linear, name: str) -> Tensor:
        """x (B, L, F) → normed, projected and split into heads: (B, num_head, L, dim_head)."""
        _check_tensor("AttentionLayer", x)
        if len(x.shape) != 3 or x.shape[2] != norm.dim:
            raise ValueError(
                f"AttentionLayer: expected {name} of shape (B, L, {norm.dim}), got {tuple(x.shape)}"
            )
        batch, length, features = x.shape
        out = projection(norm(x.reshape((batch * length, features))))
        return out.reshape((batch, length, self.num_head, self.dim_head)).transpose((1, 2))

    def forward(
        self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None, *, key_padding_mask=None
    ) -> Tensor:
        """q (B, T, q_features), k (B, S, k_features), v (B, S, v_features) → (B, T, out).

        ``key_padding_mask``: None, or bool (B, S), True at the padded key positions.
        """
        k = q if k is None else k
        v = q if v is None else v
        heads = [
            self._heads(q, self.prenorm_q, self.q_projection, "q"),
            self._heads(k, self.prenorm_k, self.k_projection, "k"),
            self._heads(v, self.prenorm_v, self.v_projection, "v"),
        ]
        if heads[1].shape[0] != heads[0].shape[0] or heads[1].shape != heads[2].shape:
            raise ValueError(
                f"AttentionLayer: q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}, "
                f"v.shape={tuple(v.shape)}: batch sizes must match and k, v need one length"
            )
        if key_padding_mask is not None:
            key_padding_mask = _check_key_padding_mask(
                "AttentionLayer", key_padding_mask, heads[1].shape[0], heads[1].shape[2]
            )
        result, _ = self.attn(*heads, key_padding_mask=key_padding_mask)
        batch, T = q.shape[:2]
        merged = result.transpose((1, 2)).reshape((batch * T, self.num_head * self.dim_head))
        return self.out_projection(merged).reshape((batch, T, self.out_features))


class TransformerLayer(Module):
    """A pre-norm Transformer block: x (B, T, D) → (B, T, D).

    ``x = x + dropout(attn(x))``, then
    ``x = x + dropout(linear2(dropout(relu(linear1(norm(x))))))``. Created in order:
    ``attention`` (:class:`AttentionLayer`), ``norm``, ``linear1`` (D → hidden_size),
    ``linear2`` (hidden_size → D), both with bias, and one ``dropout`` used three times.
    Dropout draws, in order: the attention probs, the first residual branch, after the
    ReLU, after linear2. ``key_padding_mask`` (B, T), True at padded positions, hides
    them as keys.
    """

    def __init__(
        self,
        q_features: int,
        num_head: int,
        dim_head: int,
        hidden_size: int,
        *,
        dropout: float = 0.0,
        causal: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.attention = AttentionLayer(
            q_features, num_head, dim_head, dropout=dropout, causal=causal, **kw
        )
        self.norm = LayerNorm1d(q_features, **kw)
        self.linear1 = Linear(q_features, hidden_size, **kw)
        self.linear2 = Linear(hidden_size, q_features, **kw)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, *, key_padding_mask=None) -> Tensor:
        """x (B, T, q_features), key_padding_mask None or bool (B, T) → x's shape."""
        x = x + self.dropout(self.attention(x, key_padding_mask=key_padding_mask))
        batch, T, features = x.shape
        flat = x.reshape((batch * T, features))
        hidden = self.dropout(ops.relu(self.linear1(self.norm(flat))))
        return x + self.dropout(self.linear2(hidden)).reshape(x.shape)


class Transformer(Module):
    """A decoder-style Transformer (no output head): x (T, B, D) → (x (T, B, D), zeros).

    Created in order: ``positional_embedding`` = ``Embedding(sequence_len,
    embedding_size)`` (always ``sequence_len`` rows, drawn first), then ``layers``, a
    list of ``num_layers`` :class:`TransformerLayer`. ``forward(x, h=None)`` adds the
    embedding of positions 0 … T−1 and applies the layers; ``h`` is ignored and the
    second result is ``zeros_like(x)`` (the course's interface). With ``batch_first`` x
    is (B, T, D). ``key_padding_mask`` is (B, T) in either layout, True at the padded
    positions, which no query attends to (their own outputs are computed as usual).

    >>> import needle as ndl
    >>> out, h = Transformer(8, 16, 1, num_head=2, dim_head=4)(ndl.init.ones(5, 2, 8))
    >>> out.shape, h.shape
    ((5, 2, 8), (5, 2, 8))
    """

    def __init__(
        self,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        num_head: int = 8,
        dim_head: int = 32,
        dropout: float = 0.0,
        causal: bool = True,
        device: Device | None = None,
        dtype: str = "float32",
        batch_first: bool = False,
        sequence_len: int = 2048,
    ) -> None:
        super().__init__()
        self.embedding_size = check_positive_int("Transformer", "embedding_size", embedding_size)
        self.num_layers = check_positive_int("Transformer", "num_layers", num_layers)
        self.sequence_len = check_positive_int("Transformer", "sequence_len", sequence_len)
        self.batch_first = batch_first
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.positional_embedding = Embedding(self.sequence_len, self.embedding_size, **kw)
        self.layers = [
            TransformerLayer(
                embedding_size,
                num_head,
                dim_head,
                hidden_size,
                dropout=dropout,
                causal=causal,
                **kw,
            )
            for _ in range(self.num_layers)
        ]

    def forward(self, x: Tensor, h=None, *, key_padding_mask=None) -> tuple[Tensor, Tensor]:
        """x (T, B, D), or (B, T, D) when ``batch_first``, key_padding_mask None or bool
        (B, T) → (same shape, zeros of it)."""
        _check_tensor("Transformer", x)
        layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
        if len(x.shape) != 3 or x.shape[2] != self.embedding_size:
            raise ValueError(
                f"Transformer(embedding_size={self.embedding_size}): expected input of shape "
                f"{layout} with D={self.embedding_size}, got {tuple(x.shape)}"
            )
        if not self.batch_first:
            x = x.transpose((0, 1))
        batch, T = x.shape[:2]
        if T > self.sequence_len:
            raise ValueError(
                f"Transformer: sequence length {T} exceeds sequence_len={self.sequence_len}; "
                f"build the model with a larger sequence_len"
            )
        if key_padding_mask is not None:
            key_padding_mask = _check_key_padding_mask("Transformer", key_padding_mask, batch, T)
        positions = Tensor(
            np.repeat(np.arange(T)[:, None], batch, axis=1), device=x.device, requires_grad=False
        )
        x = x + self.positional_embedding(positions).transpose((0, 1))
        for layer in self.layers:
            x = layer(x, key_padding_mask=key_padding_mask)
        if not self.batch_first:
            x = x.transpose((0, 1))
        return x, init.zeros_like(x)


__all__ = ["MultiHeadAttention", "AttentionLayer", "TransformerLayer", "Transformer"]

"""The course's language model: embedding → RNN, LSTM or Transformer → linear head.

Re-exported from ``needle.apps.models``. Importing this module draws nothing and sets
no seed (the course's file reseeds NumPy; a library must not).
"""

from __future__ import annotations

from .. import nn
from .._validation import check_positive_int, check_real
from ..autograd import Tensor
from ..backends import Device

SEQ_MODELS = ("rnn", "lstm", "transformer")


class LanguageModel(nn.Module):
    """Next-token logits for a time-major batch of token ids.

    ``embedding_size`` comes first and the vocabulary size (``output_size``) second, as
    in the course. Created in order: ``embedding`` = ``Embedding(output_size,
    embedding_size)``; ``seq_model``, an ``RNN``/``LSTM(embedding_size, hidden_size,
    num_layers)`` or a ``Transformer(embedding_size, hidden_size, num_layers,
    sequence_len=seq_len)``; ``linear``, the head from ``hidden_size`` (``embedding_size``
    for the transformer) to ``output_size``.

    ``forward(x (T, B), h=None)`` returns ``(logits (T·B, output_size), h)``, the rows
    time-major (row ``t·B + b``); ``h`` is ``(L, B, H)`` for "rnn", ``(h_n, c_n)`` for
    "lstm" and the transformer's zeros.

    ``dropout`` (not in the course; 0 keeps the course's model and draws): for "rnn" and
    "lstm" a :class:`~needle.nn.Dropout` on the embeddings and on the recurrent output
    (Zaremba et al.'s non-recurrent dropout), for "transformer" the Transformer's own.

    >>> import needle as ndl
    >>> model = LanguageModel(8, 20, 16, 2, "lstm")
    >>> logits, (h, c) = model(ndl.Tensor([[1, 2], [3, 4], [5, 6]], requires_grad=False))
    >>> logits.shape, h.shape
    ((6, 20), (2, 2, 16))
    """

    def __init__(
        self,
        embedding_size: int,
        output_size: int,
        hidden_size: int,
        num_layers: int = 1,
        seq_model: str = "rnn",
        seq_len: int = 40,
        device: Device | None = None,
        dtype: str = "float32",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if seq_model not in SEQ_MODELS:
            raise ValueError(
                f"LanguageModel: seq_model must be one of {SEQ_MODELS}, got {seq_model!r}"
            )
        self.embedding_size = check_positive_int("LanguageModel", "embedding_size", embedding_size)
        self.output_size = check_positive_int("LanguageModel", "output_size", output_size)
        self.hidden_size = check_positive_int("LanguageModel", "hidden_size", hidden_size)
        self.seq_model_name = seq_model
        dropout = check_real("LanguageModel", "dropout", dropout, low=0.0, high=1.0, high_open=True)
        kw = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(output_size, embedding_size, **kw)
        if seq_model == "rnn":
            self.seq_model = nn.RNN(embedding_size, hidden_size, num_layers, **kw)
        elif seq_model == "lstm":
            self.seq_model = nn.LSTM(embedding_size, hidden_size, num_layers, **kw)
        else:
            self.seq_model = nn.Transformer(
                embedding_size,
                hidden_size,
                num_layers,
                batch_first=False,
                sequence_len=seq_len,
                dropout=dropout,
                **kw,
            )
        head_in = embedding_size if seq_model == "transformer" else hidden_size
        self.linear = nn.Linear(head_in, output_size, **kw)
        recurrent = seq_model != "transformer"
        self.dropout = nn.Dropout(dropout) if recurrent and dropout > 0 else None

    def forward(self, x: Tensor, h=None):
        """Token ids x (T, B) → (logits (T·B, output_size), the sequence model's state)."""
        embedded = self.embedding(x)
        if self.dropout is not None:
            embedded = self.dropout(embedded)
        out, h = self.seq_model(embedded, h)
        if self.dropout is not None:
            out = self.dropout(out)
        T, B, features = out.shape
        return self.linear(out.reshape((T * B, features))), h

    def extra_repr(self) -> str:
        return f"seq_model={self.seq_model_name!r}"


__all__ = ["LanguageModel"]

"""The course's language-model training loops on PTB-style data (hw4).

``epoch_general_ptb`` runs one epoch of truncated backpropagation through time over a
``batchify``-ed token array; ``train_ptb`` and ``evaluate_ptb`` wrap it. Every
function starts with ``np.random.seed(4)`` (the course's fact). Re-exported from
:mod:`needle.apps.simple_ml`.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
from ..autograd import Tensor
from ..backends.numpy_backend import Device
from ..data import get_batch


def _detach(h):
    """The hidden state cut from its graph: a Tensor, a tuple of them (LSTM), or None."""
    if h is None:
        return None
    if isinstance(h, tuple):
        return tuple(_detach(part) for part in h)
    return h.detach()


def epoch_general_ptb(data: np.ndarray, model: nn.Module, seq_len: int = 40,
                      loss_fn: nn.Module = nn.SoftmaxLoss(), opt: optim.Optimizer | None = None,
                      clip: float | None = None, device: Device | None = None,
                      dtype: str = "float32") -> tuple[float, float]:
    """One epoch over ``data`` (nbatch, B) in chunks of ``seq_len``; trains when ``opt`` is given.

    The hidden state starts as None, is carried (detached) from chunk to chunk, and is
    never reset within the epoch. With ``opt``: ``reset_grad``, ``backward``, optional
    ``clip_grad_norm(clip)``, ``step`` per chunk. Returns ``(accuracy, mean loss)``, both
    weighted by tokens (a chunk of L·B tokens counts L·B times).
    """
    np.random.seed(4)
    model.train() if opt is not None else model.eval()
    h = None
    correct = total_loss = tokens = 0.0
    for i in range(0, data.shape[0] - 1, seq_len):
        X, y = get_batch(data, i, seq_len, device=device, dtype=dtype)
        out, h = model(X, h)
        h = _detach(h)
        loss = loss_fn(out, y)
        labels = y.numpy()
        correct += float(np.sum(out.numpy().argmax(axis=1) == labels))
        total_loss += float(loss.numpy()) * labels.shape[0]
        tokens += labels.shape[0]
        if opt is not None:
            opt.reset_grad()
            loss.backward(create_graph=False)  # needle's fast path: constant gradients
            if clip is not None:
                opt.clip_grad_norm(clip)
            opt.step()
    return correct / tokens, total_loss / tokens


def train_ptb(model: nn.Module, data: np.ndarray, seq_len: int = 40, n_epochs: int = 1,
              optimizer: type = optim.SGD, lr: float = 4.0, weight_decay: float = 0.0,
              loss_fn: type = nn.SoftmaxLoss, clip: float | None = None,
              device: Device | None = None, dtype: str = "float32") -> tuple[float, float]:
    """Train for ``n_epochs``; returns the last epoch's ``(accuracy, mean loss)``.

    ``optimizer`` and ``loss_fn`` are classes, instantiated once.
    """
    np.random.seed(4)
    opt = optimizer(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss = loss_fn()
    result = (0.0, 0.0)
    for _ in range(n_epochs):
        result = epoch_general_ptb(data, model, seq_len, loss, opt, clip, device, dtype)
    return result


def evaluate_ptb(model: nn.Module, data: np.ndarray, seq_len: int = 40,
                 loss_fn: type = nn.SoftmaxLoss, device: Device | None = None,
                 dtype: str = "float32") -> tuple[float, float]:
    """One evaluation epoch (eval mode, no updates); returns ``(accuracy, mean loss)``."""
    np.random.seed(4)
    return epoch_general_ptb(data, model, seq_len, loss_fn(), None, None, device, dtype)


__all__ = ["epoch_general_ptb", "train_ptb", "evaluate_ptb"]

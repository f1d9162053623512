"""The course's language-model training loops on PTB-style data (hw4).

``epoch_general_ptb`` runs one epoch of truncated backpropagation through time over a
``batchify``-ed token array; ``train_ptb`` and ``evaluate_ptb`` wrap it. Every
function starts with ``np.random.seed(4)`` (the course's fact). Re-exported from
:mod:`needle.apps.simple_ml`.
"""

from __future__ import annotations

import numpy as np

from typing import Any, Callable, Iterable, Iterator

from .. import nn, optim
from ..autograd import Tensor, no_grad
from ..backends import Device
from ..data import get_batch
from .mlp_resnet import BatchResult


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

    Seeds NumPy with 4 (the course's fact), then runs :func:`lm_epoch` over the
    :func:`~needle.data.get_batch` chunks. Returns ``(accuracy, mean loss)``, both
    weighted by tokens (a chunk of L·B tokens counts L·B times).
    """
    np.random.seed(4)
    err, loss = lm_epoch(bptt_chunks(data, seq_len, device, dtype), model, opt, clip,
                         loss_fn=loss_fn)
    return 1.0 - err, loss


def bptt_chunks(data: np.ndarray, seq_len: int, device: Device | None = None,
                dtype: str = "float32") -> Iterator[tuple[Tensor, Tensor]]:
    """The :func:`~needle.data.get_batch` chunks ``(X (L, B), y (L·B,))`` of ``data`` in order."""
    for i in range(0, data.shape[0] - 1, seq_len):
        yield get_batch(data, i, seq_len, device=device, dtype=dtype)


def lm_epoch(chunks: Iterable[tuple[Tensor, Tensor]], model: nn.Module,
             opt: optim.Optimizer | None = None, clip: float | None = None,
             on_batch: Callable[[BatchResult], None] | None = None,
             loss_fn: nn.Module | None = None, h: Any = None) -> tuple[float, float]:
    """One pass of truncated backpropagation through time over consecutive chunks.

    Sets ``model.train()`` when ``opt`` is given, else ``model.eval()`` (and builds no
    graph). The hidden state starts as ``h`` (None: zeros) and is carried, detached, from
    chunk to chunk (never reset within the pass). With ``opt``, per chunk: ``reset_grad``,
    ``backward``, :func:`~needle.optim.clip_grad_norm` to ``clip`` if given, ``step``.
    Draws no random numbers itself (the model's dropout does).

    Args:
        chunks: ``(X, y)`` pairs: token ids ``(L, B)`` and next-token targets ``(L·B,)``.
        model: maps ``(X, h)`` to ``(logits (L·B, vocabulary), h)``.
        opt: the optimizer; None evaluates.
        clip: the largest global gradient norm (None: no clipping).
        on_batch: called after every chunk with its :class:`BatchResult` (size = tokens,
            errors = wrong arg-max predictions, carry = the hidden state passed on).
        loss_fn: the loss (default :class:`~needle.nn.SoftmaxLoss`, mean over tokens).
        h: the hidden state of the first chunk: None starts afresh; a pass resumed in
            the middle of the text gives the ``carry`` of the chunk before.

    Returns:
        ``(error rate, mean loss)`` over all tokens; ``exp(mean loss)`` is the perplexity.

    Raises:
        ValueError: ``chunks`` was empty.
    """
    model.train() if opt is not None else model.eval()
    loss_fn = nn.SoftmaxLoss() if loss_fn is None else loss_fn
    errors = tokens = 0
    loss_sum = 0.0
    for X, y in chunks:
        if opt is None:
            with no_grad():
                out, h = model(X, h)
                loss = loss_fn(out, y)
        else:
            out, h = model(X, h)
            loss = loss_fn(out, y)
            h = _detach(h)
        labels = y.numpy()
        result = BatchResult(labels.shape[0], float(loss.numpy()),
                             int(np.sum(out.numpy().argmax(axis=1) != labels)), carry=h)
        if opt is not None:
            opt.reset_grad()
            loss.backward(create_graph=False)  # needle's fast path: constant gradients
            if clip is not None:
                optim.clip_grad_norm(opt.params, clip)
            opt.step()
        errors += result.errors
        loss_sum += result.loss * result.size
        tokens += result.size
        if on_batch is not None:
            on_batch(result)
    if tokens == 0:
        raise ValueError("lm_epoch: no chunk to run (the token stream is too short)")
    return errors / tokens, loss_sum / tokens


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


__all__ = ["epoch_general_ptb", "lm_epoch", "bptt_chunks", "train_ptb", "evaluate_ptb"]

"""The course's language-model training loops on PTB-style data (hw4).

``epoch_general_ptb`` runs one epoch of truncated backpropagation through time over a
``batchify``-ed token array; ``train_ptb`` and ``evaluate_ptb`` wrap it. Every
function starts with ``np.random.seed(4)`` (the course's fact). Re-exported from
:mod:`needle.apps.simple_ml`.

The pass is needle's one batch loop, :func:`needle.loop.run_batches`, with the language
task's objective, :class:`~needle.tasks.language.NextToken` (the hidden state carried,
detached, from chunk to chunk), over :func:`~needle.tasks.language.bptt_chunks`.
"""

from __future__ import annotations

import numpy as np

from .. import nn, optim
from ..backends import Device
from ..loop import run_batches
from ..tasks.language import NextToken, bptt_chunks


def epoch_general_ptb(
    data: np.ndarray,
    model: nn.Module,
    seq_len: int = 40,
    loss_fn: nn.Module = nn.SoftmaxLoss(),
    opt: optim.Optimizer | None = None,
    clip: float | None = None,
    device: Device | None = None,
    dtype: str = "float32",
) -> tuple[float, float]:
    """One epoch over ``data`` (nbatch, B) in chunks of ``seq_len``; trains when ``opt`` is given.

    Seeds NumPy with 4 (the course's fact), then runs :func:`~needle.loop.run_batches`
    over the :func:`~needle.data.get_batch` chunks, the hidden state starting as zeros and
    carried (detached) from chunk to chunk; with ``opt``, per chunk: ``reset_grad``,
    ``backward``, :func:`~needle.optim.clip_grad_norm` to ``clip`` if given, ``step``.
    Returns ``(accuracy, mean loss)``, both weighted by tokens (a chunk of L·B tokens
    counts L·B times).
    """
    np.random.seed(4)
    tally = run_batches(
        bptt_chunks(data, seq_len, device, dtype), model, NextToken(loss_fn), opt, clip_grad=clip
    )
    return 1.0 - tally.error_rate, tally.mean_loss


def train_ptb(
    model: nn.Module,
    data: np.ndarray,
    seq_len: int = 40,
    n_epochs: int = 1,
    optimizer: type = optim.SGD,
    lr: float = 4.0,
    weight_decay: float = 0.0,
    loss_fn: type = nn.SoftmaxLoss,
    clip: float | None = None,
    device: Device | None = None,
    dtype: str = "float32",
) -> tuple[float, float]:
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


def evaluate_ptb(
    model: nn.Module,
    data: np.ndarray,
    seq_len: int = 40,
    loss_fn: type = nn.SoftmaxLoss,
    device: Device | None = None,
    dtype: str = "float32",
) -> tuple[float, float]:
    """One evaluation epoch (eval mode, no updates); returns ``(accuracy, mean loss)``."""
    np.random.seed(4)
    return epoch_general_ptb(data, model, seq_len, loss_fn(), None, None, device, dtype)


__all__ = ["epoch_general_ptb", "train_ptb", "evaluate_ptb"]

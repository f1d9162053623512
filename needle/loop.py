"""One pass over batches: the loop behind ``needle train``, ``needle eval``, the course's
epoch functions and the benchmarks' training epochs.

:func:`run_batches` knows no model, data or task. For each batch it asks an *objective*
— the task's hook, :class:`needle.tasks.image.Classification` or
:class:`needle.tasks.language.NextToken` — for the batch's loss, its number of samples,
its errors and what it carries into the next batch (a recurrent model's hidden state);
the loop does the rest:

* evaluation (no optimizer): ``model.eval()``, every forward pass under ``no_grad()``;
* training: ``model.train()``; the loss of each batch is backpropagated, and every
  ``accumulate`` batches (micro-batches) the optimizer steps: gradients are reset before
  a step's first micro-batch, each micro-batch's loss is scaled by 1/``accumulate`` and
  its gradient added (``backward(accumulate=True)``), then the global gradient norm is
  clipped if asked, the optimizer steps, and a per-step learning-rate schedule steps;
* every batch: its :class:`BatchResult` is added to a :class:`Tally` (the pass's
  metrics) and handed to ``on_batch`` (progress bars, mid-epoch checkpoints).

A data-parallel model (:class:`~needle.nn.DistributedDataParallel`) averages the
gradients over the ranks inside ``backward()``; the loop does nothing for it.

Example:
    >>> import numpy as np
    >>> from needle import nn, optim
    >>> from needle.data import DataLoader, NDArrayDataset
    >>> from needle.tasks.image import Classification
    >>> np.random.seed(0)
    >>> X, y = np.random.rand(6, 4).astype("float32"), np.array([0, 1, 2, 0, 1, 2])
    >>> model = nn.Linear(4, 3)
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> tally = run_batches(DataLoader(NDArrayDataset(X, y), 2), model, Classification(), opt)
    >>> tally.batches, tally.samples, opt.param_groups[0]["lr"]
    (3, 6, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from needle import optim
from needle._validation import check_positive_int
from needle.autograd import Tensor, no_grad
from needle.nn import Module

__all__ = ["Forward", "Objective", "BatchResult", "Tally", "run_batches"]


@dataclass(frozen=True)
class Forward:
    """What an objective computes from one batch.

    Attributes:
        loss: the batch's mean loss, a 0-d Tensor (with its graph when training).
        size: the samples it averages over (images; tokens for a language model).
        errors: the samples whose arg-max prediction is wrong.
        carry: what the next batch starts from (a hidden state, detached); None when
            batches are independent.
    """

    loss: Tensor
    size: int
    errors: int
    carry: Any = None


class Objective(Protocol):
    """A task's hook: what a batch is and how its loss and errors are computed."""

    def __call__(self, model: Module, batch: Any, carry: Any) -> Forward:
        """Run ``model`` on ``batch`` (starting from ``carry``) and return its :class:`Forward`."""


@dataclass(frozen=True)
class BatchResult:
    """What one batch contributed to a pass.

    Attributes:
        size: number of samples in the batch.
        loss: the batch's mean loss (before any scaling for accumulation).
        errors: number of samples whose arg-max prediction is not the label.
        carry: what the pass carries from this batch into the next (a recurrent
            model's hidden state); None when batches are independent.
        stepped: True if the optimizer stepped after this batch (the last micro-batch
            of a step); False when evaluating or in the middle of an accumulation.
    """

    size: int
    loss: float
    errors: int
    carry: Any = None
    stepped: bool = False


@dataclass
class Tally:
    """The running sums of a pass: its metrics are ``errors / samples`` and
    ``loss_sum / samples`` (each batch's mean loss weighted by its size).

    Attributes:
        samples, errors, loss_sum: sums over the batches counted.
        batches: every batch seen, counted or not.
        finite_only: leave batches whose loss is not finite out of the sums (a run that
            skips such batches reports the metrics of the others).
    """

    samples: int = 0
    errors: int = 0
    loss_sum: float = 0.0
    batches: int = 0
    finite_only: bool = False

    def add(self, result: BatchResult) -> None:
        """Count one batch."""
        self.batches += 1
        if self.finite_only and not math.isfinite(result.loss):
            return
        self.samples += result.size
        self.errors += result.errors
        self.loss_sum += result.loss * result.size

    @property
    def error_rate(self) -> float:
        """``errors / samples``."""
        return self.errors / self.samples

    @property
    def accuracy(self) -> float:
        """``(samples - errors) / samples``, the fraction predicted right."""
        return (self.samples - self.errors) / self.samples

    @property
    def mean_loss(self) -> float:
        """``loss_sum / samples``: the mean loss per sample."""
        return self.loss_sum / self.samples


def run_batches(
    batches: Iterable,
    model: Module,
    objective: Objective,
    opt: optim.Optimizer | None = None,
    *,
    carry: Any = None,
    accumulate: int = 1,
    num_batches: int | None = None,
    clip_grad: float | None = None,
    schedule: optim.LRScheduler | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    tally: Tally | None = None,
) -> Tally:
    """One pass over ``batches``: train ``model`` with ``opt``, or evaluate it without.

    Args:
        batches: the batches, in order (a loader, or any iterable the objective reads).
        model: the network; ``model.train()`` or ``model.eval()`` is set first.
        objective: computes each batch's :class:`Forward` (see :class:`Objective`).
        opt: the optimizer; None evaluates (no graph is built, nothing changes).
        carry: what the first batch starts from (a hidden state; None: afresh).
        accumulate: micro-batches per optimizer step. The last step of a pass takes the
            k < ``accumulate`` micro-batches left, its losses scaled by 1/k.
        num_batches: how many batches ``batches`` yields; needed with ``accumulate`` > 1
            (default: ``len(batches)``).
        clip_grad: clip the global gradient norm to this before each step (None: no).
        schedule: a per-step learning-rate schedule, stepped after every optimizer step.
        on_batch: called after every batch with its :class:`BatchResult`.
        tally: the sums to continue (a pass resumed in mid-epoch); None: a fresh
            :class:`Tally`.

    Returns:
        the :class:`Tally` of the pass (``.error_rate``, ``.mean_loss``).

    Raises:
        ValueError: ``batches`` yielded no batch, ``accumulate`` is not a positive int,
            or ``accumulate`` > 1 and the number of batches is unknown.
    """
    accumulate = check_positive_int("run_batches", "accumulate", accumulate)
    if accumulate > 1 and num_batches is None:
        num_batches = _length(batches, accumulate)
    model.train() if opt is not None else model.eval()
    tally = Tally() if tally is None else tally
    seen = 0
    for index, batch in enumerate(batches):
        if opt is None:
            with no_grad():
                forward = objective(model, batch, carry)
            stepped = False
        else:
            forward = objective(model, batch, carry)
            group = _group_size(index, accumulate, num_batches)
            stepped = _learn(forward.loss, opt, index % accumulate, group, clip_grad, schedule)
        carry = forward.carry
        result = BatchResult(
            forward.size, float(forward.loss.numpy()), forward.errors, carry, stepped
        )
        tally.add(result)
        seen += 1
        if on_batch is not None:
            on_batch(result)
    if seen == 0:
        raise ValueError(
            "run_batches: no batch to run (an empty dataset, or a token stream "
            "too short for one chunk)"
        )
    return tally


def _length(batches: Iterable, accumulate: int) -> int:
    """``len(batches)``, or a ValueError saying that accumulation needs it."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"run_batches: accumulate={accumulate} needs num_batches (the "
            f"batches given have no len()), to size the last step"
        ) from None


def _group_size(index: int, accumulate: int, num_batches: int | None) -> int:
    """The number of micro-batches in the step that batch ``index`` belongs to."""
    if num_batches is None:
        return accumulate
    return min(accumulate, num_batches - (index - index % accumulate))


def _learn(
    loss: Tensor,
    opt: optim.Optimizer,
    position: int,
    group: int,
    clip_grad: float | None,
    schedule: optim.LRScheduler | None,
) -> bool:
    """Backpropagate micro-batch ``position`` of a step of ``group``; step after the last.

    Returns True if the optimizer stepped.
    """
    if position == 0:
        opt.reset_grad()
    scaled = loss if group == 1 else loss / group
    # create_graph=False: constant gradients, the fast path; later micro-batches add theirs.
    scaled.backward(create_graph=False, accumulate=position > 0)
    if position < group - 1:
        return False
    if clip_grad is not None:
        optim.clip_grad_norm(opt.params, clip_grad)
    opt.step()
    if schedule is not None:
        schedule.step()
    return True

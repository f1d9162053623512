"""The training run behind ``needle train`` and ``needle eval``, for every task.

A run trains a model — by default the course's :func:`~needle.apps.mlp_resnet.MLPResNet`
on Fashion-MNIST; ``--model`` picks another — and, after every epoch, evaluates it on
the test set and writes three files into its output folder:

* ``checkpoint.npz`` — everything needed to continue: the model and optimizer state,
  the learning-rate schedule's state, the number of epochs completed, NumPy's global RNG
  state, the run's :class:`~needle.options.TrainConfig` and the metrics history (written
  with :func:`needle.save`, which replaces the file atomically);
* ``metrics.csv`` — one row per epoch (``epoch, train_loss, train_err, test_loss,
  test_err, seconds``; a task whose loss is per token, language modelling, adds
  ``train_ppl, test_ppl`` before ``seconds``);
* ``curves.png`` — loss and error (and perplexity) against epoch, train and test
  (needs matplotlib).

Each pass over batches — training and evaluation — is the one batch loop,
:func:`needle.loop.run_batches`, with the task's objective (:mod:`needle.tasks`: the
datasets, the model, what a batch is); this module is the run around it: the optimizer
and the learning-rate schedule (:func:`build_optimizer`, :func:`build_schedule`), the
progress bar, the metrics, the files, resume and the distributed plumbing.

The checkpoint is also saved in mid-epoch, every ``--checkpoint-every`` (five minutes by
default; after an optimizer step), with the exact position in the epoch — its batch
order, the batches done, the running tallies and what the task's objective carries from
batch to batch (a language model's hidden state) — so a killed run loses minutes at
most, and resuming from such a checkpoint is bit-identical too.

Randomness: NumPy's global generator is seeded once, with ``--seed``, before the model is
built. Unlike the course's :func:`~needle.apps.mlp_resnet.epoch` it is *not* reseeded
every epoch, so each epoch draws a new shuffle and new dropout masks. Because the
generator's state is saved with every checkpoint, a resumed run draws exactly the
numbers the uninterrupted run would have: both end with bit-identical weights.

Data-parallel runs (after :func:`needle.distributed.init`, as ``mpiexec -n N needle
train`` does): every rank trains a :class:`~needle.nn.DistributedDataParallel` replica on
its :class:`~needle.data.DistributedSampler` shard of each epoch (seeded with ``--seed``
and the epoch), so the global batch is ``batch_size × N``. Every rank starts from rank
0's weights, then reseeds NumPy with ``(seed, rank)`` so ranks draw their own dropout
masks and augmentations. The test set is split over the ranks, and the metrics are sums
over all ranks. Only rank 0 logs, shows progress and writes the files; the checkpoint
holds every rank's generator state, so every rank can resume exactly (with the same
number of processes). See docs/distributed.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import needle as ndl
from needle import distributed, nn, optim, tasks
from needle.loop import BatchResult, Tally, run_batches
from needle.options import ON_NONFINITE, TrainConfig, option_name, to_python
from needle.serialization import atomic_write
from needle.training_errors import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    ResumeMismatchError,
    TrainingError,
)

__all__ = [
    "TrainConfig",
    "EpochMetrics",
    "TrainingError",
    "ConfigError",
    "CheckpointError",
    "NonFiniteError",
    "ON_NONFINITE",
    "ResumeMismatchError",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "CURVES_NAME",
    "Schedule",
    "build_optimizer",
    "build_schedule",
    "train",
    "resume_config",
    "checkpoint_config",
    "load_checkpoint",
    "evaluate_checkpoint",
    "write_metrics_csv",
    "plot_curves",
    "format_epoch_line",
]

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
#: Identifies (and versions) the layout of a training checkpoint.
CHECKPOINT_FORMAT = "needle-train-checkpoint-v2"
#: The layout before the options were grouped: its ``config`` is one flat dict of
#: options, its ``scheduler`` the per-epoch schedule's state (or None). Still read.
CHECKPOINT_FORMAT_V1 = "needle-train-checkpoint-v1"

#: Options a resumed run may change: where the data and files are, (unless the schedule
#: spans exactly the run) how many epochs to run in total, the learning rate (to resume
#: a diverged run more gently) and what to do with non-finite losses.
RESUME_FREE_FIELDS = frozenset(
    {"data_dir", "download", "out", "epochs", "lr", "on_nonfinite", "checkpoint_every"}
)
#: The schedules whose shape depends on the run's --epochs.
_RUN_LENGTH_SCHEDULES = frozenset({"cosine", "onecycle"})


@dataclass(frozen=True)
class EpochMetrics:
    """The metrics of one epoch: mean losses and error rates, and its wall time."""

    epoch: int
    train_loss: float
    train_err: float
    test_loss: float
    test_err: float
    seconds: float


# ----- optimizer, learning-rate schedule -------------------------------------------------


def build_optimizer(model: nn.Module, config: TrainConfig) -> optim.Optimizer:
    """``--optimizer`` (Adam, AdamW or SGD with ``--momentum``) over the model's parameters.

    With ``--no-decay-norm-bias`` the parameters are two groups: the decayed ones and,
    with weight decay 0, those :func:`_exempt_from_decay` picks (biases, norm weights).
    """
    o = config.optim
    params: list = model.parameters()
    if o.no_decay_norm_bias:
        params = _decay_groups(model)
    if o.optimizer == "adam":
        return optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "sgd":
        return optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    raise ValueError(f"build_optimizer: unknown optimizer {o.optimizer!r}; use adam, adamw or sgd")


def _exempt_from_decay(name: str, param: nn.Parameter) -> bool:
    """True for a bias or a normalisation weight: a parameter with one dimension
    (BatchNorm's and LayerNorm's weights and biases, convolution and recurrent biases) or
    one whose name ends in ``bias`` (a Linear layer's bias has shape ``(1, out)``)."""
    return len(param.shape) <= 1 or name.rsplit(".", 1)[-1].startswith("bias")


def _decay_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The model's parameters as two groups: decayed, then exempt (weight decay 0); a group
    with no parameter is left out."""
    named = list(model.named_parameters())
    decayed = [p for name, p in named if not _exempt_from_decay(name, p)]
    exempt = [p for name, p in named if _exempt_from_decay(name, p)]
    groups = [{"params": decayed}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


class Schedule:
    """A run's learning-rate schedule: a part stepped after every optimizer step (by the
    batch loop) and a part stepped after every epoch's evaluation.

    Attributes:
        per_step: a warmup, one-cycle, or a warmup followed by a step or cosine schedule
            counted in optimizer steps; None.
        per_epoch: StepLR, CosineAnnealingLR or ReduceLROnPlateau (on the test loss); None.
    """

    def __init__(
        self, per_step: optim.LRScheduler | None = None, per_epoch: optim.LRScheduler | None = None
    ) -> None:
        self.per_step, self.per_epoch = per_step, per_epoch

    def _warming_up(self) -> bool:
        """True while a warmup that no schedule follows in steps still ramps the rate."""
        warmup = self.per_step
        return (
            isinstance(warmup, optim.LinearWarmup)
            and warmup.after is None
            and warmup.last_epoch < warmup.warmup_steps
        )

    def for_batches(self) -> optim.LRScheduler | None:
        """The scheduler the batch loop steps this epoch. A bare warmup stops once done: it
        would otherwise set the starting rate again over a plateau schedule's decays."""
        if isinstance(self.per_step, optim.LinearWarmup) and self.per_step.after is None:
            return self.per_step if self._warming_up() else None
        return self.per_step

    def after_epoch(self, test_loss: float) -> None:
        """Step the per-epoch part; a plateau schedule watches ``test_loss`` once the warmup
        is over."""
        if isinstance(self.per_epoch, optim.ReduceLROnPlateau):
            if not self._warming_up():
                self.per_epoch.step(test_loss)
        elif self.per_epoch is not None:
            self.per_epoch.step()

    def restart_at(self, lr: float, saved_lr: float, opt: optim.Optimizer) -> None:
        """Give a resumed run the rate ``lr`` where the saved run had ``saved_lr``: a
        closed-form schedule restarts from ``lr`` at the step it had reached; a plateau
        schedule past its warmup has its rate scaled by ``lr / saved_lr`` (keeping its
        decays); a constant rate becomes ``lr``."""
        closed = [
            s
            for s in (self.per_step, self.per_epoch)
            if s is not None and not isinstance(s, optim.ReduceLROnPlateau)
        ]
        for scheduler in closed:
            scheduler.base_lr = lr
        plateau = isinstance(self.per_epoch, optim.ReduceLROnPlateau)
        if plateau and not self._warming_up() and saved_lr > 0:
            for group in opt.param_groups:
                group["lr"] *= lr / saved_lr
        elif closed:
            opt.lr = closed[0].get_last_lr()
        else:
            opt.lr = lr

    def state_dict(self) -> dict[str, Any]:
        """``{"per_step": state or None, "per_epoch": state or None}``."""
        return {
            name: None if s is None else s.state_dict()
            for name, s in (("per_step", self.per_step), ("per_epoch", self.per_epoch))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (ValueError if it is another schedule's)."""
        for name, scheduler in (("per_step", self.per_step), ("per_epoch", self.per_epoch)):
            if (state.get(name) is None) != (scheduler is None):
                raise ValueError(
                    f"its {name.replace('_', '-')} learning-rate schedule does "
                    f"not match this run's --scheduler and --warmup-steps"
                )
            if scheduler is not None:
                scheduler.load_state_dict(state[name])


def build_schedule(opt: optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    """The learning-rate schedule of ``--scheduler`` and ``--warmup-steps`` on ``opt``.

    ``step``, ``cosine`` and ``plateau`` run per epoch, ``onecycle`` per optimizer step over
    the whole run (``--epochs`` × ``steps_per_epoch``). A warmup runs per optimizer step;
    after it, ``step`` and ``cosine`` go on per optimizer step too (``step`` decays every
    ``--step-size`` epochs' worth of steps, ``cosine`` anneals to 0 over the steps left),
    while ``plateau`` starts watching the test loss.

    Raises:
        ConfigError: the warmup is not shorter than the run.
    """
    o = config.optim
    total = o.epochs * steps_per_epoch
    if o.warmup_steps >= total:
        raise ConfigError(
            f"--warmup-steps {o.warmup_steps} is not shorter than the run: "
            f"{total} optimizer steps (--epochs {o.epochs} × {steps_per_epoch} "
            f"per epoch); use fewer warmup steps"
        )
    if o.scheduler == "onecycle":
        return Schedule(per_step=optim.OneCycleLR(opt, max_lr=o.lr, total_steps=total))
    if not o.warmup_steps:
        return Schedule(per_epoch=_epoch_scheduler(opt, config))
    if o.scheduler in ("none", "plateau"):
        # Built first: a scheduler sets the rate when built, and the warmup's 0 must win.
        plateau = _epoch_scheduler(opt, config)
        return Schedule(optim.LinearWarmup(opt, o.warmup_steps), plateau)
    after = (
        optim.StepLR(opt, step_size=o.step_size * steps_per_epoch, gamma=o.gamma)
        if o.scheduler == "step"
        else optim.CosineAnnealingLR(opt, T_max=total - o.warmup_steps)
    )
    return Schedule(per_step=optim.LinearWarmup(opt, o.warmup_steps, after=after))


def _epoch_scheduler(opt: optim.Optimizer, config: TrainConfig) -> optim.LRScheduler | None:
    """The per-epoch scheduler of ``--scheduler`` (none, step, cosine, plateau)."""
    o = config.optim
    if o.scheduler == "step":
        return optim.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
    if o.scheduler == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=o.epochs)
    if o.scheduler == "plateau":
        return optim.ReduceLROnPlateau(opt, factor=o.gamma, patience=o.patience)
    return None


@dataclass
class _Run:
    """The objects of a run: its config, task, loaders, model, optimizer and schedule."""

    config: TrainConfig
    task: tasks.Task
    train_loader: Any  # a DataLoader, or the task's own loader (see Task.loader)
    test_loader: Any
    model: nn.Module
    opt: optim.Optimizer
    schedule: Schedule


def _build_run(config: TrainConfig) -> _Run:
    """Seed NumPy with ``--seed``, load the data, then build model, optimizer and schedule.

    The order matters: the model's initial weights are the first random draws. In a
    data-parallel run the model is wrapped (rank 0's weights go to every rank) and
    each rank then continues with its own random stream.

    Raises:
        ConfigError: ``--clip-grad`` in a data-parallel run, or a warmup as long as the run.
    """
    if distributed.is_initialized():
        _check_data_parallel(config)
    task = tasks.create(config)
    seed = config.run.seed
    np.random.seed(seed)
    train_set, test_set = task.dataset(train=True), task.dataset(train=False)
    model = task.build_model()
    if distributed.is_initialized():
        model = nn.DistributedDataParallel(model)
        np.random.seed([seed, distributed.rank()])
    opt = build_optimizer(model, config)
    train_loader = task.loader(train_set, True)
    schedule = build_schedule(opt, config, math.ceil(len(train_loader) / config.optim.grad_accum))
    return _Run(config, task, train_loader, task.loader(test_set, False), model, opt, schedule)


def _check_data_parallel(config: TrainConfig) -> None:
    """Refuse the options a data-parallel run cannot honour."""
    if config.optim.clip_grad is not None:
        raise ConfigError(
            f"--clip-grad {config.optim.clip_grad:g} in a data-parallel run: "
            f"clipping replaces the gradients DistributedDataParallel averaged, "
            f"and its optimizer step refuses them; drop --clip-grad or train "
            f"on one process"
        )


def _is_rank0() -> bool:
    """True in a single-process run and on rank 0 of a distributed one."""
    return not distributed.is_initialized() or distributed.rank() == 0


def _world_size() -> int | None:
    """The number of ranks of a distributed run; None for a single-process run."""
    return distributed.world_size() if distributed.is_initialized() else None


# ----- one epoch, with a progress bar ---------------------------------------------------


class _ProgressBar:
    """A tqdm bar over one pass showing its :class:`~needle.loop.Tally`: batches, running
    loss and accuracy, samples per second.

    Used as the batch loop's ``on_batch``; disabled, or without tqdm, it does nothing.
    """

    def __init__(self, total: int, desc: str, enabled: bool, tally: Tally) -> None:
        self.tally, self.total = tally, total
        self.start = time.perf_counter()
        self.bar = _make_tqdm(total, desc) if enabled else None
        if self.bar is not None and tally.batches:  # a pass resumed in mid-epoch
            self.bar.update(tally.batches)

    def __call__(self, result: BatchResult) -> None:
        if self.bar is None:
            return
        tally = self.tally
        if tally.samples:
            rate = tally.samples / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(
                f"loss {tally.mean_loss:.4f} acc {tally.accuracy:.4f} {rate:,.0f} samples/s",
                refresh=False,
            )
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _make_tqdm(total: int, desc: str) -> Any:
    """A transient tqdm bar on stderr, or None if tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total, desc=desc, unit="batch", leave=False, file=sys.stderr, dynamic_ncols=True
    )


class _SkipNonFiniteSteps:
    """The run's optimizer, minus the steps whose gradients are not all finite.

    Gradients are checked after they are averaged (a data-parallel model averages them
    during ``backward()``), so every rank skips the same steps.
    """

    def __init__(self, opt: optim.Optimizer, skipped: int = 0) -> None:
        self.opt = opt
        self.params = opt.params  # what clip_grad_norm reads
        self.skipped = skipped

    def reset_grad(self) -> None:
        """The optimizer's ``reset_grad``."""
        self.opt.reset_grad()

    def step(self) -> None:
        """The optimizer's ``step``, unless a gradient holds a NaN or an infinity."""
        if all(p.grad is None or np.isfinite(p.grad.numpy()).all() for p in self.params):
            self.opt.step()
        else:
            self.skipped += 1


@dataclass
class _Position:
    """Where a run stands inside an epoch: what a mid-epoch checkpoint keeps.

    Attributes:
        epoch: the epoch in progress (1-based).
        order: the epoch's batches, each an array of sample indices (the loader's
            ``batch_indices()``, drawn when the epoch started).
        done: the batches of ``order`` trained so far.
        samples, errors, loss_sum: the partial epoch's running tallies (its metrics).
        skipped: steps skipped for non-finite gradients (``--on-nonfinite skip-batch``).
        seconds: the time spent on the epoch so far.
        carry: what the task's pass carries into the next batch (a hidden state).
    """

    epoch: int
    order: list[np.ndarray]
    done: int = 0
    samples: int = 0
    errors: int = 0
    loss_sum: float = 0.0
    skipped: int = 0
    seconds: float = 0.0
    carry: Any = None

    def to_state(self) -> dict[str, Any]:
        """The position as a tree :func:`needle.save` stores (the order as one array)."""
        return {
            "epoch": self.epoch,
            "order": np.concatenate(self.order).astype(np.int64),
            "sizes": np.array([len(batch) for batch in self.order], dtype=np.int64),
            "done": self.done,
            "samples": self.samples,
            "errors": self.errors,
            "loss_sum": self.loss_sum,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "carry": self.carry,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Position:
        """The position :meth:`to_state` saved (KeyError, TypeError or ValueError if damaged)."""
        sizes = np.asarray(state["sizes"], dtype=np.int64)
        order = np.asarray(state["order"], dtype=np.int64)
        if sizes.ndim != 1 or (sizes < 0).any() or sizes.sum() != order.size:
            raise ValueError("the saved batch order is inconsistent")
        return cls(
            int(state["epoch"]),
            np.split(order, np.cumsum(sizes)[:-1]),
            int(state["done"]),
            int(state["samples"]),
            int(state["errors"]),
            float(state["loss_sum"]),
            int(state["skipped"]),
            float(state["seconds"]),
            state["carry"],
        )

    def describe(self) -> str:
        """``epoch 3, batch 40 of 120``."""
        return f"epoch {self.epoch}, batch {self.done} of {len(self.order)}"


def _epoch_order(run: _Run, number: int) -> list[np.ndarray]:
    """Draw epoch ``number``'s batch order (the shuffle's random draw happens here)."""
    if run.train_loader.sampler is not None:
        run.train_loader.sampler.set_epoch(number - 1)  # explicit, so a resumed run agrees
    return run.train_loader.batch_indices()


class _Checkpoints:
    """Writes the run's checkpoint: at every epoch's end and every ``--checkpoint-every``.

    Every rank calls it alike (a checkpoint gathers every rank's state); rank 0 writes.
    ``holds`` says what the file holds (None: nothing written by this run or before it).
    """

    def __init__(self, run: _Run, history: list[EpochMetrics], holds: str | None) -> None:
        self.run, self.history, self.holds = run, history, holds
        self.interval = run.config.run.checkpoint_interval
        self.write = _is_rank0()
        self._restart()

    def _restart(self) -> None:
        self.steps, self.since = 0, time.monotonic()

    def after_step(self, position: Callable[[], _Position]) -> None:
        """Count a training step; save ``position()`` when the interval says so."""
        self.steps += 1
        if not self._due():
            return
        where = position()
        _check_finite_weights(self.run.model, f"at {where.describe()}")
        state = _checkpoint_state(self.run, where.epoch - 1, self.history, where)
        if self.write:
            ndl.save(state, Path(self.run.config.run.out) / CHECKPOINT_NAME)
        self.holds = where.describe()
        self._restart()

    def _due(self) -> bool:
        due = self.interval.due(self.steps, time.monotonic() - self.since)
        if self.interval.seconds is not None and distributed.is_initialized():
            # Clocks differ between ranks, and saving is a collective: rank 0's decides.
            due = bool(distributed.broadcast(np.array([due], dtype=np.int64))[0])
        return due

    def after_epoch(self, number: int) -> None:
        """Write the checkpoint, metrics and curves of epoch ``number`` (just appended)."""
        _check_finite_weights(self.run.model, f"after epoch {number}")
        _write_outputs(self.run, Path(self.run.config.run.out), number, self.history, self.write)
        self.holds = f"epoch {number}"
        self._restart()


def _train_and_evaluate(
    run: _Run, number: int, progress: bool, position: _Position | None, checkpoints: _Checkpoints
) -> tuple[EpochMetrics, str]:
    """Train epoch ``number`` (from ``position`` if resumed in it), evaluate in
    ``model.eval()``, step the per-epoch schedule; time it.

    Returns the metrics and a note on the batches skipped (empty when none was).
    """
    if position is None:
        position = _Position(number, _epoch_order(run, number))
    start = time.perf_counter() - position.seconds
    total = len(position.order)
    o = run.config.optim
    skip = run.config.run.on_nonfinite == "skip-batch"
    opt = _SkipNonFiniteSteps(run.opt, position.skipped) if skip else run.opt
    # Non-finite losses stay out of the metrics (and stop the run unless skipped).
    tally = Tally(
        position.samples, position.errors, position.loss_sum, position.done, finite_only=True
    )
    bar = _ProgressBar(total, f"epoch {number}/{o.epochs}", progress, tally)

    def after_batch(result: BatchResult) -> None:
        if not skip and not math.isfinite(result.loss):
            raise NonFiniteError(
                f"the training loss is {result.loss} at epoch {number}, "
                f"batch {tally.batches} of {total}: the run diverged"
            )
        bar(result)
        if result.stepped and tally.batches < total:  # the epoch's end saves anyway
            checkpoints.after_step(
                lambda: _Position(
                    number,
                    position.order,
                    tally.batches,
                    tally.samples,
                    tally.errors,
                    tally.loss_sum,
                    opt.skipped if skip else 0,
                    time.perf_counter() - start,
                    result.carry,
                )
            )

    try:
        run_batches(
            run.train_loader.batches(position.order[position.done :]),
            run.model,
            run.task.objective,
            opt,
            carry=position.carry,
            accumulate=o.grad_accum,
            num_batches=total - position.done,
            clip_grad=o.clip_grad,
            schedule=run.schedule.for_batches(),
            on_batch=after_batch,
            tally=tally,
        )
    finally:
        bar.close()
    test_tally = _evaluate(run, f"epoch {number}/{o.epochs} test", progress)
    train_err, train_loss = _epoch_rates(tally, f"epoch {number}")
    test_err, test_loss = _epoch_rates(test_tally, "the test pass")
    run.schedule.after_epoch(test_loss)
    note = (
        f"epoch {number}: skipped {opt.skipped} of {total} batches whose gradients were not finite"
        if skip and opt.skipped
        else ""
    )
    return EpochMetrics(
        number, train_loss, train_err, test_loss, test_err, time.perf_counter() - start
    ), note


def _evaluate(run: _Run, desc: str, progress: bool) -> Tally:
    """The test pass of the model in ``model.eval()`` mode (this rank's share)."""
    tally = Tally()
    bar = _ProgressBar(len(run.test_loader), desc, progress, tally)
    try:
        if len(run.test_loader):
            run_batches(run.test_loader, run.model, run.task.objective, on_batch=bar, tally=tally)
        else:  # a rank with no test sample (fewer than N): it still joins eval()'s collective
            run.model.eval()
    finally:
        bar.close()
    return tally


def _epoch_rates(tally: Tally, what: str) -> tuple[float, float]:
    """``(error rate, mean loss)`` of a pass, over the samples of every rank.

    Raises:
        NonFiniteError: no batch of the pass had a finite loss (they were all left out).
    """
    errors, loss_sum, samples = tally.errors, tally.loss_sum, tally.samples
    if distributed.is_initialized():
        totals = np.array([errors, loss_sum, samples], dtype=np.float64)
        errors, loss_sum, samples = distributed.all_reduce(totals).tolist()
    if samples == 0:
        raise NonFiniteError(f"no batch of {what} had a finite loss: the run diverged")
    return errors / samples, loss_sum / samples


def _check_finite_weights(model: nn.Module, when: str) -> None:
    """Raise NonFiniteError if a parameter holds a NaN or an infinity (``when``: e.g.
    ``after epoch 3``, for the message)."""
    for name, array in model.state_dict().items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise NonFiniteError(f"the model's {name} is not finite {when}: the run diverged")


def format_epoch_line(metrics: EpochMetrics, epochs: int, perplexity: bool = False) -> str:
    """The one-line summary of an epoch (with ``perplexity``, also ``exp(loss)``).

    Example:
        >>> format_epoch_line(EpochMetrics(3, 0.41234, 0.15021, 0.40123, 0.14333, 12.31), 10)
        'epoch 3/10  train loss 0.4123 err 0.1502  test loss 0.4012 err 0.1433  12.3s'
        >>> line = format_epoch_line(EpochMetrics(1, 5.0, 0.8, 4.5, 0.7, 60.0), 2, True)
        >>> line.split("  ")[1:3]
        ['train loss 5.0000 err 0.8000 ppl 148.41', 'test loss 4.5000 err 0.7000 ppl 90.02']
    """
    m = metrics

    def split(name: str, loss: float, err: float) -> str:
        ppl = f" ppl {math.exp(loss):.2f}" if perplexity else ""
        return f"{name} loss {loss:.4f} err {err:.4f}{ppl}"

    return (
        f"epoch {m.epoch}/{epochs}  {split('train', m.train_loss, m.train_err)}  "
        f"{split('test', m.test_loss, m.test_err)}  {m.seconds:.1f}s"
    )


# ----- output files ----------------------------------------------------------------------


def write_metrics_csv(
    path: str | os.PathLike, history: Iterable[EpochMetrics], perplexity: bool = False
) -> None:
    """Write (atomically) one CSV row per epoch with a header naming the columns.

    ``perplexity`` adds ``train_ppl`` and ``test_ppl`` (``exp`` of the mean losses)
    after ``test_err``.
    """
    columns = [f.name for f in dataclasses.fields(EpochMetrics)]
    extra = ["train_ppl", "test_ppl"] if perplexity else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns[:-1] + extra + columns[-1:])
    for m in history:
        values = [repr(getattr(m, c)) for c in columns[:-1]]
        values += [repr(math.exp(m.train_loss)), repr(math.exp(m.test_loss))] if perplexity else []
        writer.writerow(values + [f"{m.seconds:.3f}"])
    atomic_write(path, lambda file: file.write(buffer.getvalue().encode()))


#: The panels of curves.png: (title, y label, the value of an epoch's split, log scale).
_PANELS: dict[str, tuple[str, Callable[[EpochMetrics, str], float], bool]] = {
    "loss": ("mean loss", lambda m, split: getattr(m, f"{split}_loss"), False),
    "error": ("error rate", lambda m, split: getattr(m, f"{split}_err"), False),
    "perplexity": (
        "perplexity (log scale)",
        lambda m, split: math.exp(getattr(m, f"{split}_loss")),
        True,
    ),
}


def plot_curves(
    path: str | os.PathLike, history: list[EpochMetrics], perplexity: bool = False
) -> bool:
    """Plot loss and error (and with ``perplexity``, ``exp(loss)``) against epoch, atomically.

    Train and test in every panel. Uses matplotlib's Agg canvas directly, so no GUI
    backend is touched.

    Returns:
        False (and writes nothing) if matplotlib is not installed, else True.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    names = ["loss", "error"] + (["perplexity"] if perplexity else [])
    fig = Figure(figsize=(5 * len(names), 4), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = [m.epoch for m in history]
    for ax, name in zip(fig.subplots(1, len(names)), names):
        label, value, log_scale = _PANELS[name]
        for split in ("train", "test"):
            ax.plot(epochs, [value(m, split) for m in history], marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if log_scale:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=100))
    return True


# ----- checkpoints ----------------------------------------------------------------------


def _checkpoint_state(
    run: _Run, epoch: int, history: list[EpochMetrics], position: _Position | None = None
) -> dict[str, Any]:
    """Everything a resumed run needs, as a tree :func:`needle.save` can store.

    ``epoch``: the epochs completed; ``position``: where the run stands in the next one
    (None at the end of an epoch). A distributed run adds its ``world_size``, every
    rank's generator state (``rng_states``, by rank) and every rank's position
    (``positions``); gathering them is a collective.
    """
    saved_position = None if position is None else position.to_state()
    extra = {}
    if distributed.is_initialized():
        extra = {
            "world_size": distributed.world_size(),
            "rng_states": distributed.all_gather_object(np.random.get_state()),
            "positions": distributed.all_gather_object(saved_position),
        }
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": run.config.to_dict(),
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "rng_state": np.random.get_state(),
        "position": saved_position,
        "history": [dataclasses.asdict(m) for m in history],
        "task": run.task.state(),
        **extra,
    }


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`train` (a ``v1`` one is upgraded: its
    schedule state is put in the current layout; :meth:`TrainConfig.from_dict` reads its
    flat options).

    Raises:
        CheckpointError: the file is missing, unreadable, or not a training checkpoint
            (the message names the file).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = ndl.load(path)
    except Exception as e:  # any failure to parse means the file is not usable
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0]
        ) from e
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT_V1:
        return _upgraded_v1(state)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a needle training checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    return state


def _upgraded_v1(state: dict[str, Any]) -> dict[str, Any]:
    """A ``v1`` checkpoint in the current layout: its one per-epoch schedule state becomes
    the schedule's ``per_epoch`` part (v1 had no per-step schedules)."""
    return {
        **state,
        "format": CHECKPOINT_FORMAT,
        "scheduler": {"per_step": None, "per_epoch": state.get("scheduler")},
    }


def _checkpoint_config(state: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint, or CheckpointError."""
    try:
        config = TrainConfig.from_dict(dict(state["config"]))
        tasks.check_config(config)
    except (KeyError, TypeError, TrainingError) as e:
        raise CheckpointError(
            f"{os.fspath(path)}: the run's saved options are invalid ({e})"
        ) from e
    return config


def checkpoint_config(path: str | os.PathLike, state: dict[str, Any] | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of the run saved in a checkpoint file.

    ``state``: the file's content if already read with :func:`load_checkpoint`.

    Raises:
        CheckpointError: the file is missing, unreadable or not a training checkpoint.
    """
    return _checkpoint_config(load_checkpoint(path) if state is None else state, path)


def resume_config(out: str | os.PathLike, overrides: dict[str, Any]) -> TrainConfig:
    """The config of the run saved in ``out``, with ``overrides`` applied.

    Args:
        out: the run's output folder (holding ``checkpoint.npz``).
        overrides: option values (by name) given explicitly for the resumed run.

    Raises:
        CheckpointError: no readable checkpoint in ``out``.
    """
    path = Path(out) / CHECKPOINT_NAME
    saved = _checkpoint_config(load_checkpoint(path), path)
    return saved.replace(**{**overrides, "out": os.fspath(out)})


def _check_resumable(saved: TrainConfig, config: TrainConfig, path: Path) -> None:
    """Raise ResumeMismatchError if ``config`` changes what the saved run was."""
    before, after = saved.options(), config.options()
    changed = [
        f"{option_name(name)} {before[name]!r} -> {after[name]!r}"
        for name in before
        if name not in RESUME_FREE_FIELDS and before[name] != after[name]
    ]
    scheduler = config.optim.scheduler
    if scheduler in _RUN_LENGTH_SCHEDULES and saved.optim.epochs != config.optim.epochs:
        changed.append(_run_length_note(scheduler, saved.optim.epochs, config.optim.epochs))
    if changed:
        raise ResumeMismatchError(
            f"cannot resume {path}: the run was started with other options "
            f"({'; '.join(changed)}). Resume with the original options (omitted options are "
            f"taken from the checkpoint), or start a new run with another --out."
        )


def _run_length_note(scheduler: str, saved: int, asked: int) -> str:
    """Why ``--epochs`` cannot change on resume under a schedule spanning the run."""
    what = (
        "anneals the learning rate to 0 over exactly the run's --epochs"
        if scheduler == "cosine"
        else "rises and falls over exactly the run's --epochs"
    )
    return (
        f"--epochs {saved} -> {asked}: a {scheduler} schedule {what}, so a {scheduler} "
        f"run cannot be extended or shortened; to train on, start a new run with the "
        f"--epochs you want"
    )


def _check_task_state(state: dict[str, Any], task: tasks.Task, path: Path) -> None:
    """Raise ResumeMismatchError if the task's state (a vocabulary) is not the saved one."""
    if state.get("task", {}) != task.state():
        raise ResumeMismatchError(
            f"cannot resume {path}: the data have changed since the run started (the "
            f"task's saved state, e.g. a language model's vocabulary, differs); restore "
            f"the original files or start a new run with another --out"
        )


def _count(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` and the noun in the right number.

    Example:
        >>> _count(1, "epoch"), _count(3, "epoch"), _count(2, "process", "processes")
        ('1 epoch', '3 epochs', '2 processes')
    """
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _processes(count: int) -> str:
    """``"1 process"``, ``"3 processes"``."""
    return _count(count, "process", "processes")


def _check_world_size(state: dict[str, Any], path: Path) -> None:
    """Raise ResumeMismatchError unless this run has as many ranks as the saved one."""

    def describe(size: int | None) -> str:
        return "a single-process run" if size is None else f"a run on {_processes(size)}"

    saved, now = to_python(state.get("world_size")), _world_size()
    if saved != now:
        raise ResumeMismatchError(
            f"cannot resume {path}: it was {describe(saved)} and this is {describe(now)}; "
            f"resume with the same number of processes (the global batch and the "
            f"per-rank random streams depend on it)"
        )


def _restore(
    run: _Run,
    state: dict[str, Any],
    path: Path,
) -> tuple[int, list[EpochMetrics], _Position | None]:
    """Load model, optimizer, schedule and RNG state; return (epochs done, history, the
    position in the next epoch: None unless the checkpoint was saved in mid-epoch)."""
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.schedule.load_state_dict(state["scheduler"])
        history = [
            EpochMetrics(**{k: to_python(v) for k, v in m.items()}) for m in state["history"]
        ]
        epoch = int(state["epoch"])
        rng_state = state["rng_state"]
        if distributed.is_initialized():
            rng_state = state["rng_states"][distributed.rank()]
        np.random.set_state(tuple(rng_state))
        position = _saved_position(state, run, epoch)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot restore from {path}: {e}") from e
    return epoch, history, position


def _saved_position(state: dict[str, Any], run: _Run, epoch: int) -> _Position | None:
    """This rank's position in epoch ``epoch + 1`` saved in ``state`` (None: at an epoch's end).

    Raises:
        ValueError: the position does not fit this run's loader (a damaged checkpoint).
    """
    saved = state.get("position")
    if distributed.is_initialized() and saved is not None:
        saved = state["positions"][distributed.rank()]
    if saved is None:
        return None
    position = _Position.from_state(saved)
    if (
        position.epoch != epoch + 1
        or len(position.order) != len(run.train_loader)
        or not 0 < position.done < len(position.order)
    ):
        raise ValueError(
            f"its position in the epoch ({position.describe()}, after "
            f"{_count(epoch, 'epoch')}) does not fit this run's "
            f"{len(run.train_loader)} batches per epoch"
        )
    return position


# ----- the run --------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[EpochMetrics]:
    """Train ``config``'s model, writing checkpoint, metrics and curves every epoch.

    Args:
        config: the run (see :class:`TrainConfig`).
        resume: continue the run saved in ``--out`` from the epoch after the last
            completed one; the result is bit-identical to an uninterrupted run.
        progress: show a tqdm progress bar (only when stderr is a terminal).
        log: called with the header and each epoch's summary line; None is silent.
            In a distributed run (after :func:`needle.distributed.init`) only rank 0
            logs, shows progress and writes files; every rank must call ``train``.

    Returns:
        the metrics of every epoch of the run (including those before a resume).

    Raises:
        TrainingError: an unknown model or dataset.
        needle.data.DatasetNotFoundError: the data files are missing.
        CheckpointError: ``resume`` and no readable checkpoint in ``--out``.
        ResumeMismatchError: ``resume`` with options that differ from the saved run's
            (or with another number of processes).
        needle.distributed.PeerLostError: a rank of a distributed run died.
        NonFiniteError: the training loss (``on_nonfinite="stop"``) or the weights
            stopped being finite; nothing was saved for that epoch, and the message
            says which checkpoint is left and how to resume with a smaller ``lr``.
    """
    rank0 = _is_rank0()
    log = log if log is not None and rank0 else (lambda line: None)
    out = Path(config.run.out)
    checkpoint_path = out / CHECKPOINT_NAME
    state = load_checkpoint(checkpoint_path) if resume else None
    if state is not None:
        _check_resumable(_checkpoint_config(state, checkpoint_path), config, checkpoint_path)
        _check_world_size(state, checkpoint_path)
    replaced = None if resume or not rank0 else _replacement_note(checkpoint_path)
    if replaced:
        log(replaced)
    run = _build_run(config)
    if state is not None:
        _check_task_state(state, run.task, checkpoint_path)
    done, history, position = (
        _restore(run, state, checkpoint_path) if state is not None else (0, [], None)
    )
    if state is not None:
        saved_lr = _checkpoint_config(state, checkpoint_path).optim.lr
        if saved_lr != config.optim.lr:  # a diverged run resumed more gently
            run.schedule.restart_at(config.optim.lr, saved_lr, run.opt)
    log(_header(run, done, position))
    show_bar = progress and rank0 and sys.stderr.isatty()
    notice = missing_extras_notice(progress_bar=show_bar)
    if notice:
        log(notice)
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
    # Overflows are expected when a run diverges, and reported as one error instead.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _train_epochs(run, done, history, position, show_bar, log)
    return history


def _replacement_note(path: Path) -> str | None:
    """The line saying that a new run replaces the one saved at ``path`` (None: no run)."""
    if not path.is_file():
        return None
    try:
        saved = checkpoint_config(path)
        what = f"the {saved.network.model} run on {saved.data.dataset}"
    except CheckpointError:
        what = "the unreadable checkpoint"
    return (
        f"note: this run replaces {what} in {path.parent} (--out DIR keeps runs "
        f"apart; --resume continues it)"
    )


def _train_epochs(
    run: _Run,
    done: int,
    history: list[EpochMetrics],
    position: _Position | None,
    show_bar: bool,
    log: Callable[[str], None],
) -> None:
    """Train the epochs after ``done`` (the first from ``position`` if given), writing the
    outputs after each and the checkpoint every ``--checkpoint-every`` (see :func:`train`)."""
    config = run.config
    holds = position.describe() if position else f"epoch {done}" if done else None
    checkpoints = _Checkpoints(run, history, holds)
    try:
        for number in range(done + 1, config.optim.epochs + 1):
            metrics, note = _train_and_evaluate(run, number, show_bar, position, checkpoints)
            position = None
            history.append(metrics)
            checkpoints.after_epoch(number)
            if note:
                log(note)
            log(format_epoch_line(history[-1], config.optim.epochs, run.task.perplexity))
    except NonFiniteError as error:
        advice = _divergence_advice(config, checkpoints.holds)
        raise NonFiniteError(f"{error}. {advice}") from None


def _divergence_advice(config: TrainConfig, holds: str | None) -> str:
    """What was kept of a diverged run (``holds``: what its checkpoint holds, e.g.
    ``epoch 2``; None: nothing), and the command that goes on more gently."""
    lr, out = config.optim.lr, config.run.out
    smaller = f"--lr {lr / 10:g}"
    skip = (
        ""
        if config.run.on_nonfinite == "skip-batch"
        else "; or --on-nonfinite skip-batch to skip such batches"
    )
    if holds is None:
        return (
            f"Stopped before any checkpoint was written; start again with a smaller "
            f"learning rate than {lr:g}, e.g. {smaller}{skip}"
        )
    return (
        f"Stopped without saving: {Path(out) / CHECKPOINT_NAME} still holds "
        f"{holds}. Resume from it with a smaller learning rate than {lr:g}: "
        f"needle train --resume --out {out} {smaller}{skip}"
    )


def missing_extras_notice(*, progress_bar: bool) -> str | None:
    """One line saying which training extras are missing and what that turns off, or None.

    ``progress_bar``: whether a progress bar would be shown (so a missing tqdm matters).
    """
    import importlib.util

    off = []
    if progress_bar and importlib.util.find_spec("tqdm") is None:
        off.append(("tqdm", "no progress bar"))
    if importlib.util.find_spec("matplotlib") is None:
        off.append(("matplotlib", f"no {CURVES_NAME}"))
    if not off:
        return None
    what = "; ".join(f"{name} is not installed: {effect}" for name, effect in off)
    names = " ".join(name for name, _ in off)
    return f"note: {what}. Turn it on with: pip install 'needle-dl[train]' (or pip install {names})"


def _header(run: _Run, done: int, position: _Position | None) -> str:
    """The line printed before training starts."""
    o = run.config.optim
    n_train, n_test = len(run.train_loader.dataset), len(run.test_loader.dataset)
    what = (
        f"{run.task.describe()} ({n_train} train / {n_test} test), {o.optimizer} "
        f"lr {o.lr:g}{_schedule_text(o)}, batch {o.batch_size}{_accumulation_text(o)}, "
        f"weight decay {o.weight_decay:g}"
        f"{' (not on biases and norms)' if o.no_decay_norm_bias else ''}"
        f"{f', clip {o.clip_grad:g}' if o.clip_grad is not None else ''}, "
        f"{_count(o.epochs, 'epoch')} -> {run.config.run.out}"
    )
    ranks = _world_size()
    if ranks is not None:
        what += (
            f"; data-parallel on {_processes(ranks)}, global batch "
            f"{o.batch_size * o.grad_accum * ranks}"
        )
    if done >= o.epochs:
        return f"{what}: already {_count(done, 'epoch')} done, nothing to train"
    if position is not None:
        return f"{what}, resuming at {position.describe()}"
    return f"{what}, resuming after epoch {done}" if done else what


def _schedule_text(o: Any) -> str:
    """`` (warmup 100 steps, cosine schedule)`` for the header; empty for a constant rate."""
    parts = [f"warmup {_count(o.warmup_steps, 'step')}"] if o.warmup_steps else []
    parts += [f"{o.scheduler} schedule"] if o.scheduler != "none" else []
    return f" ({', '.join(parts)})" if parts else ""


def _accumulation_text(o: Any) -> str:
    """`` × 4 micro-batches per step`` for the header; empty without accumulation."""
    return f" × {o.grad_accum} micro-batches per step" if o.grad_accum > 1 else ""


def _write_outputs(
    run: _Run, out: Path, epoch: int, history: list[EpochMetrics], write: bool
) -> None:
    """Write the checkpoint, the metrics CSV and the curves after ``epoch`` if ``write``.

    Every rank must call it: the checkpoint state gathers every rank's generator state.
    """
    state = _checkpoint_state(run, epoch, history)
    if not write:
        return
    ndl.save(state, out / CHECKPOINT_NAME)
    write_metrics_csv(out / METRICS_NAME, history, run.task.perplexity)
    plot_curves(out / CURVES_NAME, history, run.task.perplexity)


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> tuple[float, float, int]:
    """Rebuild the model saved in a training checkpoint and evaluate it on the test set.

    Args:
        path: a ``checkpoint.npz`` written by :func:`train`.
        progress: show a progress bar over the test batches (tqdm, on stderr).
        log: called with one line saying what is evaluated on what, before the pass
            starts (None: silent).
        **overrides: options replacing the saved ones (e.g. ``dataset``, ``data_dir``,
            ``batch_size``, ``limit_test``).

    Returns:
        ``(test_err, test_loss, number of test samples)``.

    Raises:
        CheckpointError: the file is missing, unreadable or not a training checkpoint.
        TrainingError: the model cannot take the images of the dataset asked for.
        needle.data.DatasetNotFoundError: the data files are missing.
    """
    state = load_checkpoint(path)
    saved = _checkpoint_config(state, path)
    config = saved.replace(**overrides)
    task = tasks.create(config)
    task.check_eval_data(saved, state.get("task", {}))
    model = task.build_model()
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot load the model from {os.fspath(path)}: {e}") from e
    test_set = task.dataset(train=False)
    loader = task.loader(test_set, False)
    if log is not None:
        log(
            f"evaluating {os.fspath(path)} ({config.network.model}) on {len(test_set)} "
            f"{config.data.dataset} test samples"
        )
    tally = Tally()
    bar = _ProgressBar(len(loader), "test", progress, tally)
    try:
        err, loss = task.run_epoch(loader, model, on_batch=bar)
    finally:
        bar.close()
    return err, loss, len(test_set)

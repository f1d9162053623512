"""The training loop behind ``needle train`` and ``needle eval``, for every task.

A run trains a model — by default the course's :func:`~needle.apps.mlp_resnet.MLPResNet`
on Fashion-MNIST; ``config.model`` picks another — and, after every epoch, evaluates
it on the test set and writes three files into its output folder:

* ``checkpoint.npz`` — everything needed to continue: the model and optimizer state,
  the scheduler state, the number of epochs completed, NumPy's global RNG state, the
  run's :class:`TrainConfig` and the metrics history (written with :func:`needle.save`,
  which replaces the file atomically);
* ``metrics.csv`` — one row per epoch (``epoch, train_loss, train_err, test_loss,
  test_err, seconds``; a task whose loss is per token, language modelling, adds
  ``train_ppl, test_ppl`` before ``seconds``);
* ``curves.png`` — loss and error (and perplexity) against epoch, train and test
  (needs matplotlib).

The checkpoint is also saved in mid-epoch, every ``config.checkpoint_every`` (five
minutes by default), with the exact position in the epoch — its batch order, the
batches done, the running tallies and what the task's pass carries from batch to batch
(a language model's hidden state) — so a killed run loses minutes at most, and
resuming from such a checkpoint is bit-identical too.

Randomness: NumPy's global generator is seeded once, with ``config.seed``, before the
model is built. Unlike the course's :func:`~needle.apps.mlp_resnet.epoch` it is *not*
reseeded every epoch, so each epoch draws a new shuffle and new dropout masks. Because
the generator's state is saved with every checkpoint, a resumed run draws exactly the
numbers the uninterrupted run would have: both end with bit-identical weights.

Data-parallel runs (after :func:`needle.distributed.init`, as ``mpiexec -n N needle
train`` does): every rank trains a :class:`~needle.nn.DistributedDataParallel` replica on
its :class:`~needle.data.DistributedSampler` shard of each epoch (seeded with
``config.seed`` and the epoch), so the global batch is ``batch_size × N``. Every rank
starts from rank 0's weights, then reseeds NumPy with ``(seed, rank)`` so ranks draw their
own dropout masks and augmentations. The test set is split over the ranks, and the
metrics are sums over all ranks. Only rank 0 logs, shows progress and writes the files;
the checkpoint holds every rank's generator state, so every rank can resume exactly
(with the same number of processes). See docs/distributed.md.

What is trained on what comes from the run's task (:mod:`needle.tasks`: the datasets,
the model, one pass over a loader); this module is the loop around it: the progress
bar, the metrics, the files, resume and the distributed plumbing.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

import needle as ndl
from needle import distributed, nn, optim, options, tasks
from needle.apps.mlp_resnet import BatchResult
from needle.options import CheckpointInterval
from needle.serialization import atomic_write

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
    "build_optimizer",
    "build_scheduler",
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
CHECKPOINT_FORMAT = "needle-train-checkpoint-v1"


class TrainingError(Exception):
    """A problem with a run the user can fix (bad checkpoint, mismatched resume, ...)."""


class ConfigError(TrainingError, ValueError):
    """A :class:`TrainConfig` field holds a value its option does not accept."""


class CheckpointError(TrainingError):
    """A checkpoint file is missing, unreadable or not a needle training checkpoint."""


class ResumeMismatchError(TrainingError):
    """``--resume`` was asked with options that contradict the checkpoint's run.

    Every rank of a distributed run checks the same checkpoint and options, so every
    rank raises it at the same point: ``every_rank`` tells the command line to report
    it once (rank 0).
    """

    every_rank = True


class NonFiniteError(TrainingError):
    """The training loss or the weights stopped being finite numbers: the run diverged."""


#: What a run does with a batch whose loss or gradients are not finite (``--on-nonfinite``).
ON_NONFINITE = ("stop", "skip-batch")

#: ``--checkpoint-every``'s default: a killed run loses at most five minutes of training,
#: for a save that takes well under a second for needle's models (a few MB).
DEFAULT_CHECKPOINT_EVERY = "5m"

#: The rule of every TrainConfig field that is not a model or dataset name (those are
#: checked by :func:`needle.tasks.create`); ``*_OPTIONAL`` ones may also be None.
FIELD_RULES: dict[str, options.Rule] = {
    "epochs": options.POSITIVE_INT, "batch_size": options.POSITIVE_INT,
    "lr": options.NON_NEGATIVE_FLOAT, "weight_decay": options.NON_NEGATIVE_FLOAT,
    "hidden_dim": options.SIZE, "num_blocks": options.COUNT,
    "drop_prob": options.PROBABILITY, "width": options.SIZE, "seq_len": options.SIZE,
    "embedding_dim": options.SIZE, "num_layers": options.SIZE,
    "optimizer": options.choice("adam", "sgd"), "momentum": options.PROBABILITY,
    "scheduler": options.choice("none", "step", "cosine"),
    "step_size": options.POSITIVE_INT, "gamma": options.UNIT_INTERVAL,
    "crop_padding": options.COUNT, "seed": options.SEED, "out": options.PATH,
    "on_nonfinite": options.choice(*ON_NONFINITE),
    "checkpoint_every": options.CHECKPOINT_EVERY,
}
OPTIONAL_RULES: dict[str, options.Rule] = {
    "data_dir": options.PATH, "clip_grad": options.POSITIVE_FLOAT,
    "limit_train": options.POSITIVE_INT, "limit_test": options.POSITIVE_INT,
}
_FLAGS = ("download", "augment")


def option_name(field: str) -> str:
    """The command-line option of a TrainConfig field: ``--hidden-dim`` for ``hidden_dim``."""
    return "--" + field.replace("_", "-")


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are ``needle train``'s for
    the image models (:meth:`for_task` gives a language model's).

    The model-specific fields are read only by the models they concern (``hidden_dim``,
    ``drop_prob``: mlp-resnet and the language models; ``num_blocks``: mlp-resnet;
    ``width``: cnn; ``seq_len``, ``embedding_dim``, ``num_layers``, ``clip_grad``: the
    language models).

    Attributes:
        model: ``"mlp-resnet"``, ``"cnn"`` or ``"resnet9"``
            (:data:`needle.tasks.image.MODELS`); ``"rnn-lm"``, ``"lstm-lm"`` or
            ``"transformer-lm"`` (:data:`needle.tasks.language.MODELS`).
        dataset: ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"``
            (:data:`needle.tasks.image.DATASETS`); ``"kjv"`` or ``"ptb"``
            (:data:`needle.tasks.language.DATASETS`); None (the default): the first
            dataset of the model's task (fashion-mnist, kjv).
        data_dir: a folder searched first for the IDX files, or CIFAR-10's batch folder
            (or its parent), or the folder of train.txt/valid.txt/test.txt (ptb, kjv);
            None: the standard places.
        download: download missing data files.
        epochs: total number of epochs of the run.
        batch_size: samples per batch (training and evaluation).
        lr: learning rate.
        weight_decay: L2 penalty added to the gradients by the optimizer.
        hidden_dim: width of the MLP ResNet (its blocks are half as wide inside); the
            hidden size of a language model's RNN/LSTM or Transformer feed-forward.
        num_blocks: number of residual blocks.
        drop_prob: dropout probability inside the blocks; a language model's dropout
            (see :class:`~needle.apps.models_lm.LanguageModel`).
        width: channels of the first block of the ``cnn`` (the later ones have 2× and 4×).
        seq_len: tokens per chunk of truncated backpropagation through time.
        embedding_dim: the language model's word-embedding size.
        num_layers: the language model's RNN/LSTM/Transformer layers.
        clip_grad: clip the global gradient norm to this (None: no clipping).
        optimizer: ``"adam"`` or ``"sgd"``.
        momentum: SGD momentum (ignored by Adam).
        scheduler: ``"none"``, ``"step"`` (lr × gamma every ``step_size`` epochs) or
            ``"cosine"`` (cosine annealing from lr to 0 over ``epochs``).
        step_size: epochs between two decays of the step scheduler.
        gamma: decay factor of the step scheduler.
        augment: random horizontal flips and crops of the training images.
        crop_padding: the padding (maximal shift in pixels) of the random crop.
        seed: seeds NumPy's global generator once, before the model is built.
        limit_train: use only the first N training samples (tokens for text; None: all).
        limit_test: use only the first N test samples (tokens for text; None: all).
        out: the output folder (checkpoint, metrics, curves).
        on_nonfinite: ``"stop"`` (the run stops at the first non-finite training loss,
            without saving) or ``"skip-batch"`` (a batch whose gradients are not finite
            is not applied, and non-finite losses are left out of the metrics); either
            way no checkpoint with non-finite weights is ever written.
        checkpoint_every: how often the checkpoint is also saved in the middle of an
            epoch: a time (``"30s"``, ``"5m"``, ``"1h"``), a number of training steps
            (``"200"``), or ``"epoch"`` (``"0"``) for the end of each epoch only (see
            :class:`~needle.options.CheckpointInterval`).

    Raises:
        ConfigError: a field holds a value its option does not accept (the message
            names the option, the value and what it accepts).
    """

    model: str = "mlp-resnet"
    dataset: str | None = None
    data_dir: str | None = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.001
    weight_decay: float = 0.001
    hidden_dim: int = 100
    num_blocks: int = 3
    drop_prob: float = 0.1
    width: int = 32
    seq_len: int = 40
    embedding_dim: int = 64
    num_layers: int = 1
    clip_grad: float | None = None
    optimizer: str = "adam"
    momentum: float = 0.0
    scheduler: str = "none"
    step_size: int = 5
    gamma: float = 0.1
    augment: bool = False
    crop_padding: int = 3
    seed: int = 4
    limit_train: int | None = None
    limit_test: int | None = None
    out: str = "runs/latest"
    on_nonfinite: str = "stop"
    checkpoint_every: str = DEFAULT_CHECKPOINT_EVERY

    def __post_init__(self) -> None:
        if self.dataset is None:  # the model's task's first dataset (unknown model: later)
            self.dataset = tasks.default_dataset(self.model)
        self._check_fields()

    def _check_fields(self) -> None:
        """Raise ConfigError for the first field whose option does not accept its value."""
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{option_name(name)} {getattr(self, name)!r} is not "
                                  f"true or false")
        rules = {**FIELD_RULES, **{k: rule for k, rule in OPTIONAL_RULES.items()
                                   if getattr(self, k) is not None}}
        for name, rule in rules.items():
            value = getattr(self, name)
            if not rule.accepts(value):
                raise ConfigError(f"{option_name(name)} {value!r} is not {rule.what}")

    @property
    def checkpoint_interval(self) -> CheckpointInterval:
        """``checkpoint_every``, parsed."""
        return CheckpointInterval.parse(self.checkpoint_every)

    @classmethod
    def for_task(cls, **options: Any) -> "TrainConfig":
        """A config of ``options``; every other field has the default of the model's task.

        The class's own defaults are the image task's; a language model's task has others
        (:func:`needle.tasks.task_defaults`). This is what ``needle train`` builds.

        Example:
            >>> TrainConfig.for_task(model="lstm-lm").batch_size, TrainConfig.for_task().batch_size
            (16, 100)
            >>> TrainConfig.for_task(model="lstm-lm", batch_size=8).batch_size
            8
        """
        return cls(**{**tasks.task_defaults(options.get("model", cls.model)), **options})

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what a checkpoint stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build a config from :meth:`to_dict`'s output; unknown keys raise TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"TrainConfig: unknown fields {unknown}")
        return cls(**{k: _plain(v) for k, v in values.items()})


def _plain(value: Any) -> Any:
    """A NumPy scalar as the matching Python scalar (checkpoints may store either)."""
    return value.item() if isinstance(value, np.generic) else value


#: Fields a resumed run may change: where the data and files are, (unless the cosine
#: schedule depends on it) how many epochs to run in total, the learning rate (to resume
#: a diverged run more gently) and what to do with non-finite losses.
RESUME_FREE_FIELDS = frozenset({"data_dir", "download", "out", "epochs", "lr",
                                "on_nonfinite", "checkpoint_every"})


@dataclass(frozen=True)
class EpochMetrics:
    """The metrics of one epoch: mean losses and error rates, and its wall time."""

    epoch: int
    train_loss: float
    train_err: float
    test_loss: float
    test_err: float
    seconds: float


# ----- optimizer, scheduler ------------------------------------------------------------


def build_optimizer(model: nn.Module, config: TrainConfig) -> optim.Optimizer:
    """Adam or SGD (with momentum) over the model's parameters, with weight decay."""
    if config.optimizer == "adam":
        return optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    raise ValueError(f"build_optimizer: unknown optimizer {config.optimizer!r}; use adam or sgd")


def build_scheduler(opt: optim.Optimizer, config: TrainConfig) -> Any:
    """The per-epoch learning-rate scheduler of ``config.scheduler``, or None."""
    if config.scheduler == "none":
        return None
    if config.scheduler == "step":
        return optim.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=config.epochs)
    raise ValueError(
        f"build_scheduler: unknown scheduler {config.scheduler!r}; use none, step or cosine")


@dataclass
class _Run:
    """The objects of a run: its config, task, loaders, model, optimizer and scheduler."""

    config: TrainConfig
    task: tasks.Task
    train_loader: Any  # a DataLoader, or the task's own loader (see Task.loader)
    test_loader: Any
    model: nn.Module
    opt: optim.Optimizer
    scheduler: Any


def _build_run(config: TrainConfig) -> _Run:
    """Seed NumPy with ``config.seed``, load the data, then build model and optimizer.

    The order matters: the model's initial weights are the first random draws. In a
    data-parallel run the model is wrapped (rank 0's weights go to every rank) and
    each rank then continues with its own random stream.
    """
    task = tasks.create(config)
    np.random.seed(config.seed)
    train_set, test_set = task.dataset(train=True), task.dataset(train=False)
    model = task.build_model()
    if distributed.is_initialized():
        model = nn.DistributedDataParallel(model)
        np.random.seed([config.seed, distributed.rank()])
    opt = build_optimizer(model, config)
    return _Run(config, task, task.loader(train_set, True), task.loader(test_set, False),
                model, opt, build_scheduler(opt, config))


def _is_rank0() -> bool:
    """True in a single-process run and on rank 0 of a distributed one."""
    return not distributed.is_initialized() or distributed.rank() == 0


def _world_size() -> int | None:
    """The number of ranks of a distributed run; None for a single-process run."""
    return distributed.world_size() if distributed.is_initialized() else None


# ----- one epoch, with a progress bar ---------------------------------------------------


class _ProgressBar:
    """A tqdm bar over one pass: batches, running loss and accuracy, samples per second.

    Used as ``run_epoch``'s ``on_batch`` callback; it also adds up the pass's samples,
    errors and losses (the epoch metrics). Disabled or without tqdm it only counts.
    With ``on_nonfinite``, a batch whose loss is not finite is handed to it (which may
    raise) and left out of the metrics.
    """

    def __init__(self, total: int, desc: str, enabled: bool,
                 on_nonfinite: Callable[[int, float], None] | None = None,
                 start: "_Position | None" = None) -> None:
        self.samples, self.errors, self.loss_sum = 0, 0, 0.0
        self.batches, self.total = 0, total
        if start is not None:  # a pass resumed in mid-epoch goes on with its tallies
            self.samples, self.errors, self.loss_sum = start.samples, start.errors, start.loss_sum
            self.batches = start.done
        self.on_nonfinite = on_nonfinite
        self.start = time.perf_counter()
        self.bar = _make_tqdm(total, desc) if enabled else None
        if self.bar is not None and self.batches:
            self.bar.update(self.batches)

    def __call__(self, result: BatchResult) -> None:
        self.batches += 1
        if self.on_nonfinite is not None and not math.isfinite(result.loss):
            self.on_nonfinite(self.batches, result.loss)
            return
        self.samples += result.size
        self.errors += result.errors
        self.loss_sum += result.loss * result.size
        if self.bar is None:
            return
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(
            f"loss {self.loss_sum / self.samples:.4f} "
            f"acc {1 - self.errors / self.samples:.4f} {rate:,.0f} samples/s",
            refresh=False)
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
    return tqdm(total=total, desc=desc, unit="batch", leave=False, file=sys.stderr,
                dynamic_ncols=True)


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


def _stop_at_nonfinite_loss(number: int, total: int) -> Callable[[int, float], None]:
    """The ``on_nonfinite`` of epoch ``number``'s progress bar under ``--on-nonfinite stop``."""
    def stop(batch: int, loss: float) -> None:
        raise NonFiniteError(f"the training loss is {loss} at epoch {number}, batch {batch} "
                             f"of {total}: the run diverged")
    return stop


def _ignore_nonfinite_loss(batch: int, loss: float) -> None:
    """Under ``--on-nonfinite skip-batch``, a non-finite loss is only left out of the metrics."""


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
        return {"epoch": self.epoch, "order": np.concatenate(self.order).astype(np.int64),
                "sizes": np.array([len(batch) for batch in self.order], dtype=np.int64),
                "done": self.done, "samples": self.samples, "errors": self.errors,
                "loss_sum": self.loss_sum, "skipped": self.skipped, "seconds": self.seconds,
                "carry": self.carry}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "_Position":
        """The position :meth:`to_state` saved (KeyError, TypeError or ValueError if damaged)."""
        sizes = np.asarray(state["sizes"], dtype=np.int64)
        order = np.asarray(state["order"], dtype=np.int64)
        if sizes.ndim != 1 or (sizes < 0).any() or sizes.sum() != order.size:
            raise ValueError("the saved batch order is inconsistent")
        return cls(int(state["epoch"]), np.split(order, np.cumsum(sizes)[:-1]),
                   int(state["done"]), int(state["samples"]), int(state["errors"]),
                   float(state["loss_sum"]), int(state["skipped"]), float(state["seconds"]),
                   state["carry"])

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
        self.interval = run.config.checkpoint_interval
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
            ndl.save(state, Path(self.run.config.out) / CHECKPOINT_NAME)
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
        _write_outputs(self.run, Path(self.run.config.out), number, self.history, self.write)
        self.holds = f"epoch {number}"
        self._restart()


def _train_and_evaluate(run: _Run, number: int, progress: bool, position: _Position | None,
                        checkpoints: _Checkpoints) -> tuple[EpochMetrics, str]:
    """Train epoch ``number`` (from ``position`` if resumed in it), step the scheduler,
    evaluate in ``model.eval()``; time it.

    Returns the metrics and a note on the batches skipped (empty when none was).
    """
    if position is None:
        position = _Position(number, _epoch_order(run, number))
    start = time.perf_counter() - position.seconds
    total = len(position.order)
    skip = run.config.on_nonfinite == "skip-batch"
    opt = _SkipNonFiniteSteps(run.opt, position.skipped) if skip else run.opt
    on_nonfinite = _ignore_nonfinite_loss if skip else _stop_at_nonfinite_loss(number, total)
    bar = _ProgressBar(total, f"epoch {number}/{run.config.epochs}", progress, on_nonfinite,
                       position)

    def after_batch(result: BatchResult) -> None:
        bar(result)
        if bar.batches < total:  # after the last batch, the end-of-epoch checkpoint follows
            checkpoints.after_step(lambda: _Position(
                number, position.order, bar.batches, bar.samples, bar.errors, bar.loss_sum,
                opt.skipped if skip else 0, time.perf_counter() - start, result.carry))
    try:
        run.task.run_epoch(run.train_loader.batches(position.order[position.done:]), run.model,
                           opt, on_batch=after_batch, carry=position.carry)
    finally:
        bar.close()
    if run.scheduler is not None:
        run.scheduler.step()
    tally = _ProgressBar(len(run.test_loader), f"epoch {number}/{run.config.epochs} test",
                         progress)
    if len(run.test_loader):
        run.task.run_epoch(run.test_loader, run.model, on_batch=tally)
    else:  # a rank with no test sample (fewer than N): it still joins eval()'s collective
        run.model.eval()
    tally.close()
    train_err, train_loss = _epoch_rates(bar, f"epoch {number}")
    test_err, test_loss = _epoch_rates(tally, "the test pass")
    note = (f"epoch {number}: skipped {opt.skipped} of {total} batches whose gradients were "
            f"not finite" if skip and opt.skipped else "")
    return EpochMetrics(number, train_loss, train_err, test_loss, test_err,
                        time.perf_counter() - start), note


def _epoch_rates(tally: _ProgressBar, what: str) -> tuple[float, float]:
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
    return (f"epoch {m.epoch}/{epochs}  {split('train', m.train_loss, m.train_err)}  "
            f"{split('test', m.test_loss, m.test_err)}  {m.seconds:.1f}s")


# ----- output files ----------------------------------------------------------------------


def write_metrics_csv(path: str | os.PathLike, history: Iterable[EpochMetrics],
                      perplexity: bool = False) -> None:
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
    "perplexity": ("perplexity (log scale)",
                   lambda m, split: math.exp(getattr(m, f"{split}_loss")), True),
}


def plot_curves(path: str | os.PathLike, history: list[EpochMetrics],
                perplexity: bool = False) -> bool:
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


def _checkpoint_state(run: _Run, epoch: int, history: list[EpochMetrics],
                      position: _Position | None = None) -> dict[str, Any]:
    """Everything a resumed run needs, as a tree :func:`needle.save` can store.

    ``epoch``: the epochs completed; ``position``: where the run stands in the next one
    (None at the end of an epoch). A distributed run adds its ``world_size``, every
    rank's generator state (``rng_states``, by rank) and every rank's position
    (``positions``); gathering them is a collective.
    """
    saved_position = None if position is None else position.to_state()
    extra = {}
    if distributed.is_initialized():
        extra = {"world_size": distributed.world_size(),
                 "rng_states": distributed.all_gather_object(np.random.get_state()),
                 "positions": distributed.all_gather_object(saved_position)}
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": run.config.to_dict(),
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "rng_state": np.random.get_state(),
        "position": saved_position,
        "history": [dataclasses.asdict(m) for m in history],
        "task": run.task.state(),
        **extra,
    }


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`train`.

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
            f"cannot read checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0]) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a needle training checkpoint "
                              f"(expected format {CHECKPOINT_FORMAT!r})")
    return state


def _checkpoint_config(state: dict[str, Any], path: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint, or CheckpointError."""
    try:
        config = TrainConfig.from_dict(dict(state["config"]))
        tasks.check_config(config)
    except (KeyError, TypeError, TrainingError) as e:
        raise CheckpointError(f"{os.fspath(path)}: the run's saved options are invalid "
                              f"({e})") from e
    return config


def checkpoint_config(path: str | os.PathLike,
                      state: dict[str, Any] | None = None) -> TrainConfig:
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
        overrides: option values given explicitly for the resumed run.

    Raises:
        CheckpointError: no readable checkpoint in ``out``.
    """
    path = Path(out) / CHECKPOINT_NAME
    saved = _checkpoint_config(load_checkpoint(path), path).to_dict()
    saved.update(overrides, out=os.fspath(out))
    return TrainConfig.from_dict(saved)


def _check_resumable(saved: TrainConfig, config: TrainConfig, path: Path) -> None:
    """Raise ResumeMismatchError if ``config`` changes what the saved run was."""
    free = set(RESUME_FREE_FIELDS)
    changed = [f"--{name.replace('_', '-')} {getattr(saved, name)!r} -> {getattr(config, name)!r}"
               for name in saved.to_dict() if name not in free | {"epochs"}
               and getattr(saved, name) != getattr(config, name)]
    if config.scheduler == "cosine" and saved.epochs != config.epochs:
        changed.append(f"--epochs {saved.epochs} -> {config.epochs}: a cosine schedule "
                       f"anneals the learning rate to 0 over exactly the run's --epochs, "
                       f"so a cosine run cannot be extended or shortened; to train on, "
                       f"start a new run with the --epochs you want")
    if changed:
        raise ResumeMismatchError(
            f"cannot resume {path}: the run was started with other options "
            f"({'; '.join(changed)}). Resume with the original options (omitted options are "
            f"taken from the checkpoint), or start a new run with another --out.")


def _check_task_state(state: dict[str, Any], task: tasks.Task, path: Path) -> None:
    """Raise ResumeMismatchError if the task's state (a vocabulary) is not the saved one."""
    if state.get("task", {}) != task.state():
        raise ResumeMismatchError(
            f"cannot resume {path}: the data have changed since the run started (the "
            f"task's saved state, e.g. a language model's vocabulary, differs); restore "
            f"the original files or start a new run with another --out")


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
    saved, now = _plain(state.get("world_size")), _world_size()
    if saved != now:
        raise ResumeMismatchError(
            f"cannot resume {path}: it was {describe(saved)} and this is {describe(now)}; "
            f"resume with the same number of processes (the global batch and the "
            f"per-rank random streams depend on it)")


def _restore(run: _Run, state: dict[str, Any], path: Path,
             ) -> tuple[int, list[EpochMetrics], _Position | None]:
    """Load model, optimizer, scheduler and RNG state; return (epochs done, history, the
    position in the next epoch: None unless the checkpoint was saved in mid-epoch)."""
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])
        history = [EpochMetrics(**{k: _plain(v) for k, v in m.items()}) for m in state["history"]]
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
    if (position.epoch != epoch + 1 or len(position.order) != len(run.train_loader)
            or not 0 < position.done < len(position.order)):
        raise ValueError(f"its position in the epoch ({position.describe()}, after "
                         f"{_count(epoch, 'epoch')}) does not fit this run's "
                         f"{len(run.train_loader)} batches per epoch")
    return position


# ----- the run --------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] | None = print) -> list[EpochMetrics]:
    """Train ``config``'s model, writing checkpoint, metrics and curves every epoch.

    Args:
        config: the run (see :class:`TrainConfig`).
        resume: continue the run saved in ``config.out`` from the epoch after the last
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
        CheckpointError: ``resume`` and no readable checkpoint in ``config.out``.
        ResumeMismatchError: ``resume`` with options that differ from the saved run's
            (or with another number of processes).
        needle.distributed.PeerLostError: a rank of a distributed run died.
        NonFiniteError: the training loss (``on_nonfinite="stop"``) or the weights
            stopped being finite; nothing was saved for that epoch, and the message
            says which checkpoint is left and how to resume with a smaller ``lr``.
    """
    rank0 = _is_rank0()
    log = log if log is not None and rank0 else (lambda line: None)
    out = Path(config.out)
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
    done, history, position = (_restore(run, state, checkpoint_path) if state is not None
                               else (0, [], None))
    if state is not None:
        _apply_learning_rate(run, _checkpoint_config(state, checkpoint_path).lr)
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
        what = f"the {saved.model} run on {saved.dataset}"
    except CheckpointError:
        what = "the unreadable checkpoint"
    return (f"note: this run replaces {what} in {path.parent} (--out DIR keeps runs "
            f"apart; --resume continues it)")


def _train_epochs(run: _Run, done: int, history: list[EpochMetrics],
                  position: _Position | None, show_bar: bool, log: Callable[[str], None]) -> None:
    """Train the epochs after ``done`` (the first from ``position`` if given), writing the
    outputs after each and the checkpoint every ``--checkpoint-every`` (see :func:`train`)."""
    config = run.config
    holds = position.describe() if position else f"epoch {done}" if done else None
    checkpoints = _Checkpoints(run, history, holds)
    try:
        for number in range(done + 1, config.epochs + 1):
            metrics, note = _train_and_evaluate(run, number, show_bar, position, checkpoints)
            position = None
            history.append(metrics)
            checkpoints.after_epoch(number)
            if note:
                log(note)
            log(format_epoch_line(history[-1], config.epochs, run.task.perplexity))
    except NonFiniteError as error:
        advice = _divergence_advice(config, checkpoints.holds)
        raise NonFiniteError(f"{error}. {advice}") from None


def _divergence_advice(config: TrainConfig, holds: str | None) -> str:
    """What was kept of a diverged run (``holds``: what its checkpoint holds, e.g.
    ``epoch 2``; None: nothing), and the command that goes on more gently."""
    smaller = f"--lr {config.lr / 10:g}"
    skip = ("" if config.on_nonfinite == "skip-batch"
            else "; or --on-nonfinite skip-batch to skip such batches")
    if holds is None:
        return (f"Stopped before any checkpoint was written; start again with a smaller "
                f"learning rate than {config.lr:g}, e.g. {smaller}{skip}")
    return (f"Stopped without saving: {Path(config.out) / CHECKPOINT_NAME} still holds "
            f"{holds}. Resume from it with a smaller learning rate than {config.lr:g}: "
            f"needle train --resume --out {config.out} {smaller}{skip}")


def _apply_learning_rate(run: _Run, saved_lr: float) -> None:
    """Give a resumed run the ``--lr`` asked for, when it differs from the saved run's.

    The optimizer's state brought back the saved learning rate; a schedule restarts
    from the new one at the epoch it had reached.
    """
    if run.config.lr == saved_lr:
        return
    if run.scheduler is None:
        run.opt.lr = run.config.lr
    else:
        run.scheduler.base_lr = run.config.lr
        run.opt.lr = run.scheduler.get_last_lr()


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
    return (f"note: {what}. Turn it on with: pip install 'needle-dl[train]' "
            f"(or pip install {names})")


def _header(run: _Run, done: int, position: _Position | None) -> str:
    """The line printed before training starts."""
    config = run.config
    n_train, n_test = len(run.train_loader.dataset), len(run.test_loader.dataset)
    clip = f", clip {config.clip_grad:g}" if config.clip_grad is not None else ""
    what = (f"{run.task.describe()} ({n_train} train / {n_test} test), {config.optimizer} "
            f"lr {config.lr:g}, batch {config.batch_size}, weight decay "
            f"{config.weight_decay:g}{clip}, {_count(config.epochs, 'epoch')} -> {config.out}")
    ranks = _world_size()
    if ranks is not None:
        what += (f"; data-parallel on {_processes(ranks)}, global batch "
                 f"{config.batch_size * ranks}")
    if done >= config.epochs:
        return f"{what}: already {_count(done, 'epoch')} done, nothing to train"
    if position is not None:
        return f"{what}, resuming at {position.describe()}"
    return f"{what}, resuming after epoch {done}" if done else what


def _write_outputs(run: _Run, out: Path, epoch: int, history: list[EpochMetrics],
                   write: bool) -> None:
    """Write the checkpoint, the metrics CSV and the curves after ``epoch`` if ``write``.

    Every rank must call it: the checkpoint state gathers every rank's generator state.
    """
    state = _checkpoint_state(run, epoch, history)
    if not write:
        return
    ndl.save(state, out / CHECKPOINT_NAME)
    write_metrics_csv(out / METRICS_NAME, history, run.task.perplexity)
    plot_curves(out / CURVES_NAME, history, run.task.perplexity)


def evaluate_checkpoint(path: str | os.PathLike, *, progress: bool = False,
                        log: Callable[[str], None] | None = None,
                        **overrides: Any) -> tuple[float, float, int]:
    """Rebuild the model saved in a training checkpoint and evaluate it on the test set.

    Args:
        path: a ``checkpoint.npz`` written by :func:`train`.
        progress: show a progress bar over the test batches (tqdm, on stderr).
        log: called with one line saying what is evaluated on what, before the pass
            starts (None: silent).
        **overrides: :class:`TrainConfig` fields replacing the saved ones (e.g.
            ``dataset``, ``data_dir``, ``batch_size``, ``limit_test``).

    Returns:
        ``(test_err, test_loss, number of test samples)``.

    Raises:
        CheckpointError: the file is missing, unreadable or not a training checkpoint.
        TrainingError: the model cannot take the images of the dataset asked for.
        needle.data.DatasetNotFoundError: the data files are missing.
    """
    state = load_checkpoint(path)
    saved = _checkpoint_config(state, path)
    config = dataclasses.replace(saved, **overrides)
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
        log(f"evaluating {os.fspath(path)} ({config.model}) on {len(test_set)} "
            f"{config.dataset} test samples")
    bar = _ProgressBar(len(loader), "test", progress)
    try:
        err, loss = task.run_epoch(loader, model, on_batch=bar)
    finally:
        bar.close()
    return err, loss, len(test_set)

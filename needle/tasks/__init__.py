"""Training tasks: what ``needle train`` trains, one small module per kind of problem.

The run in :mod:`needle.training` (epochs, progress bar, metrics, checkpoints, resume,
rank-0 I/O) and the batch loop in :mod:`needle.loop` (forward, backward, steps,
accumulation, tallies) know nothing about images or text. They ask a :class:`Task` —
built from the run's :class:`~needle.options.TrainConfig` by :func:`create` — for what
differs between problems:

* ``dataset(train)``: the training or test :class:`~needle.data.Dataset` (augmented,
  limited to ``--limit-train``/``--limit-test``);
* ``build_model()``: the network (its construction draws the initial weights);
* ``objective``: the hook :func:`~needle.loop.run_batches` calls for every batch — what
  a batch is and how its loss, its errors and what it carries into the next batch (a
  language model's hidden state) are computed (:class:`~needle.tasks.image.Classification`,
  :class:`~needle.tasks.language.NextToken`);
* ``loader(dataset, train)``: the batches of a split, in the order a pass takes them
  (images: :func:`standard_loader`, shuffled for training, a rank's shard when
  distributed; text: consecutive BPTT chunks); ``loader.batch_indices()`` draws a
  pass's order and ``loader.batches(order)`` yields the batches of an order (or of its
  tail, when a run resumes in mid-epoch);
* ``describe()``: the model and data in a few words, for the run's header line;
* ``perplexity``: True if the loss is a mean log-likelihood per token, so the run also
  reports ``exp(loss)`` (the perplexity);
* ``state()``: what, besides the weights, a checkpoint must keep to use the model
  (the vocabulary of a language model), stored as the checkpoint's ``"task"`` entry;

and ``check_eval_data(saved, state)``, which refuses to evaluate a checkpoint on data
its model cannot take. :meth:`Task.run_epoch` is one plain pass with the task's
objective (what ``needle eval`` runs).

Tasks: :mod:`needle.tasks.image` (image classification: models ``mlp-resnet``, ``cnn``,
``resnet9``; data ``fashion-mnist``, ``mnist``, ``cifar10``) and
:mod:`needle.tasks.language` (language modelling: ``rnn-lm``, ``lstm-lm``,
``transformer-lm``; data ``kjv``, ``ptb``). A task is chosen by the model name
(``config.model``); each task module lists its ``MODELS``, its ``DATASETS`` (the first
is its default), its ``DEFAULTS`` (the :class:`~needle.options.TrainConfig` options
that give a sensible run of its models when no option says otherwise; see
:func:`task_defaults`) and has a ``create(config)`` that returns its :class:`Task`
(docs/training.md, "The loop and the tasks").
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from needle import distributed
from needle.data import DataLoader, Dataset, DistributedSampler
from needle.loop import BatchResult, Objective, run_batches
from needle.training_errors import TrainingError

if TYPE_CHECKING:
    from needle import nn, optim
    from needle.options import TrainConfig

__all__ = [
    "Task",
    "TASK_MODULES",
    "model_names",
    "dataset_names",
    "default_dataset",
    "task_defaults",
    "check_config",
    "create",
    "standard_loader",
    "FirstN",
    "first_n",
]

#: The task modules, in the order their models are listed.
TASK_MODULES: tuple[str, ...] = ("needle.tasks.image", "needle.tasks.language")


class Task(abc.ABC):
    """Base of the tasks: what the run and the batch loop need from one (built for one
    run's config). Subclasses define every member but :meth:`run_epoch`."""

    #: The run's options.
    config: TrainConfig
    #: The hook :func:`~needle.loop.run_batches` calls for every batch.
    objective: Objective
    #: True: the loss is per token and the run reports the perplexity ``exp(loss)``.
    perplexity: bool = False

    @abc.abstractmethod
    def dataset(self, train: bool) -> Dataset:
        """The training or the test set."""

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The network, with freshly drawn weights."""

    @abc.abstractmethod
    def loader(self, dataset: Dataset, train: bool) -> Iterable:
        """The batches of a split; has ``len()``, ``.dataset``, ``.sampler`` (or None),
        ``batch_indices()`` and ``batches(order)``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The model and data in a few words (the header line)."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the weights (``{}`` for none)."""

    @abc.abstractmethod
    def check_eval_data(self, saved: TrainConfig, state: dict[str, Any]) -> None:
        """Raise TrainingError if the model saved with ``saved`` and ``state`` cannot
        take this data."""

    def run_epoch(
        self,
        loader: Iterable,
        model: nn.Module,
        opt: optim.Optimizer | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
        carry: Any = None,
    ) -> tuple[float, float]:
        """One plain pass with :attr:`objective`: trains with ``opt`` (a step per batch,
        the gradient norm clipped to ``--clip-grad``), evaluates without; starts from
        ``carry`` (a :class:`~needle.loop.BatchResult`'s, None for a fresh pass).

        Returns:
            ``(error_rate, mean_loss)`` over the pass's samples.
        """
        tally = run_batches(
            loader,
            model,
            self.objective,
            opt,
            carry=carry,
            clip_grad=self.config.optim.clip_grad,
            on_batch=on_batch,
        )
        return tally.error_rate, tally.mean_loss


def _modules() -> list[Any]:
    """The task modules, imported."""
    return [importlib.import_module(name) for name in TASK_MODULES]


def model_names() -> list[str]:
    """Every model name ``needle train --model`` accepts, over all tasks."""
    return [name for module in _modules() for name in module.MODELS]


def dataset_names() -> list[str]:
    """Every dataset name ``needle train --dataset`` accepts, over all tasks."""
    return [name for module in _modules() for name in module.DATASETS]


def default_dataset(model: str) -> str | None:
    """The default dataset of the task that has ``model`` (None: no task has it)."""
    for module in _modules():
        if model in module.MODELS:
            return next(iter(module.DATASETS))
    return None


def task_defaults(model: str) -> dict[str, Any]:
    """The option values of ``model``'s task that differ from TrainConfig's own defaults.

    TrainConfig's defaults are the image task's (the course's MLP ResNet recipe); a
    language model starts from its task's ``DEFAULTS`` instead. Unknown model: ``{}``
    (the error comes when the task is created).

    Example:
        >>> task_defaults("mlp-resnet")
        {}
        >>> task_defaults("lstm-lm")["weight_decay"]
        0.0
    """
    for module in _modules():
        if model in module.MODELS:
            return dict(module.DEFAULTS)
    return {}


def check_config(config: TrainConfig) -> None:
    """Raise if ``config`` names no known model, or gives its model sizes it cannot have.

    A task module may define ``check_config(config)`` for the rules that span several
    options or depend on the data (e.g. the MLP ResNet's blocks are ``--hidden-dim // 2``
    wide); its task's constructor applies them too.

    Raises:
        TrainingError: an unknown model;
            :class:`~needle.training_errors.ConfigError`: sizes that make no working model.
    """
    for module in _modules():
        if config.network.model in module.MODELS:
            if hasattr(module, "check_config"):
                module.check_config(config)
            return
    raise TrainingError(
        f"unknown model {config.network.model!r}; use one of {', '.join(model_names())}"
    )


def create(config: TrainConfig) -> Task:
    """The task of ``config.network.model``, built for ``config``.

    Raises:
        TrainingError: no task has that model, or the task refuses the config (e.g. a
            dataset it does not know).
    """
    for module in _modules():
        if config.network.model in module.MODELS:
            return module.create(config)
    raise TrainingError(
        f"unknown model {config.network.model!r}; use one of {', '.join(model_names())}"
    )


def standard_loader(dataset: Dataset, config: TrainConfig, train: bool) -> DataLoader:
    """The loader of a dataset of independent samples, ``--batch-size`` at a time.

    Training: shuffled; evaluation: in order. In a data-parallel run each rank gets its
    :class:`~needle.data.DistributedSampler` shard (seeded with ``--seed``).
    """
    size = config.optim.batch_size
    if not distributed.is_initialized():
        return DataLoader(dataset, size, shuffle=train)
    if train:
        return DataLoader(dataset, size, sampler=DistributedSampler(dataset, seed=config.run.seed))
    return DataLoader(dataset, size, sampler=DistributedSampler(dataset, shuffle=False, even=False))


class FirstN(Dataset):
    """The first ``n`` samples of another dataset (its transforms still apply).

    Example:
        >>> from needle.data import NDArrayDataset
        >>> len(FirstN(NDArrayDataset(np.arange(10)), 3))
        3
    """

    def __init__(self, dataset: Any, n: int) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"FirstN: n={n} must be positive")
        self.dataset = dataset
        self.n = min(int(n), len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not -self.n <= index < self.n:
            raise IndexError(f"FirstN: index {index} is out of range for length {self.n}")
        return self.dataset[index % self.n]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """The batch of ``indices`` (all below ``n``), fetched from the wrapped dataset."""
        return self.dataset.get_batch(indices)


def first_n(dataset: Dataset, limit: int | None) -> Dataset:
    """``dataset`` itself, or its first ``limit`` samples if ``limit`` is smaller."""
    return FirstN(dataset, limit) if limit is not None and limit < len(dataset) else dataset

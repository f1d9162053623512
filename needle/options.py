"""The options of ``needle train``: the values each accepts, and :class:`TrainConfig`, the
record of a run's options in four groups.

The command line parses with these rules (its flags are the option names, ``--lr`` for
``lr``), and a config built in Python or read from a checkpoint is checked against the
same rules. The groups are the command's help sections: :class:`NetworkOptions` (which
model, its sizes), :class:`DataOptions` (which data, how much, augmentation),
:class:`OptimOptions` (epochs, batches, optimizer, schedule, accumulation) and
:class:`RunOptions` (seed, output folder, checkpoints, non-finite losses).

Example:
    >>> SEED.parse("4")
    4
    >>> SEED.accepts(2**32)
    False
    >>> CheckpointInterval.parse("5m")
    CheckpointInterval(seconds=300.0, steps=None)
    >>> config = TrainConfig(lr=0.01, epochs=3)
    >>> config.optim.lr, config.lr, config.run.seed
    (0.01, 0.01, 4)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from needle import tasks
from needle.training_errors import ConfigError

__all__ = [
    "Rule",
    "POSITIVE_INT",
    "NON_NEGATIVE_INT",
    "SIZE",
    "COUNT",
    "SEED",
    "NON_NEGATIVE_FLOAT",
    "POSITIVE_FLOAT",
    "PROBABILITY",
    "UNIT_INTERVAL",
    "PATH",
    "FLAG",
    "choice",
    "CheckpointInterval",
    "CHECKPOINT_EVERY",
    "MAX_SIZE",
    "OPTIMIZERS",
    "SCHEDULERS",
    "ON_NONFINITE",
    "NetworkOptions",
    "DataOptions",
    "OptimOptions",
    "RunOptions",
    "TrainConfig",
    "option_name",
    "rule_of",
    "to_python",
]

#: The largest layer size, sequence length or layer count an option accepts. A network
#: this wide does not fit any machine's memory; the bound keeps every weight's element
#: count (a product of at most three sizes) within int64, so a too-large value is
#: reported as a lack of memory rather than failing inside the array code.
MAX_SIZE = 2**20


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """The values one option accepts.

    Attributes:
        cast: turns the command line's text into a value (raises ValueError if it cannot).
        check: True for an acceptable value of the right type.
        what: the accepted values in words, for error messages ("a positive integer").
    """

    cast: Callable[[str], Any]
    check: Callable[[Any], bool]
    what: str

    def parse(self, text: str) -> Any:
        """The value of ``text``; ValueError naming it and what is accepted otherwise."""
        try:
            value = self.cast(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not self.check(value):
            raise ValueError(f"{text!r} is not {self.what}")
        return value

    def accepts(self, value: Any) -> bool:
        """True if ``value`` (already a Python value, e.g. from a checkpoint) is accepted."""
        return self.check(value)


def _int_rule(low: int, high: int | None, what: str) -> Rule:
    return Rule(int, lambda v: _is_int(v) and low <= v and (high is None or v <= high), what)


def _float_rule(check: Callable[[float], bool], what: str) -> Rule:
    return Rule(float, lambda v: _is_real(v) and not math.isnan(v) and check(v), what)


POSITIVE_INT = _int_rule(1, None, "a positive integer")
NON_NEGATIVE_INT = _int_rule(0, None, "a non-negative integer")
SIZE = _int_rule(1, MAX_SIZE, f"a positive integer up to {MAX_SIZE}")
COUNT = _int_rule(0, MAX_SIZE, f"an integer from 0 to {MAX_SIZE}")
#: NumPy's legacy seeding takes 32-bit seeds.
SEED = _int_rule(0, 2**32 - 1, "a seed from 0 to 4294967295 (2**32 - 1)")
NON_NEGATIVE_FLOAT = _float_rule(lambda v: 0 <= v < math.inf, "a finite number >= 0")
POSITIVE_FLOAT = _float_rule(lambda v: 0 < v < math.inf, "a finite number > 0")
PROBABILITY = _float_rule(lambda v: 0 <= v < 1, "a probability in [0, 1)")
UNIT_INTERVAL = _float_rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
PATH = Rule(
    str,
    lambda v: isinstance(v, str) and v.strip() != "" and "\0" not in v,
    "a path (a non-empty name)",
)
#: An on/off option (``--augment``); the command line sets it with the bare flag.
FLAG = Rule(str, lambda v: isinstance(v, bool), "true or false")


def choice(*names: str) -> Rule:
    """A rule accepting exactly ``names``."""
    return Rule(str, lambda v: v in names, f"one of {', '.join(names)}")


_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class CheckpointInterval:
    """How often a run saves its checkpoint in the middle of an epoch (``--checkpoint-every``).

    Attributes:
        seconds: save once this much time has passed since the last save (None: not by time).
        steps: save every this many training steps (None: not by steps).

    Neither set: only at the end of each epoch.
    """

    seconds: float | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, text: str) -> CheckpointInterval:
        """``30s``, ``5m``, ``1.5h`` (time), ``200`` (steps), ``epoch`` or ``0`` (epoch ends only).

        Raises:
            ValueError: ``text`` is none of these.
        """
        spec = str(text).strip().lower()
        if spec == "epoch":
            return cls()
        if re.fullmatch(r"[0-9]+", spec):
            steps = int(spec)
            return cls(steps=steps) if steps else cls()
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)([smh])", spec)
        if match:
            seconds = float(match[1]) * _TIME_UNITS[match[2]]
            if 0 < seconds < math.inf:
                return cls(seconds=seconds)
        raise ValueError(f"{text!r} is not {CHECKPOINT_EVERY.what}")

    def due(self, steps: int, seconds: float) -> bool:
        """True when ``steps`` steps or ``seconds`` seconds since the last save call for one."""
        return (self.steps is not None and steps >= self.steps) or (
            self.seconds is not None and seconds >= self.seconds
        )


def _is_interval(value: Any) -> bool:
    try:
        CheckpointInterval.parse(value)
    except ValueError:
        return False
    return isinstance(value, str)


CHECKPOINT_EVERY = Rule(
    str,
    _is_interval,
    "an interval: a time (30s, 5m, 1h), a number of "
    "steps (200), or epoch (or 0: at epoch ends only)",
)


# ----- the options of a run, in four groups ---------------------------------------------------

#: ``--optimizer``'s choices: :class:`~needle.optim.Adam`, :class:`~needle.optim.AdamW`
#: (decoupled weight decay) and :class:`~needle.optim.SGD` (with ``--momentum``).
OPTIMIZERS = ("adam", "adamw", "sgd")
#: ``--scheduler``'s choices. Per epoch: ``step``, ``cosine``, ``plateau`` (on the test
#: loss); per optimizer step: ``onecycle``. ``--warmup-steps`` composes with all but onecycle.
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")
#: What a run does with a batch whose loss or gradients are not finite (``--on-nonfinite``).
ON_NONFINITE = ("stop", "skip-batch")
#: ``--checkpoint-every``'s default: a killed run loses at most five minutes of training,
#: for a save that takes well under a second for needle's models (a few MB).
DEFAULT_CHECKPOINT_EVERY = "5m"


def _option(default: Any, rule: Rule | None, *, optional: bool = False) -> Any:
    """A group field: its default and the rule its values follow (None: checked by the
    task, e.g. a model name); ``optional`` fields may also be None."""
    return field(default=default, metadata={"rule": rule, "optional": optional})


def option_name(name: str) -> str:
    """The command-line flag of an option: ``--hidden-dim`` for ``hidden_dim``."""
    return "--" + name.replace("_", "-")


class _Group:
    """Base of the option groups: each field is checked against its rule on creation."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["rule"]
            if rule is None or value is None and f.metadata["optional"]:
                continue
            if not rule.accepts(value):
                raise ConfigError(f"{option_name(f.name)} {value!r} is not {rule.what}")


@dataclass(frozen=True)
class NetworkOptions(_Group):
    """Which network is trained, and its sizes (``needle train``'s model options).

    A size is read only by the models it concerns; the others ignore it.

    Attributes:
        model: ``"mlp-resnet"``, ``"cnn"`` or ``"resnet9"``
            (:data:`needle.tasks.image.MODELS`); ``"rnn-lm"``, ``"lstm-lm"`` or
            ``"transformer-lm"`` (:data:`needle.tasks.language.MODELS`).
        hidden_dim: width of the MLP ResNet (its blocks are half as wide inside); the
            hidden size of a language model's RNN/LSTM or Transformer feed-forward.
        num_blocks: the MLP ResNet's residual blocks.
        drop_prob: dropout inside the MLP ResNet's blocks; a language model's dropout
            (see :class:`~needle.apps.models_lm.LanguageModel`).
        width: channels of the first block of the ``cnn`` (the later ones have 2× and 4×).
        embedding_dim: a language model's word-embedding size.
        num_layers: a language model's RNN/LSTM/Transformer layers.
        seq_len: tokens per chunk of truncated backpropagation through time (and the
            Transformer's positions).
    """

    model: str = _option("mlp-resnet", None)
    hidden_dim: int = _option(100, SIZE)
    num_blocks: int = _option(3, COUNT)
    drop_prob: float = _option(0.1, PROBABILITY)
    width: int = _option(32, SIZE)
    embedding_dim: int = _option(64, SIZE)
    num_layers: int = _option(1, SIZE)
    seq_len: int = _option(40, SIZE)


@dataclass(frozen=True)
class DataOptions(_Group):
    """Which data a run reads, how much of it, and how training images are augmented.

    Attributes:
        dataset: ``"fashion-mnist"``, ``"mnist"`` or ``"cifar10"``
            (:data:`needle.tasks.image.DATASETS`); ``"kjv"`` or ``"ptb"``
            (:data:`needle.tasks.language.DATASETS`); None: the first dataset of the
            model's task (:class:`TrainConfig` fills it in).
        data_dir: a folder searched first for the IDX files, or CIFAR-10's batch folder
            (or its parent), or the folder of train.txt/valid.txt/test.txt (ptb, kjv);
            None: the standard places.
        download: download missing data files.
        limit_train: use only the first N training samples (tokens for text; None: all).
        limit_test: use only the first N test samples (tokens for text; None: all).
        augment: random horizontal flips and crops of the training images.
        crop_padding: the padding (maximal shift in pixels) of the random crop.
    """

    dataset: str | None = _option(None, None)
    data_dir: str | None = _option(None, PATH, optional=True)
    download: bool = _option(False, FLAG)
    limit_train: int | None = _option(None, POSITIVE_INT, optional=True)
    limit_test: int | None = _option(None, POSITIVE_INT, optional=True)
    augment: bool = _option(False, FLAG)
    crop_padding: int = _option(3, COUNT)


@dataclass(frozen=True)
class OptimOptions(_Group):
    """How the weights are fitted: epochs, batches, optimizer, schedule, accumulation.

    Attributes:
        epochs: total number of epochs of the run.
        batch_size: samples per batch (training and evaluation); a language model's
            ``batchify`` columns.
        optimizer: ``"adam"``, ``"adamw"`` (decoupled weight decay) or ``"sgd"``.
        lr: learning rate (the peak rate of ``onecycle``).
        weight_decay: Adam's and SGD's L2 term added to the gradients; AdamW's
            decoupled decay.
        momentum: SGD momentum (ignored by Adam and AdamW).
        no_decay_norm_bias: no weight decay for biases and normalisation weights: every
            parameter with one dimension, and every one whose name ends in ``bias``
            (a Linear layer's bias is ``(1, out)``).
        scheduler: ``"none"``; per epoch ``"step"`` (lr × gamma every ``step_size``
            epochs), ``"cosine"`` (cosine annealing to 0 over ``epochs``), ``"plateau"``
            (lr × gamma after more than ``patience`` epochs without a lower test loss);
            per optimizer step ``"onecycle"`` (up to lr over the first 30% of the run's
            steps, then down to lr / 250000).
        step_size: epochs between two decays of the step schedule.
        gamma: decay factor of the step and plateau schedules.
        patience: epochs without improvement the plateau schedule waits before a decay.
        warmup_steps: a linear warmup of the learning rate from 0 over the first N
            optimizer steps (0: none); with ``step`` or ``cosine`` the schedule then runs
            per optimizer step after the warmup (see :func:`needle.training.build_schedule`).
        grad_accum: micro-batches per optimizer step; each micro-batch's loss is scaled by
            1/N (1/k for the k < N left at an epoch's end), so a step follows the mean
            gradient of N batches.
        clip_grad: clip the global gradient norm to this before each step (None: no
            clipping).
    """

    epochs: int = _option(10, POSITIVE_INT)
    batch_size: int = _option(100, POSITIVE_INT)
    optimizer: str = _option("adam", choice(*OPTIMIZERS))
    lr: float = _option(0.001, NON_NEGATIVE_FLOAT)
    weight_decay: float = _option(0.001, NON_NEGATIVE_FLOAT)
    momentum: float = _option(0.0, PROBABILITY)
    no_decay_norm_bias: bool = _option(False, FLAG)
    scheduler: str = _option("none", choice(*SCHEDULERS))
    step_size: int = _option(5, POSITIVE_INT)
    gamma: float = _option(0.1, UNIT_INTERVAL)
    patience: int = _option(2, NON_NEGATIVE_INT)
    warmup_steps: int = _option(0, NON_NEGATIVE_INT)
    grad_accum: int = _option(1, POSITIVE_INT)
    clip_grad: float | None = _option(None, POSITIVE_FLOAT, optional=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_steps and self.scheduler == "onecycle":
            raise ConfigError(
                f"--warmup-steps {self.warmup_steps} with --scheduler onecycle: "
                f"the one-cycle schedule warms up by itself (over the first 30% "
                f"of the run's steps); drop --warmup-steps or choose another "
                f"--scheduler"
            )
        if self.scheduler == "plateau" and self.gamma == 1:
            raise ConfigError(
                f"--gamma {self.gamma!r} with --scheduler plateau never lowers "
                f"the learning rate; use a --gamma below 1 (e.g. 0.1)"
            )


@dataclass(frozen=True)
class RunOptions(_Group):
    """What a run does around the training: seed, files, checkpoints, divergence.

    Attributes:
        seed: seeds NumPy's global generator once, before the model is built.
        out: the output folder (checkpoint, metrics, curves).
        checkpoint_every: how often the checkpoint is also saved in the middle of an
            epoch: a time (``"30s"``, ``"5m"``, ``"1h"``), a number of optimizer steps
            (``"200"``), or ``"epoch"`` (``"0"``) for the end of each epoch only (see
            :class:`CheckpointInterval`).
        on_nonfinite: ``"stop"`` (the run stops at the first non-finite training loss,
            without saving) or ``"skip-batch"`` (a step whose gradients are not finite is
            not applied, and non-finite losses are left out of the metrics); either way
            no checkpoint with non-finite weights is ever written.
    """

    seed: int = _option(4, SEED)
    out: str = _option("runs/latest", PATH)
    checkpoint_every: str = _option(DEFAULT_CHECKPOINT_EVERY, CHECKPOINT_EVERY)
    on_nonfinite: str = _option("stop", choice(*ON_NONFINITE))

    @property
    def checkpoint_interval(self) -> CheckpointInterval:
        """``checkpoint_every``, parsed."""
        return CheckpointInterval.parse(self.checkpoint_every)


#: The groups of a TrainConfig: attribute name -> class.
GROUPS: dict[str, type] = {
    "network": NetworkOptions,
    "data": DataOptions,
    "optim": OptimOptions,
    "run": RunOptions,
}


#: Every option -> the group that holds it.
GROUP_OF: dict[str, str] = {
    f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)
}
#: What TrainConfig lets one read by name: the options and the groups' properties
#: (``checkpoint_interval``).
_READABLE: dict[str, str] = {
    **GROUP_OF,
    **{
        name: group
        for group, cls in GROUPS.items()
        for name, value in vars(cls).items()
        if isinstance(value, property)
    },
}


def rule_of(name: str) -> Rule:
    """The rule of option ``name`` (KeyError for a name without one, e.g. ``model``)."""
    cls = GROUPS[GROUP_OF[name]]
    rule = next(f.metadata["rule"] for f in dataclasses.fields(cls) if f.name == name)
    if rule is None:
        raise KeyError(f"option {name!r} is checked by its task, not by a rule")
    return rule


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that defines a training run, in four groups.

    ``TrainConfig(**options)`` takes the options by name, as the command line spells them
    without the dashes (``TrainConfig(model="cnn", lr=0.01)``); a whole group may be given
    as a group object or a dict of its options (``TrainConfig(optim={"lr": 0.01})``), and
    an option given by name wins over its group's. Options not given take their group's
    default — the image models' recipe; :meth:`for_task` gives a language model's.
    Reading an option by name (``config.lr``) is the same as through its group
    (``config.optim.lr``). A config is immutable: :meth:`replace` makes a changed copy.

    Attributes:
        network: :class:`NetworkOptions` (which model, its sizes).
        data: :class:`DataOptions` (which data, how much, augmentation).
        optim: :class:`OptimOptions` (epochs, batches, optimizer, schedule).
        run: :class:`RunOptions` (seed, output folder, checkpoints).

    Raises:
        ConfigError: an option holds a value it does not accept, or options that do not
            go together (the message names the flags, the values and what is accepted).
        TypeError: an unknown option name.

    Example:
        >>> config = TrainConfig(model="cnn", optim={"lr": 0.01, "epochs": 3}, epochs=5)
        >>> config.network.model, config.dataset, config.optim.lr, config.epochs
        ('cnn', 'fashion-mnist', 0.01, 5)
    """

    network: NetworkOptions
    data: DataOptions
    optim: OptimOptions
    run: RunOptions

    def __init__(self, **options: Any) -> None:
        values = _grouped(options)
        data = values["data"]
        if data.get("dataset") is None:  # the model's task's first dataset (unknown model: later)
            data["dataset"] = tasks.default_dataset(values["network"].get("model", "mlp-resnet"))
        for group, cls in GROUPS.items():
            object.__setattr__(self, group, cls(**values[group]))

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not attributes: the options, read by name.
        group = _READABLE.get(name)
        if group is None:
            raise AttributeError(f"'TrainConfig' object has no attribute {name!r}")
        return getattr(getattr(self, group), name)

    @classmethod
    def for_task(cls, **options: Any) -> TrainConfig:
        """A config of ``options``; every other option has the default of the model's task.

        The groups' own defaults are the image task's; a language model's task has others
        (:func:`needle.tasks.task_defaults`). This is what ``needle train`` builds.

        Example:
            >>> TrainConfig.for_task(model="lstm-lm").batch_size, TrainConfig.for_task().batch_size
            (16, 100)
            >>> TrainConfig.for_task(model="lstm-lm", batch_size=8).batch_size
            8
        """
        model = options.get("model", NetworkOptions.model)
        return cls(**{**tasks.task_defaults(model), **options})

    def replace(self, **options: Any) -> TrainConfig:
        """A copy with ``options`` (by name, or whole groups) changed.

        Example:
            >>> TrainConfig().replace(epochs=2).epochs
            2
        """
        return TrainConfig(**{group: getattr(self, group) for group in GROUPS}, **options)

    def options(self) -> dict[str, Any]:
        """Every option by name, in group order: the command line's view of the run."""
        return {
            name: value
            for group in GROUPS
            for name, value in dataclasses.asdict(getattr(self, group)).items()
        }

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The groups as plain dicts (what a checkpoint stores): ``{"network": {...}, ...}``."""
        return {group: dataclasses.asdict(getattr(self, group)) for group in GROUPS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`'s output, or of a flat ``{option: value}`` dict (the
        form checkpoints stored before options were grouped); NumPy scalars are read as
        Python ones.

        Raises:
            TypeError: an unknown option or group.
            ConfigError: an option's value is not accepted.
        """
        return cls(**{key: to_python(value) for key, value in values.items()})


def _grouped(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``TrainConfig``'s keyword arguments as one dict of options per group.

    Raises:
        TypeError: an option or group that does not exist (or an option in another group).
    """
    values: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for group in GROUPS:
        given = options.get(group, {})
        given = dataclasses.asdict(given) if dataclasses.is_dataclass(given) else dict(given)
        values[group].update(given)
    unknown = sorted(
        name for group, given in values.items() for name in given if GROUP_OF.get(name) != group
    )
    unknown += sorted(name for name in options if name not in GROUPS and name not in GROUP_OF)
    if unknown:
        raise TypeError(f"TrainConfig: unknown options {unknown}")
    for name, value in options.items():
        if name not in GROUPS:
            values[GROUP_OF[name]][name] = value
    return values


def to_python(value: Any) -> Any:
    """A NumPy scalar as the matching Python scalar (checkpoints may store either); dicts
    (a group) value by value."""
    if isinstance(value, dict):
        return {key: to_python(item) for key, item in value.items()}
    return value.item() if isinstance(value, np.generic) else value

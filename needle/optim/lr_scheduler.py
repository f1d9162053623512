"""Learning-rate schedules: a small base class, closed-form schedules and ReduceLROnPlateau.

A scheduler sets the learning rate of every parameter group of an optimizer. Call
:meth:`~LRScheduler.step` after the optimizer steps it spans: once per epoch for a
per-epoch schedule (as in PyTorch), or after every ``optimizer.step()`` for a per-step one
(warmup, one-cycle). ``last_epoch`` counts the :meth:`~LRScheduler.step` calls, whichever
unit they are. Each group's rate follows the schedule from its own starting rate.

>>> import needle as ndl
>>> w = ndl.nn.Parameter(ndl.init.zeros(2))
>>> opt = ndl.optim.SGD([w], lr=0.1)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for epoch in range(4):
...     lrs.append(opt.lr)  # ... train one epoch with opt ...
...     sched.step()
>>> lrs
[0.1, 0.1, 0.05, 0.05]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from .._validation import check_positive_int, check_real
from .optimizer import Optimizer


class LRScheduler:
    """Base class: sets each group's ``lr`` to ``lr_at(base_lr, last_epoch)``.

    ``base_lrs`` are the groups' learning rates when the scheduler is built (or the rates
    a subclass passes) and ``last_epoch`` counts the :meth:`step` calls (0 at
    construction). Subclasses define :meth:`lr_at`.
    """

    def __init__(self, optimizer: Optimizer, base_lrs: Sequence[float] | None = None) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected a needle.optim.Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        groups = optimizer.param_groups
        self.base_lrs = [g["lr"] for g in groups] if base_lrs is None else list(base_lrs)
        self.last_epoch = 0
        self._apply()

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """The learning rate after ``epoch`` steps (0-based) of a group starting at ``base_lr``."""
        raise NotImplementedError(f"{type(self).__name__} must implement lr_at(base_lr, epoch)")

    def get_lr(self, epoch: int) -> float:
        """The first group's learning rate for ``epoch`` (0-based), in closed form."""
        return self.lr_at(self.base_lrs[0], epoch)

    def _apply(self) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(base_lr, self.last_epoch)

    def step(self) -> None:
        """Advance one step (an epoch or a batch, as the schedule is used) and set the rates."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> float:
        """The first group's learning rate set by the last :meth:`step` (or at construction)."""
        return self.get_lr(self.last_epoch)

    @property
    def base_lr(self) -> float:
        """The first group's starting rate. Setting it rescales every group's starting
        rate by the same factor (they keep their ratios), or sets them all when it was 0."""
        return self.base_lrs[0]

    @base_lr.setter
    def base_lr(self, value: float) -> None:
        value = check_real(type(self).__name__, "base_lr", value, low=0.0)
        first = self.base_lrs[0]
        self.base_lrs = (
            [value] * len(self.base_lrs)
            if first == 0
            else [lr * (value / first) for lr in self.base_lrs]
        )
        self.base_lrs[0] = value

    def state_dict(self) -> dict:
        """Every attribute except the optimizer (plain numbers and lists; a wrapped
        scheduler as its own state dict), and ``base_lr``, for saving."""
        state = {
            k: v.state_dict() if isinstance(v, LRScheduler) else v
            for k, v in vars(self).items()
            if k != "optimizer"
        }
        state["base_lr"] = self.base_lr
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s values (the optimizer's lr comes from its own state)."""
        state = dict(state)
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: unexpected keys "
                f"{sorted(unknown)}; was the state saved by another scheduler?"
            )
        base_lr = state.pop("base_lr", None)
        for key, value in state.items():
            inner = getattr(self, key, None)
            if isinstance(inner, LRScheduler):
                inner.load_state_dict(value)
            else:
                setattr(self, key, value)
        if "base_lrs" not in state and base_lr is not None:
            self.base_lr = base_lr  # a state saved before groups had their own rates


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_positive_int("StepLR", "step_size", step_size)
        self.gamma = check_real("StepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        return base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (or steps).

    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (PyTorch's closed form; after ``T_max`` it rises again, periodically).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = check_real("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (base_lr - self.eta_min) * cosine


class LinearWarmup(LRScheduler):
    """A linear ramp over the first ``warmup_steps`` steps, then another schedule (or none).

    For ``step < warmup_steps``:
    ``lr = base_lr * (start_factor + (1 - start_factor) * step / warmup_steps)``
    (PyTorch's ``LinearLR``); from then on ``after``'s rate for ``step - warmup_steps``,
    or ``base_lr`` without ``after`` (PyTorch's ``SequentialLR`` of the two). ``after`` is
    a closed-form schedule built on the same optimizer just before this one, with its
    length counted after the warmup, e.g. per-step cosine decay::

        cosine = CosineAnnealingLR(opt, T_max=total_steps - warmup)
        sched = LinearWarmup(opt, warmup, after=cosine)  # sched.step() after every batch
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        after: LRScheduler | None = None,
        start_factor: float = 0.0,
    ) -> None:
        self.warmup_steps = check_positive_int("LinearWarmup", "warmup_steps", warmup_steps)
        self.start_factor = check_real(
            "LinearWarmup", "start_factor", start_factor, low=0.0, high=1.0
        )
        if after is not None:
            if not isinstance(after, LRScheduler) or isinstance(after, ReduceLROnPlateau):
                raise TypeError(
                    f"LinearWarmup: after must be a closed-form schedule (StepLR, "
                    f"CosineAnnealingLR, ...), got {type(after).__name__}"
                )
            if after.optimizer is not optimizer:
                raise ValueError(
                    "LinearWarmup: after is built on another optimizer; build "
                    "both schedules on the same one"
                )
        self.after = after
        super().__init__(optimizer, None if after is None else after.base_lrs)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        if epoch < self.warmup_steps:
            ramp = epoch / self.warmup_steps
            return base_lr * (self.start_factor + (1 - self.start_factor) * ramp)
        if self.after is None:
            return base_lr
        return self.after.lr_at(base_lr, epoch - self.warmup_steps)


class OneCycleLR(LRScheduler):
    """The one-cycle policy (Smith & Topin), PyTorch's ``OneCycleLR``, stepped per batch.

    The rate rises from ``max_lr / div_factor`` to ``max_lr`` over the first
    ``pct_start * total_steps`` steps, then falls to ``max_lr / div_factor /
    final_div_factor`` at step ``total_steps - 1`` (with ``three_phase``: back to the
    initial rate first, over as many steps, then down to the minimum). ``anneal_strategy``
    is ``"cos"`` or ``"linear"``. ``max_lr`` is a float or one per parameter group; the
    optimizer's own rates are replaced. (PyTorch's momentum cycling has no counterpart:
    momentum and betas stay as set.) Stepping more than ``total_steps`` times raises.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        owner = "OneCycleLR"
        self.total_steps = check_positive_int(owner, "total_steps", total_steps)
        self.pct_start = check_real(
            owner, "pct_start", pct_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"{owner}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        self.anneal_strategy = anneal_strategy
        self.div_factor = check_real(owner, "div_factor", div_factor, low=0.0, low_open=True)
        self.final_div_factor = check_real(
            owner, "final_div_factor", final_div_factor, low=0.0, low_open=True
        )
        self.three_phase = bool(three_phase)
        # Phases as (last step, start factor, end factor), factors of max_lr.
        initial, final = 1 / self.div_factor, 1 / self.div_factor / self.final_div_factor
        rise_end = self.pct_start * self.total_steps - 1
        if self.three_phase:
            self._phases = [
                (rise_end, initial, 1.0),
                (2 * rise_end, 1.0, initial),
                (self.total_steps - 1, initial, final),
            ]
        else:
            self._phases = [(rise_end, initial, 1.0), (self.total_steps - 1, 1.0, final)]
        super().__init__(optimizer, _per_group(owner, "max_lr", max_lr, optimizer))

    def lr_at(self, base_lr: float, epoch: int) -> float:
        start_step = 0.0
        for index, (end_step, start, end) in enumerate(self._phases):
            if epoch <= end_step or index == len(self._phases) - 1:
                pct = (epoch - start_step) / (end_step - start_step)
                return base_lr * self._anneal(start, end, pct)
            start_step = end_step
        raise AssertionError("unreachable: the last phase always answers")

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    def step(self) -> None:
        """Advance one step; a ValueError past ``total_steps`` steps."""
        if self.last_epoch + 1 > self.total_steps:
            raise ValueError(
                f"OneCycleLR: stepped {self.last_epoch + 1} times, but "
                f"total_steps is {self.total_steps}; build it with the run's "
                f"number of optimizer steps"
            )
        super().step()


class ReduceLROnPlateau(LRScheduler):
    """Divide the rates when a metric stops improving, PyTorch's ``ReduceLROnPlateau``.

    Call ``step(metric)`` after each evaluation. A metric is an improvement when it beats
    the best so far by ``threshold`` (relative, ``best * (1 - threshold)`` in ``"min"``
    mode, or absolute with ``threshold_mode="abs"``); after more than ``patience``
    evaluations without one, each group's rate becomes ``max(lr * factor, min_lr)``
    (changes smaller than ``eps`` are skipped), then ``cooldown`` evaluations pass before
    counting again. ``mode="max"`` for metrics that should rise (accuracy).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        owner = "ReduceLROnPlateau"
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"{owner}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_real(owner, "factor", factor, low=0.0, high=1.0, high_open=True)
        self.patience = _check_count(owner, "patience", patience)
        self.cooldown = _check_count(owner, "cooldown", cooldown)
        self.threshold = check_real(owner, "threshold", threshold, low=0.0)
        self.eps = check_real(owner, "eps", eps, low=0.0)
        self.min_lrs = _per_group(owner, "min_lr", min_lr, optimizer)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        super().__init__(optimizer)

    def _apply(self) -> None:
        pass  # the rates change only when the metric plateaus

    def lr_at(self, base_lr: float, epoch: int) -> float:
        raise TypeError("ReduceLROnPlateau has no closed form: its rates depend on the metrics")

    def get_last_lr(self) -> float:
        """The first group's current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self, metric: float) -> None:  # type: ignore[override]
        """Record one evaluation's ``metric`` and reduce the rates after a plateau."""
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise TypeError(
                f"ReduceLROnPlateau.step: metric must be a real number, got {type(metric).__name__}"
            )
        metric = float(metric)
        self.last_epoch += 1
        if self._improves(metric):
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def _improves(self, metric: float) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0
        if self.threshold_mode == "rel":
            return sign * metric < sign * self.best * (1 - sign * self.threshold)
        return sign * metric < sign * self.best - self.threshold

    def _reduce(self) -> None:
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            new = max(group["lr"] * self.factor, min_lr)
            if group["lr"] - new > self.eps:
                group["lr"] = new


def _per_group(
    owner: str, name: str, value: float | Sequence[float], optimizer: Optimizer
) -> list[float]:
    """``value`` (a float, or one per parameter group) as one float >= 0 per group."""
    count = len(optimizer.param_groups) if isinstance(optimizer, Optimizer) else 1
    values = list(value) if isinstance(value, (list, tuple)) else [value] * count
    if len(values) != count:
        raise ValueError(
            f"{owner}: {name} has {len(values)} values, but the optimizer has "
            f"{count} parameter groups"
        )
    return [check_real(owner, name, v, low=0.0) for v in values]


def _check_count(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{owner}: {name} must be an int >= 0, got {value!r}")
    return int(value)

"""Learning-rate schedules: a small base class and two closed-form schedules.

A scheduler computes the learning rate for an epoch with :meth:`LRScheduler.get_lr`
and writes it to ``optimizer.lr``. Call :meth:`~LRScheduler.step` once per epoch,
after that epoch's optimizer steps, as in PyTorch.

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

from .._validation import check_positive_int, check_real
from .optimizer import Optimizer


class LRScheduler:
    """Base class: sets ``optimizer.lr = get_lr(epoch)``; subclasses define :meth:`get_lr`.

    ``base_lr`` is the optimizer's learning rate when the scheduler is built and
    ``last_epoch`` counts the :meth:`step` calls (0 at construction).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected a needle.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.get_lr(0)

    def get_lr(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (0-based), in closed form."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_lr(epoch)")

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr(self.last_epoch)

    def get_last_lr(self) -> float:
        """The learning rate set by the last :meth:`step` (or at construction)."""
        return self.get_lr(self.last_epoch)

    def state_dict(self) -> dict:
        """Every attribute except the optimizer (plain numbers), for saving."""
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s values (the optimizer's lr comes from its own state)."""
        unknown = set(state) - set(self.state_dict())
        if unknown:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unexpected keys "
                             f"{sorted(unknown)}; was the state saved by another scheduler?")
        self.__dict__.update(state)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_positive_int("StepLR", "step_size", step_size)
        self.gamma = check_real("StepLR", "gamma", gamma, low=0.0)
        super().__init__(optimizer)

    def get_lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from ``base_lr`` to ``eta_min`` over ``T_max`` epochs.

    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``
    (PyTorch's closed form; after ``T_max`` it rises again, periodically).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = check_positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = check_real("CosineAnnealingLR", "eta_min", eta_min, low=0.0)
        super().__init__(optimizer)

    def get_lr(self, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine

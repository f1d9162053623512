"""Optimizers (SGD, Adam) and learning-rate schedulers.

>>> import needle as ndl
>>> model = ndl.nn.Linear(3, 1)
>>> opt = ndl.optim.Adam(model.parameters(), lr=0.01)
>>> loss = model(ndl.init.ones(2, 3)).sum()
>>> opt.reset_grad(); loss.backward(); opt.step()
>>> opt.t
1
"""
from .lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from .optimizer import SGD, Adam, Optimizer, clip_grad_norm

__all__ = ["Optimizer", "SGD", "Adam", "LRScheduler", "StepLR", "CosineAnnealingLR",
           "clip_grad_norm"]

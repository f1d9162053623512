"""Optimizers (SGD, Adam, AdamW, RMSprop, Adagrad) and learning-rate schedulers.

>>> import needle as ndl
>>> model = ndl.nn.Linear(3, 1)
>>> opt = ndl.optim.Adam(model.parameters(), lr=0.01)
>>> loss = model(ndl.init.ones(2, 3)).sum()
>>> opt.reset_grad(); loss.backward(); opt.step()
>>> opt.t
1
"""

from .lr_scheduler import (
    CosineAnnealingLR,
    LinearWarmup,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)
from .optimizer import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "LRScheduler",
    "StepLR",
    "CosineAnnealingLR",
    "LinearWarmup",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "clip_grad_norm",
]

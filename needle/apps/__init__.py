"""Ready models and training recipes built on needle.

* :mod:`needle.apps.simple_ml` — the course's first homework: a hand-written softmax
  regression and two-layer network (``parse_mnist``, ``softmax_loss``, ``nn_epoch``).
* :mod:`needle.apps.mlp_resnet` — the course's MLP ResNet (``ResidualBlock``,
  ``MLPResNet``), its ``epoch`` loop and ``train_mnist``.

The submodules load on first use (``needle.apps.mlp_resnet``) or by explicit import
(``from needle.apps.mlp_resnet import MLPResNet``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["mlp_resnet", "models", "simple_ml"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'needle.apps' has no attribute {name!r}")

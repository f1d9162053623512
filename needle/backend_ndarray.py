"""The course's name for :mod:`needle.backends.ndarray`, the strided NDArray backend.

``import needle.backend_ndarray as nd`` and ``from needle.backend_ndarray import ndarray``
give the very modules of :mod:`needle.backends.ndarray` (not copies), so classes, devices
and pickles are the same whichever name is used.
"""

import sys

from .backends import ndarray as _package

sys.modules[__name__] = _package
for _name, _module in list(sys.modules.items()):
    if _name.startswith(_package.__name__ + ".") and _module is not None:
        sys.modules[__name__ + _name[len(_package.__name__) :]] = _module

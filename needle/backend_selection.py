"""Course-compatible alias of :mod:`needle.backends` (the course imports this name)."""

from .backends import *  # noqa: F401,F403
from .backends import NDArray, array_api  # noqa: F401

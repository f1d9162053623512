"""The course's name for :mod:`needle.backends.numpy`, the NumPy backend's devices."""

from .backends.numpy import *  # noqa: F401,F403

"""Course-compatible alias of :mod:`needle.backends.numpy_backend`."""
from .backends.numpy_backend import *  # noqa: F401,F403

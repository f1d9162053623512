"""Type aliases used across needle's public signatures."""

from __future__ import annotations

#: A tensor shape: a tuple of non-negative ints.
Shape = tuple
#: Reduction axes: None (all), one int, or a tuple of ints.
Axes = "int | tuple[int, ...] | None"

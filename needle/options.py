"""The values each option of ``needle train`` (a :class:`~needle.training.TrainConfig`
field) accepts, in one place: the command line parses with these rules, and a config
built in Python or read from a checkpoint is checked against the same rules.

Example:
    >>> SEED.parse("4")
    4
    >>> SEED.accepts(2**32)
    False
    >>> CheckpointInterval.parse("5m")
    CheckpointInterval(seconds=300.0, steps=None)
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Rule", "POSITIVE_INT", "NON_NEGATIVE_INT", "SIZE", "COUNT", "SEED",
           "NON_NEGATIVE_FLOAT", "POSITIVE_FLOAT", "PROBABILITY", "UNIT_INTERVAL", "PATH",
           "choice", "CheckpointInterval", "CHECKPOINT_EVERY", "MAX_SIZE"]

#: The largest layer size, sequence length or layer count an option accepts. A network
#: this wide does not fit any machine's memory; the bound keeps every weight's element
#: count (a product of at most three sizes) within int64, so a too-large value is
#: reported as a lack of memory rather than failing inside the array code.
MAX_SIZE = 2**20


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """The values one option accepts.

    Attributes:
        cast: turns the command line's text into a value (raises ValueError if it cannot).
        check: True for an acceptable value of the right type.
        what: the accepted values in words, for error messages ("a positive integer").
    """

    cast: Callable[[str], Any]
    check: Callable[[Any], bool]
    what: str

    def parse(self, text: str) -> Any:
        """The value of ``text``; ValueError naming it and what is accepted otherwise."""
        try:
            value = self.cast(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not self.check(value):
            raise ValueError(f"{text!r} is not {self.what}")
        return value

    def accepts(self, value: Any) -> bool:
        """True if ``value`` (already a Python value, e.g. from a checkpoint) is accepted."""
        return self.check(value)


def _int_rule(low: int, high: int | None, what: str) -> Rule:
    return Rule(int, lambda v: _is_int(v) and low <= v and (high is None or v <= high), what)


def _float_rule(check: Callable[[float], bool], what: str) -> Rule:
    return Rule(float, lambda v: _is_real(v) and not math.isnan(v) and check(v), what)


POSITIVE_INT = _int_rule(1, None, "a positive integer")
NON_NEGATIVE_INT = _int_rule(0, None, "a non-negative integer")
SIZE = _int_rule(1, MAX_SIZE, f"a positive integer up to {MAX_SIZE}")
COUNT = _int_rule(0, MAX_SIZE, f"an integer from 0 to {MAX_SIZE}")
#: NumPy's legacy seeding takes 32-bit seeds.
SEED = _int_rule(0, 2**32 - 1, "a seed from 0 to 4294967295 (2**32 - 1)")
NON_NEGATIVE_FLOAT = _float_rule(lambda v: 0 <= v < math.inf, "a finite number >= 0")
POSITIVE_FLOAT = _float_rule(lambda v: 0 < v < math.inf, "a finite number > 0")
PROBABILITY = _float_rule(lambda v: 0 <= v < 1, "a probability in [0, 1)")
UNIT_INTERVAL = _float_rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
PATH = Rule(str, lambda v: isinstance(v, str) and v.strip() != "" and "\0" not in v,
            "a path (a non-empty name)")


def choice(*names: str) -> Rule:
    """A rule accepting exactly ``names``."""
    return Rule(str, lambda v: v in names, f"one of {', '.join(names)}")


_TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class CheckpointInterval:
    """How often a run saves its checkpoint in the middle of an epoch (``--checkpoint-every``).

    Attributes:
        seconds: save once this much time has passed since the last save (None: not by time).
        steps: save every this many training steps (None: not by steps).

    Neither set: only at the end of each epoch.
    """

    seconds: float | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, text: str) -> "CheckpointInterval":
        """``30s``, ``5m``, ``1.5h`` (time), ``200`` (steps), ``epoch`` or ``0`` (epoch ends only).

        Raises:
            ValueError: ``text`` is none of these.
        """
        spec = str(text).strip().lower()
        if spec == "epoch":
            return cls()
        if re.fullmatch(r"[0-9]+", spec):
            steps = int(spec)
            return cls(steps=steps) if steps else cls()
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)([smh])", spec)
        if match:
            seconds = float(match[1]) * _TIME_UNITS[match[2]]
            if 0 < seconds < math.inf:
                return cls(seconds=seconds)
        raise ValueError(f"{text!r} is not {CHECKPOINT_EVERY.what}")

    def due(self, steps: int, seconds: float) -> bool:
        """True when ``steps`` steps or ``seconds`` seconds since the last save call for one."""
        return ((self.steps is not None and steps >= self.steps)
                or (self.seconds is not None and seconds >= self.seconds))


def _is_interval(value: Any) -> bool:
    try:
        CheckpointInterval.parse(value)
    except ValueError:
        return False
    return isinstance(value, str)


CHECKPOINT_EVERY = Rule(str, _is_interval, "an interval: a time (30s, 5m, 1h), a number of "
                                           "steps (200), or epoch (or 0: at epoch ends only)")

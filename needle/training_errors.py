"""The errors of ``needle train``, ``needle eval`` and ``needle generate``: problems a user
can fix, each reported by the command line as one line and exit status 2.

They live in a module of their own because the options (:mod:`needle.options`), the
tasks (:mod:`needle.tasks`) and the run (:mod:`needle.training`) all raise them, and
none of those should import another just for its errors. :mod:`needle.training`
re-exports them.
"""

from __future__ import annotations

__all__ = [
    "TrainingError",
    "ConfigError",
    "CheckpointError",
    "ResumeMismatchError",
    "NonFiniteError",
]


class TrainingError(Exception):
    """A problem with a run the user can fix (bad checkpoint, mismatched resume, ...)."""


class ConfigError(TrainingError, ValueError):
    """A :class:`~needle.options.TrainConfig` option holds a value it does not accept, or
    options that do not go together."""


class CheckpointError(TrainingError):
    """A checkpoint file is missing, unreadable or not a needle training checkpoint."""


class ResumeMismatchError(TrainingError):
    """``--resume`` was asked with options that contradict the checkpoint's run.

    Every rank of a distributed run checks the same checkpoint and options, so every
    rank raises it at the same point: ``every_rank`` tells the command line to report
    it once (rank 0).
    """

    every_rank = True


class NonFiniteError(TrainingError):
    """The training loss or the weights stopped being finite numbers: the run diverged."""

"""MPI jobs for the tests (tests/distributed/, tests/training/): ``mpiexec`` with a timeout.

A test that needs MPI carries the ``mpi`` marker (``-m "not mpi"`` deselects them all);
conftest.py skips it, with the reason, when what it needs is not installed:
``needs_mpi4py`` (a job of one in this process) or ``needs_mpiexec`` (real jobs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from needle import distributed

REPO = Path(__file__).resolve().parents[2]
MPIEXEC = distributed.find_mpiexec()
#: mpi4py only: this process as a job of one.
needs_mpi4py = pytest.mark.mpi
#: mpi4py and an ``mpiexec`` launcher: jobs of several processes.
needs_mpiexec = pytest.mark.mpi(launcher=True)
#: Seconds any one MPI job may take before the test fails (they take 1-3 s).
JOB_TIMEOUT = 120


def mpiexec(n: int, *args: Any, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python ARGS`` (this checkout first on the path) with a timeout."""
    environment = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    )
    command = [MPIEXEC, "-n", str(n), sys.executable, *map(str, args)]
    # A session of its own, so that a job past its timeout is killed with every rank.
    with subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as job:
        try:
            stdout, stderr = job.communicate(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            stdout, stderr = job.communicate()
            pytest.fail(
                f"mpiexec {' '.join(map(str, args))} ran past {JOB_TIMEOUT} s:\n{stdout}\n{stderr}"
            )
    return subprocess.CompletedProcess(command, job.returncode, stdout, stderr)

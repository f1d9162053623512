"""Every ```python block of the README and docs/*.md runs as written.

A block that is not meant to run on its own (a signature listing, a piece of a larger
loop) is marked as a fragment: the line just before its opening fence is
``<!-- fragment -->`` (invisible on the rendered page; the README's "Developing" section
states the convention). Every other block is executed here, each in a fresh namespace,
the blocks of one file one after the other in one fresh Python process (so a doc's
blocks cannot lean on each other's variables, and the interpreter starts once per file),
in a temporary working directory, with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.markdown import python_blocks

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Seconds one file's blocks may take together.
TIMEOUT = 120

# Runs the blocks it reads from stdin ([[name, code], ...]), each in a fresh namespace;
# stops at the first failure, with its traceback and the block's name.
_RUNNER = """
import json, sys, traceback
for name, code in json.load(sys.stdin):
    try:
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"{name} failed")
"""


def runnable_blocks(path: Path) -> list[tuple[str, str]]:
    """``(name, code)`` of every block of ``path`` that is not a fragment."""
    relative = path.relative_to(REPO)
    return [
        (f"{relative}:{line}", code)
        for line, code, fragment in python_blocks(path.read_text())
        if not fragment
    ]


def test_the_extractor_finds_blocks_and_their_fragment_marks():
    text = (
        "intro\n```python\na = 1\n```\n\n<!-- fragment -->\n```python\nb(...)\n```\n"
        "```bash\nls\n```\n```python\nc = 2\n```\n1. item\n\n   ```python\n   d = 3\n"
        "   ```\n"
    )
    assert python_blocks(text) == [
        (2, "a = 1\n", False),
        (7, "b(...)\n", True),
        (13, "c = 2\n", False),
        (18, "d = 3\n", False),
    ]


def test_a_failing_block_fails_the_run(tmp_path):
    """The runner reports a block that raises (so the test below can fail)."""
    result = _run([("good", "x = 1"), ("bad", "x")], tmp_path)
    assert result.returncode != 0
    assert "NameError: name 'x' is not defined" in result.stderr and "bad failed" in result.stderr


def test_every_doc_has_its_blocks_counted():
    """Fragments are the exception: most blocks of the docs run."""
    blocks = [b for path in DOCS for b in python_blocks(path.read_text())]
    fragments = [b for b in blocks if b[2]]
    assert len(blocks) >= 15 and len(fragments) <= len(blocks) // 3


@pytest.mark.parametrize(
    "path", [p for p in DOCS if runnable_blocks(p)], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_python_blocks_run_as_written(path, tmp_path):
    result = _run(runnable_blocks(path), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def _run(blocks: list[tuple[str, str]], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``blocks`` with :data:`_RUNNER` in a fresh interpreter, in ``cwd``."""
    # One BLAS thread: the examples are small, and threads only contend on a busy machine.
    env = dict(os.environ, MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(blocks),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )

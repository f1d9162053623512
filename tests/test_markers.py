"""The suite's groups (conftest.py): a test that needs PyTorch is marked ``torch``.

``-m "not torch"`` must leave out exactly the tests that need PyTorch, and without it
they must skip with the reason rather than fail or pass unchecked. Both hold only if
the tests reach PyTorch through the ``torch`` fixture (conftest marks its users), not
through an import or ``pytest.importorskip`` of their own, which the marker would miss.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
OWN_IMPORT = re.compile(r"""importorskip\(\s*["']torch\b|^\s*(import|from)\s+torch\b""")


def own_imports_of_torch(text: str) -> list[int]:
    """The lines of ``text`` that import PyTorch themselves.

    Example:
        >>> own_imports_of_torch('x = 1\\n    torch = pytest.importorskip("torch")\\n')
        [2]
        >>> own_imports_of_torch("import torchvision\\nimport torch.nn as tnn\\n")
        [2]
        >>> own_imports_of_torch("def f(torch):\\n    return torch.tensor(1)\\n")
        []
    """
    return [n for n, line in enumerate(text.splitlines(), 1) if OWN_IMPORT.search(line)]


def test_tests_reach_pytorch_only_through_the_torch_fixture():
    found = [
        f"{path.relative_to(TESTS)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name not in ("conftest.py", Path(__file__).name)
        for line in own_imports_of_torch(path.read_text())
    ]
    assert found == [], (
        "take the `torch` fixture (the test is then marked `torch`) "
        f"instead of importing PyTorch: {found}"
    )

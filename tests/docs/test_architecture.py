"""docs/architecture.md's tree matches the repository: every path it names exists, and every
public module and package of needle/ (and of its backends) appears in it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_paths() -> list[str]:
    """The paths of the tree block (the first code block that starts with ``needle/``),
    built from each entry's name and its indentation (two spaces per level)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```\n(needle/\n.*?)```", text, re.S).group(1)
    paths, stack = [], []
    for line in block.splitlines():
        match = re.match(r"( *)(\S+)", line)
        name = match.group(2)
        if not (name.endswith("/") or name.endswith(".py")):
            continue  # a continuation line of a description
        depth = len(match.group(1)) // 2
        del stack[depth:]
        stack.append(name)
        paths.append("".join(stack))
    return paths


def test_every_documented_path_exists():
    paths = documented_paths()
    assert len(paths) > 30
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert missing == []


def test_every_public_module_is_documented():
    paths = set(documented_paths())
    expected = []
    for folder in ("needle", "needle/backends", "needle/backends/ndarray", "needle/backends/numpy"):
        for entry in sorted((ROOT / folder).iterdir()):
            if entry.name.startswith(("_", ".")) or entry.name == "py.typed":
                continue
            if entry.is_dir() or entry.suffix == ".py":
                expected.append(f"{folder}/{entry.name}" + ("/" if entry.is_dir() else ""))
    assert [p for p in expected if p not in paths] == []

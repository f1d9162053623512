"""The ```python blocks of a Markdown file (tests/docs/: the docs' examples run)."""

from __future__ import annotations

import re
import textwrap

#: The line that marks the next block as a fragment (not run).
FRAGMENT_MARK = "<!-- fragment -->"
# A fence may be indented (a block inside a list item): its code is dedented as much.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.S | re.M
)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """The ```python blocks of a Markdown text: ``(line, code, is_fragment)`` each.

    ``line`` is the 1-based line of the opening fence.

    Example:
        >>> text = "a\\n<!-- fragment -->\\n```python\\nx\\n```\\n```python\\ny = 1\\n```\\n"
        >>> python_blocks(text)
        [(3, 'x\\n', True), (6, 'y = 1\\n', False)]
    """
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        code = textwrap.dedent(match.group("code"))
        blocks.append((line, code, before.strip() == FRAGMENT_MARK))
    return blocks

"""Make the two needle.viz screenshots in docs/img/ with headless Chromium.

* docs/img/viz-mlp-adjoints.png — ``viz.graph(loss, adjoints=True)`` of the two-layer MLP
  example (unfused layers), laid out by Graphviz and rendered by the browser;
* docs/img/viz-mlp-resnet-trace.png — the backward trace of the MLP ResNet example, a few
  steps in.

Needs Graphviz and Chromium (scripts/install-viz-deps.sh). Run from the repository root:
``python scripts/viz_screenshots.py``. With Pillow installed, the PNGs are reduced to 128
colours (a third of the size; the pictures are flat colours and text).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the DevTools driver the browser tests use

from helpers.browser import Chromium  # noqa: E402

from needle import viz  # noqa: E402
from needle.viz.examples import example  # noqa: E402

IMG = REPO / "docs" / "img"
CONTRIBUTIONS = "document.querySelectorAll('#contributions .contribution').length"


def adjoint_graph(browser: Chromium, work: Path) -> Path:
    """The two-layer MLP's graph with its adjoints, as the browser shows the SVG."""
    loss, _ = example("mlp", backward=True)
    viz.graph(loss, adjoints=True, collapse="none").save(work / "graph.svg")
    page = work / "graph.html"
    page.write_text(
        '<!DOCTYPE html><body style="margin:0;background:white">'
        '<img src="graph.svg" style="width:100%"></body>'
    )
    browser.open(page)
    out = IMG / "viz-mlp-adjoints.png"
    browser.screenshot(out, full_page=True)
    return out


def resnet_trace(browser: Chromium, work: Path) -> Path:
    """The MLP ResNet's backward trace at its first node with two contributions."""
    loss, model = example("mlp-resnet")
    viz.trace(loss, work / "trace.html", model=model, title="MLP ResNet")
    browser.open(work / "trace.html")
    while browser.evaluate(CONTRIBUTIONS) < 2:  # a residual stream: used twice
        browser.press("ArrowRight", 39)
    out = IMG / "viz-mlp-resnet-trace.png"
    browser.screenshot(out)
    return out


def shrink(path: Path) -> None:
    """Re-save ``path`` with a 128-colour palette, when Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        return
    image = Image.open(path).convert("RGB")
    image.quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, Chromium(width=1280, height=800) as browser:
        for make in (adjoint_graph, resnet_trace):
            out = make(browser, Path(tmp))
            if browser.errors:
                raise SystemExit(f"{out.name}: the page reported errors: {browser.errors}")
            shrink(out)
            print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()

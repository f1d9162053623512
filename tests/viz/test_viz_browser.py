"""The HTML trace in a real headless Chromium: loads cleanly, steps both ways, shows ``.grad``.

Skips without Chromium (Debian's ``chromium``; scripts/install-viz-deps.sh installs it).
The browser is driven through its DevTools protocol over a pipe (tests/helpers/browser.py).
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from helpers.browser import Chromium

import needle as ndl
from needle import nn, viz
from needle.autograd import find_topo_sort
from needle.viz.trace import SMALL_TENSOR

pytestmark = pytest.mark.browser  # each test skips without Chromium (conftest.py)

RIGHT, LEFT = ("ArrowRight", 39), ("ArrowLeft", 37)
SHOWN = """(() => ({
  node: document.getElementById('step-title').dataset.node,
  step: Number(document.getElementById('step-number').textContent),
  sum: document.getElementById('sum').textContent,
  parts: [...document.querySelectorAll('#contributions .contribution')].map(
    (li) => [li.dataset.from, li.querySelector('.values').textContent]),
  current: [...document.querySelectorAll('#tape tr.current')].map((r) => r.id),
}))()"""


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


def mlp_loss():
    """A two-layer MLP's loss: small tensors (biases, logits) and large ones (weights)."""
    np.random.seed(1)
    model = nn.Sequential(nn.Linear(5, 6, fused=False), nn.ReLU(), nn.Linear(6, 3, fused=False))
    X = ndl.Tensor(np.random.randn(4, 5), dtype="float32", requires_grad=False)
    return nn.SoftmaxLoss(fused=False)(model(X), np.array([0, 2, 1, 2])), model


def numbers(text: str) -> np.ndarray:
    """The numbers in a printed small tensor, in order."""
    return np.array([float(x) for x in re.findall(r"-?(?:inf|\d[\d.]*(?:e[-+]?\d+)?)", text)])


def check_matches(text: str, grad: np.ndarray) -> None:
    """A shown value: the numbers of a small tensor, or the norm of a large one."""
    if grad.size <= SMALL_TENSOR:
        np.testing.assert_allclose(numbers(text), grad.ravel(), rtol=1e-5, atol=1e-6)
    else:
        assert text.startswith(f"shape {grad.shape}")
        norm = float(re.search(r"norm (\S+)", text).group(1))
        assert norm == pytest.approx(np.linalg.norm(grad), rel=1e-5)


def test_trace_loads_steps_forward_and_back_and_shows_the_gradients(browser, tmp_path):
    loss, model = mlp_loss()
    viz.trace(loss, tmp_path / "trace.html", model=model)
    order = find_topo_sort([loss])  # the page's v0, v1, … in this order
    browser.open(tmp_path / "trace.html")
    assert browser.errors == []
    n_steps = int(browser.evaluate("document.getElementById('step-count').textContent"))
    shown = [browser.evaluate(SHOWN)]
    for _ in range(n_steps - 1):
        browser.press(*RIGHT)
        shown.append(browser.evaluate(SHOWN))
    assert [s["step"] for s in shown] == list(range(1, n_steps + 1))
    nodes = [int(s["node"][1:]) for s in shown]
    assert nodes == sorted(nodes, reverse=True)  # reverse topological order
    for s in shown:
        tensor = order[int(s["node"][1:])]
        check_matches(s["sum"], tensor.grad.numpy())
        assert s["current"] == [f"row-{s['node']}"]
        users = [f"v{i}" for i, u in enumerate(order) if any(x is tensor for x in u.inputs)]
        assert {p[0] for p in s["parts"]} <= set(users) | {""}
    # the logits (4, 3) feed both logsumexps of the loss: two contributions that add up
    logits = next(s for s in shown if len(s["parts"]) == 2)
    assert order[int(logits["node"][1:])].shape == (4, 3)
    total = sum(numbers(text) for _, text in logits["parts"])
    np.testing.assert_allclose(total, numbers(logits["sum"]), rtol=1e-4, atol=1e-6)
    browser.press(*RIGHT)  # past the end: stays on the last step
    assert browser.evaluate(SHOWN)["step"] == n_steps
    for expected in range(n_steps - 1, 0, -1):
        browser.press(*LEFT)
        assert browser.evaluate(SHOWN) == shown[expected - 1]
    assert browser.errors == []


def test_trace_buttons(browser, tmp_path):
    x = ndl.Tensor([1.0, 2.0])
    viz.trace((x * x).sum(), tmp_path / "small.html", names={"x": x})
    browser.open(tmp_path / "small.html")
    step = lambda: browser.evaluate(SHOWN)["step"]  # noqa: E731
    browser.click("#next")
    browser.click("#next")
    assert step() == 3
    browser.click("#prev")
    assert step() == 2
    browser.click("#last")
    assert browser.evaluate(SHOWN)["sum"] == "[2 4]" and step() == 3
    browser.click("#first")
    assert step() == 1
    browser.press("End", 35)
    assert step() == 3
    assert browser.errors == []


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz not installed")
def test_trace_picture_highlights_the_step(browser, tmp_path):
    loss, model = mlp_loss()
    viz.trace(loss, tmp_path / "trace.html", model=model, picture=True)
    browser.open(tmp_path / "trace.html")
    marked = """[...document.querySelectorAll('#picture g.node.current, #picture g.node.user')]
                .map((g) => [g.querySelector('title').textContent, g.getAttribute('class')])"""
    for _ in range(4):
        browser.press(*RIGHT)
    shown = browser.evaluate(SHOWN)
    current = [title for title, cls in browser.evaluate(marked) if "current" in cls]
    users = {title for title, cls in browser.evaluate(marked) if "user" in cls}
    assert current == [shown["node"]]
    assert users == {p[0] for p in shown["parts"]}
    assert browser.errors == []


def test_a_script_error_in_the_page_is_reported(browser, tmp_path):
    """The test's own check: a broken page must not pass as 'no errors'."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><script>undefinedFunction();</script>")
    browser.open(page)
    assert any("undefinedFunction" in e for e in browser.errors)
    browser.errors.clear()

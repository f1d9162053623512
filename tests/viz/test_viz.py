"""needle.viz: graphs of small expressions known by hand, adjoints, modules, trace, command.

SVG/PNG tests need Graphviz (``dot``) and skip without it; the browser tests live in
test_viz_browser.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import autograd, nn, viz
from needle.autograd import find_topo_sort
from needle.viz import examples

needs_graphviz = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz not installed (scripts/install-viz-deps.sh)"
)


def tensor(values, requires_grad=True):
    return ndl.Tensor(values, dtype="float64", requires_grad=requires_grad)


def titles(g):
    return [n.title for n in g.nodes]


# ----- forward graphs ------------------------------------------------------------------------


def test_square_plus_x_nodes_labels_and_argument_order():
    x = tensor([1.0, 2.0, 3.0])
    g = viz.graph((x * x + x).sum(), names={"x": x})
    assert titles(g) == ["x", "EWiseMul", "EWiseAdd", "Summation"]
    assert [n.id for n in g.nodes] == ["v0", "v1", "v2", "v3"]
    assert [n.kind for n in g.nodes] == ["input", "op", "op", "op"]
    assert [n.shape for n in g.nodes] == [(3,), (3,), (3,), ()]
    assert {n.dtype for n in g.nodes} == {"float64"}
    assert g.inputs_of("v1") == ["v0", "v0"]  # x * x: the same node twice, in order
    assert g.inputs_of("v2") == ["v1", "v0"]
    assert [(e.src, e.dst, e.index) for e in g.edges] == [
        ("v0", "v1", 0),
        ("v0", "v1", 1),
        ("v1", "v2", 0),
        ("v0", "v2", 1),
        ("v2", "v3", 0),
    ]


def test_shared_subexpression_is_one_node():
    x = tensor([0.5, -1.0])
    s = ndl.exp(x)
    y = s * s - s  # s used three times; x - y is EWiseAdd(x, Negate(y))
    g = viz.graph(y, names={"x": x, "s": s})
    assert titles(g) == ["x", "s", "EWiseMul", "Negate", "EWiseAdd"]
    assert g.node("v1").op == "Exp"
    assert g.inputs_of("v2") == ["v1", "v1"]
    assert g.inputs_of("v3") == ["v1"]
    assert g.inputs_of("v4") == ["v2", "v3"]


def test_broadcast_is_an_explicit_node_with_its_shape():
    W = tensor(np.ones((2, 3)))
    b = tensor([1.0, 2.0, 3.0])
    g = viz.graph(W + b, names={"W": W, "b": b})
    assert titles(g) == ["W", "b", "BroadcastTo(shape=(2, 3))", "EWiseAdd"]
    assert g.inputs_of("v3") == ["v0", "v2"]
    assert g.node("v2").shape == (2, 3) and g.node("v1").shape == (3,)


def test_op_attributes_in_labels():
    x = tensor(np.ones((2, 3)))
    y = ndl.summation(ndl.reshape(x * 2.5 + 1, (3, 2)).transpose(), axes=1) ** 2
    assert titles(viz.graph(y))[1:] == [
        "MulScalar(scalar=2.5)",
        "AddScalar(scalar=1)",
        "Reshape(shape=(3, 2))",
        "Transpose",
        "Summation(axes=(1,))",
        "PowerScalar(scalar=2)",
    ]


def test_op_label_reads_numpy_scalars():
    from needle.viz.graph import op_label

    op = ndl.ops.MulScalar(np.array([0.125]))
    assert op_label(op) == "MulScalar(scalar=0.125)"
    assert op_label(ndl.ops.AddScalar(np.float32(1 / 3))) == "AddScalar(scalar=0.333333)"


def test_leaf_kinds_and_parameter_names_from_model():
    model = nn.Sequential(nn.Linear(3, 2, fused=False))
    X = ndl.Tensor(np.ones((4, 3)), dtype="float32", requires_grad=False)
    g = viz.graph(model(X), model=model)
    kinds = {n.title: n.kind for n in g.nodes if not n.op}
    assert kinds == {
        "constant": "constant",
        "modules.0.weight": "parameter",
        "modules.0.bias": "parameter",
    }


def test_several_outputs_and_tensor_tuples():
    x = tensor(np.arange(6.0).reshape(2, 3))
    parts = ndl.split(x, axis=0)
    a, b = parts[0], parts[1]
    g = viz.graph(a, b, names={"x": x})
    assert titles(g) == ["x", "Split(axis=0)", "TupleGetItem(index=0)", "TupleGetItem(index=1)"]
    assert g.node("v1").shape == ((3,), (3,))


# ----- adjoints ------------------------------------------------------------------------------


def test_adjoints_of_sum_of_squares_by_hand():
    x = tensor([1.0, 2.0, 3.0])
    y = (x * x).sum()
    y.backward()
    g = viz.graph(y, adjoints=True, names={"x": x})
    # forward: x, x*x, sum. backward: ones () (y.grad), its broadcast (3,) (v1.grad) —
    # both constants, since the seed needs no grad — then the two partials of x*x,
    # out_grad * x each, and their sum, x.grad.
    assert titles(g) == [
        "x",
        "EWiseMul",
        "Summation",
        "constant",
        "EWiseMul",
        "EWiseMul",
        "EWiseAdd",
        "constant",
    ]
    assert [n.kind for n in g.nodes[3:]] == ["adjoint"] * 5
    assert g.inputs_of("v4") == ["v3", "v0"] and g.inputs_of("v5") == ["v3", "v0"]
    assert g.inputs_of("v6") == ["v4", "v5"]
    grads = [(e.src, e.dst) for e in g.edges if e.kind == "grad"]
    assert grads == [("v0", "v6"), ("v1", "v3"), ("v2", "v7")]
    assert g.node("v6").grad_of == ("v0",)
    np.testing.assert_allclose(g.node("v6").tensor.numpy(), [2.0, 4.0, 6.0])


def test_adjoints_without_create_graph_are_constant_leaves():
    x = tensor([1.0, 2.0, 3.0])
    y = (x * x).sum()
    y.backward(create_graph=False)
    g = viz.graph(y, adjoints=True)
    assert [n.kind for n in g.nodes] == ["input", "op", "op"] + ["adjoint"] * 3
    assert all(not n.op for n in g.nodes[3:])
    assert sum(e.kind == "grad" for e in g.edges) == 3


def test_adjoints_of_shared_subexpression_sum_two_partials():
    a = tensor([1.0, -2.0])
    b = a + a
    c = b * b
    c.backward()
    g = viz.graph(c, adjoints=True, names={"a": a, "b": b})
    # b.grad: the sum of b * b's two partials, out_grad * b each
    (grad_b,) = [n for n in g.nodes if n.grad_of == ("v1",)]
    assert grad_b.op == "EWiseAdd"
    partials = g.inputs_of(grad_b.id)
    assert [g.node(p).op for p in partials] == ["EWiseMul", "EWiseMul"]
    assert all(g.inputs_of(p)[1] == "v1" for p in partials)
    # a.grad: a + a sends b.grad to a twice, so it is the sum of one node with itself
    (grad_a,) = [n for n in g.nodes if n.grad_of == ("v0",)]
    assert grad_a.op == "EWiseAdd" and g.inputs_of(grad_a.id) == [grad_b.id, grad_b.id]
    np.testing.assert_allclose(grad_a.tensor.numpy(), 8 * a.numpy())


def test_adjoint_of_broadcast_sums_back():
    W = tensor(np.ones((2, 3)))
    b = tensor([1.0, 2.0, 3.0])
    y = (W * (W + b)).sum()
    y.backward()
    g = viz.graph(y, adjoints=True, names={"W": W, "b": b})
    (grad_b,) = [n for n in g.nodes if n.grad_of == ("v1",)]
    # unbroadcast: sum over the broadcast axis, then reshape to b's shape
    assert grad_b.op == "Reshape(shape=(3,))" and grad_b.shape == (3,)
    (summed,) = g.inputs_of(grad_b.id)
    assert g.node(summed).op == "Summation(axes=(0,))"
    np.testing.assert_allclose(grad_b.tensor.numpy(), W.numpy().sum(axis=0))


def test_adjoints_need_a_backward_first():
    x = tensor([1.0])
    with pytest.raises(ValueError, match=r"adjoints=True.*call loss.backward\(\) first"):
        viz.graph((x * 2).sum(), adjoints=True)


# ----- modules: record and collapse ----------------------------------------------------------


def small_mlp():
    np.random.seed(0)
    return nn.Sequential(
        nn.Linear(3, 4, fused=False),
        nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Linear(4, 4, fused=False))),
        nn.Linear(4, 2, fused=False),
    )


def recorded_loss(model, backward=False):
    X = ndl.Tensor(np.ones((5, 3)), dtype="float32", requires_grad=False)
    with viz.record(model):
        out = model(X)
        loss = nn.SoftmaxLoss(fused=False)(out, np.array([0, 1, 0, 1, 1]))
        if backward:
            loss.backward()
    return loss, out


def test_record_places_nodes_in_the_innermost_module_and_restores_forward():
    model = small_mlp()
    loss, out = recorded_loss(model)
    assert viz.module_place(out).path == "modules.3"
    relu = out.inputs[0].inputs[0]  # out = EWiseAdd(MatMul(relu_out, W), bias)
    assert viz.module_place(relu).path == "modules.2"  # the Residual's EWiseAdd
    assert viz.module_place(relu).top == "modules.2"
    inner = relu.inputs[0]  # the inner Linear's output
    assert viz.module_place(inner).path == "modules.2.fn.modules.0"
    assert viz.module_place(inner).top == "modules.2"
    assert viz.module_place(inner).top_type == "Residual"
    assert viz.module_place(loss) is None
    assert viz.recorded_name(model.modules[0].weight) == "modules.0.weight"
    assert all("forward" not in vars(m) for m in [model, *model.modules])
    g = viz.graph(loss, collapse="none")  # names come from the record, no model= needed
    assert "modules.3.bias" in titles(g)


def test_record_blocks_nest():
    model = small_mlp()
    X = ndl.Tensor(np.ones((5, 3)), dtype="float32", requires_grad=False)
    with viz.record(model):
        with viz.record(model.modules[2]):
            out = model(X)
        assert "forward" in vars(model.modules[2])  # the outer block's wrapper is back
    assert all("forward" not in vars(m) for m in [model, *model.modules])
    assert viz.module_place(out).path == "modules.3"


def test_collapse_by_module_merges_each_top_level_module():
    model = small_mlp()
    loss, _ = recorded_loss(model)
    full = viz.graph(loss, collapse="none")
    boxed = viz.graph(loss, collapse="module")
    boxes = [n for n in boxed.nodes if n.kind == "module"]
    assert [b.title for b in boxes] == [
        "modules.0 (Linear)",
        "modules.1 (ReLU)",
        "modules.2 (Residual)",
        "modules.3 (Linear)",
    ]
    in_modules = [n for n in full.nodes if n.group]
    assert sum(b.members for b in boxes) == len(in_modules)
    assert len(boxed.nodes) == len(full.nodes) - len(in_modules) + len(boxes)
    pairs = [(e.src, e.dst) for e in boxed.edges]
    assert len(pairs) == len(set(pairs)) and all(s != d for s, d in pairs)
    ids = [b.id for b in boxes]
    for before, after in zip(ids, ids[1:]):  # the chain of modules, in order
        assert (before, after) in pairs


def test_collapse_with_adjoints_gives_each_module_a_gradient_box():
    model = small_mlp()
    loss, _ = recorded_loss(model, backward=True)
    full = viz.graph(loss, adjoints=True, collapse="none")
    boxed = viz.graph(loss, adjoints=True, collapse="module")
    grad_boxes = [n.title for n in boxed.nodes if n.kind == "adjoint-module"]
    assert sorted(grad_boxes) == [f"∇ modules.{i}" for i in range(4)]
    total = sum(n.members for n in boxed.nodes)
    assert total == len(full.nodes)
    assert any(
        e.kind == "grad" and e.src.startswith("m_") and e.dst.startswith("g_") for e in boxed.edges
    )


def test_collapse_auto_depends_on_size(monkeypatch):
    model = small_mlp()
    loss, _ = recorded_loss(model)
    n = len(viz.graph(loss, collapse="none").nodes)
    graph_module = sys.modules["needle.viz.graph"]  # viz.graph is the function
    monkeypatch.setattr(graph_module, "COLLAPSE_AUTO_NODES", n)
    assert len(viz.graph(loss).nodes) == n
    monkeypatch.setattr(graph_module, "COLLAPSE_AUTO_NODES", n - 1)
    assert any(node.kind == "module" for node in viz.graph(loss).nodes)


def test_collapse_module_without_record_says_how():
    x = tensor([1.0])
    with pytest.raises(ValueError, match=r"viz.record\(model\)"):
        viz.graph(x * 2, collapse="module")


# ----- DOT, SVG, PNG -------------------------------------------------------------------------


def test_dot_text_lists_nodes_colours_and_numbered_edges_in_order():
    x = tensor([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    dot = viz.graph(y, adjoints=True, names={"x": x}).to_dot()
    assert dot.startswith("digraph needle {") and dot.rstrip().endswith("}")
    assert 'v0 [label="v0  x\\n(2,) float64"' in dot
    assert 'fillcolor="#fff3b0"' in dot and 'fillcolor="#ffccbc"' in dot
    edges = re.findall(r"^  (v\d+) -> (v\d+) \[label=\" (\d)\"\]", dot, re.M)
    assert edges[:2] == [("v0", "v1", "0"), ("v0", "v1", "1")]
    assert re.search(r'v0 -> v6 \[style=dashed.*label="grad"', dot)
    assert "grad of v0" in dot


def test_dot_escapes_quotes_in_names(tmp_path):
    x = tensor([1.0])
    g = viz.graph(x * 2, names={'say "hi"\\': x})
    assert 'v0  say \\"hi\\"\\\\' in g.to_dot()
    g.save(tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == g.to_dot()


@needs_graphviz
def test_svg_and_png_through_graphviz(tmp_path):
    x = tensor([1.0, 2.0])
    g = viz.graph((x * x).sum(), names={'a "quoted" x': x})
    g.save(tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert svg.count('class="node"') == 3 and "<title>v0</title>" in svg
    assert "a &quot;quoted&quot; x" in svg
    g.save(tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert g._repr_svg_().lstrip().startswith(("<?xml", "<svg"))


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.dot, \.svg, \.png"):
        viz.graph(tensor([1.0]) * 2).save(tmp_path / "g.jpg")


def test_missing_graphviz_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz now fails
    g = viz.graph(tensor([1.0]) * 2)
    with pytest.raises(viz.GraphvizNotFoundError, match=r"pip install 'needle-dl\[viz\]'"):
        g.save(tmp_path / "g.svg")
    with pytest.warns(UserWarning, match="needle-dl"):
        assert g._repr_svg_() is None
    g.save(tmp_path / "g.dot")  # DOT text needs nothing


def test_missing_dot_program_says_what_to_install(monkeypatch, tmp_path):
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    with pytest.raises(viz.GraphvizNotFoundError, match="apt-get install graphviz"):
        viz.graph(tensor([1.0]) * 2).save(tmp_path / "g.png")


def test_graph_argument_errors():
    with pytest.raises(TypeError, match=r"viz.graph\(loss\)"):
        viz.graph()
    with pytest.raises(TypeError, match="argument 1 is a ndarray"):
        viz.graph(tensor([1.0]), np.ones(2))
    with pytest.raises(ValueError, match="collapse='boxes'"):
        viz.graph(tensor([1.0]), collapse="boxes")
    with pytest.raises(TypeError, match=r"names\['x'\] is a list"):
        viz.graph(tensor([1.0]), names={"x": [1.0]})
    with pytest.raises(TypeError, match="viz.record: expected a needle.nn.Module"):
        with viz.record(lambda x: x):
            pass


# ----- trace ---------------------------------------------------------------------------------


def trace_data(page: str) -> dict:
    """The DATA object embedded in a trace page (JSON plus JavaScript's Infinity/NaN)."""
    text = re.search(r"const DATA = (.*?);\n", page, re.S).group(1)
    return json.loads(text.replace("<\\/", "</"))


def test_trace_steps_in_reverse_topological_order_with_contributions():
    a = tensor([1.0, -2.0])
    b = a + a
    c = (b * b).sum()
    page = viz.trace(c, names={"a": a})
    data = trace_data(page)
    order = find_topo_sort([c])
    assert [s["node"] for s in data["steps"]] == [f"v{i}" for i in reversed(range(len(order)))]
    assert [n["title"] for n in data["nodes"]] == ["a", "EWiseAdd", "EWiseMul", "Summation"]
    (seed,) = data["steps"][0]["contributions"]
    assert seed["from"] is None and seed["value"]["text"] == "1"
    step_b = data["steps"][2]  # b: two partials from b * b, each out_grad * b
    assert [p["from"] for p in step_b["contributions"]] == ["v2", "v2"]
    assert step_b["contributions"][0]["value"]["text"] == "[2 -4]"
    assert step_b["sum"]["text"] == "[4 -8]"
    step_a = data["steps"][3]  # a: two partials from a + a, each b's adjoint
    assert [p["value"]["text"] for p in step_a["contributions"]] == ["[4 -8]", "[4 -8]"]
    np.testing.assert_allclose(a.grad.numpy(), [8.0, -16.0])
    assert step_a["sum"]["text"] == "[8 -16]"
    assert autograd._partial_adjoint_hook is None


def test_trace_summarises_large_tensors_and_writes_the_file(tmp_path):
    x = tensor(np.arange(20.0).reshape(4, 5))
    y = (x * x).sum()
    page = viz.trace(y, tmp_path / "t.html")
    assert (tmp_path / "t.html").read_text(encoding="utf-8") == page
    data = trace_data(page)
    last = data["steps"][-1]["sum"]
    norm = float(np.linalg.norm(2 * np.arange(20.0)))
    assert last["text"] == (
        f"shape (4, 5)  norm {norm:.6g}  min 0  max 38  mean {2 * np.arange(20.0).mean():.6g}"
    )
    assert last["norm"] == pytest.approx(norm)


@pytest.mark.parametrize("picture", [False, None])
def test_trace_page_is_self_contained(picture):
    x = tensor([1.0])
    page = viz.trace((x * 3).sum(), title="<b>title</b>", picture=picture)
    assert "&lt;b&gt;title&lt;/b&gt;" in page and "<b>title</b>" not in page
    # nothing to fetch: no linked files, scripts, styles or images (an SVG's xmlns is a name)
    assert not re.search(r"<link|<script[^>]+src=|<img|@import|url\(|(src|href)=", page)


@needs_graphviz
def test_trace_embeds_the_graph_when_graphviz_is_there():
    x = tensor([1.0, 2.0])
    page = viz.trace((x * x).sum(), names={"x": x})
    svg = page[page.index('<div id="picture">') :]
    assert svg.index("<svg") < svg.index("</div>")
    assert "<title>v0</title>" in svg and "<?xml" not in page
    assert "<svg" not in viz.trace((x * x).sum(), picture=False)


def test_trace_picture_true_needs_graphviz(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    x = tensor([1.0])
    assert "<svg" not in viz.trace((x * 3).sum())  # optional: left out
    with pytest.raises(viz.GraphvizNotFoundError):
        viz.trace((x * 3).sum(), picture=True)


def test_trace_restores_the_hook_after_an_error():
    x = tensor([1.0], requires_grad=False)
    with pytest.raises(RuntimeError, match="does not require grad"):
        viz.trace(x * 2)
    assert autograd._partial_adjoint_hook is None
    with pytest.raises(TypeError, match="viz.trace: expected a needle.Tensor"):
        viz.trace(np.ones(2))


def test_partial_adjoint_hook_sees_every_edge_once():
    x = tensor([1.0, 2.0])
    w = tensor([3.0, 4.0], requires_grad=False)
    y = (x * w + x).sum()
    seen = []
    autograd._partial_adjoint_hook = lambda node, inp, grad: seen.append(
        (type(node.op).__name__, inp is x, inp is w)
    )
    try:
        y.backward()
    finally:
        autograd._partial_adjoint_hook = None
    # w needs no gradient, so EWiseMul sends one partial (to x); x gets two in all
    assert seen == [
        ("Summation", False, False),
        ("EWiseAdd", False, False),
        ("EWiseAdd", True, False),
        ("EWiseMul", True, False),
    ]


# ----- examples and the command --------------------------------------------------------------


def test_examples_build_named_recorded_models():
    loss, model = examples.example("mlp", backward=True)
    g = viz.graph(loss, adjoints=True, collapse="none")
    assert {"modules.0.weight", "modules.2.bias"} <= set(titles(g))
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        examples.example("cnn")


def run_command(*args):
    try:
        return ndl.cli.main(["graph", *map(str, args)])
    except SystemExit as e:
        return e.code


def test_command_writes_dot_and_trace_for_the_examples(tmp_path, capsys):
    assert run_command("--model", "mlp", "--adjoints", "--out", tmp_path / "g.dot") == 0
    dot = (tmp_path / "g.dot").read_text()
    assert "modules.0.weight" in dot and 'fillcolor="#ffccbc"' in dot
    # auto: the forward graph (60 nodes) is drawn whole, with a box around each module;
    # with its adjoints (over 60 nodes) each module collapses into one node
    assert run_command("--model", "mlp-resnet", "--out", tmp_path / "r.dot") == 0
    dot = (tmp_path / "r.dot").read_text()
    assert 'label="modules.2 (Sequential)"; style="rounded,dashed"' in dot
    assert "m_modules_2" not in dot
    assert run_command("--model", "mlp-resnet", "--adjoints", "--out", tmp_path / "a.dot") == 0
    dot = (tmp_path / "a.dot").read_text()
    assert 'm_modules_2 [label="modules.2 (Sequential)' in dot and "g_modules_2" in dot
    assert run_command("--model", "mlp-resnet", "--out", tmp_path / "t.html") == 0
    assert "FusedLinear" in (tmp_path / "t.html").read_text()
    assert f"wrote {tmp_path / 't.html'}" in capsys.readouterr().out


def test_command_calls_a_function_from_a_script(tmp_path):
    script = tmp_path / "make.py"
    script.write_text(
        "import numpy as np\nimport needle as ndl\nfrom needle import nn\n"
        "def loss():\n"
        "    model = nn.Linear(2, 3, fused=False)\n"
        "    x = ndl.Tensor(np.ones((1, 2)), dtype='float32')\n"
        "    return model(x).sum(), model\n"
        "def nothing():\n    return 3\n"
    )
    assert run_command(f"{script}:loss", "--adjoints", "--out", tmp_path / "g.dot") == 0
    assert "v1  weight" in (tmp_path / "g.dot").read_text()
    assert run_command(f"{script}:nothing", "--out", tmp_path / "n.dot") == 2
    assert run_command(f"{script}:missing", "--out", tmp_path / "n.dot") == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [],
            "nothing to draw: give SCRIPT.py:FUNCTION or --model NAME; e.g. needle graph "
            "--model mlp-resnet --out runs/graph.svg",
        ),
        (["x.py:f", "--model", "mlp"], "not both (x.py:f and --model mlp)"),
        (["nope.py:f"], "nope.py: no such file"),
        (["no_colon"], "expected SCRIPT.py:FUNCTION"),
        (["--model", "mlp", "--out", "g.jpg"], "suffix must be one of"),
        (["--model", "mlp", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_command_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_command(*args) == 2
    assert message in capsys.readouterr().err


@needs_graphviz
def test_command_writes_svg(tmp_path):
    assert run_command("--model", "mlp-resnet", "--adjoints", "--out", tmp_path / "g.svg") == 0
    assert "∇ modules.2" in (tmp_path / "g.svg").read_text()


def test_command_creates_the_folder_of_out(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "g.dot"
    assert run_command("--model", "mlp", "--out", out) == 0
    assert out.read_text().startswith("digraph")
    assert capsys.readouterr().out == f"wrote {out}\n"


def test_command_names_an_out_folder_it_cannot_create(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert run_command("--model", "mlp", "--out", tmp_path / "file" / "g.dot") == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"needle graph: error: cannot create the folder {tmp_path / 'file'} "
        f"for --out {tmp_path / 'file' / 'g.dot'}: "
    )
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_repr_counts_nodes():
    x = tensor([1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(viz.graph(x * 2)) == "needle.viz.Graph(2 nodes (0 adjoint), 1 edges)"


@needs_graphviz
def test_docs_first_example_runs(tmp_path, monkeypatch):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "viz.md").read_text()
    block = re.findall(r"```python\n(.*?)```", docs, flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "docs/viz.md", "exec"), namespace)
    assert (tmp_path / "graph.svg").is_file()
    nodes = namespace["g"].nodes
    assert [(n.id, n.title) for n in nodes][:2] == [("v0", "x"), ("v1", "EWiseMul")]


# ----- scripts/install-viz-deps.sh ----------------------------------------------------------


def run_install_script(tmp_path, programs: dict) -> subprocess.CompletedProcess:
    """Run the script with PATH holding only fake ``programs`` (name → shell body)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in programs.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-viz-deps.sh"
    return subprocess.run(
        ["/bin/bash", str(script)],
        env={"PATH": str(bindir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_install_script_says_what_to_run_when_not_root(tmp_path):
    proc = run_install_script(tmp_path, {"id": "echo 1000"})
    assert proc.returncode == 0
    assert "sudo apt-get install graphviz chromium" in proc.stdout


def test_install_script_is_quiet_when_everything_is_there(tmp_path):
    proc = run_install_script(tmp_path, {"id": "echo 0", "dot": "", "chromium": ""})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_install_script_never_fails_when_apt_does(tmp_path):
    proc = run_install_script(tmp_path, {"id": "echo 0", "dot": "", "apt-get": "exit 100"})
    assert proc.returncode == 0
    assert "could not install chromium" in proc.stdout

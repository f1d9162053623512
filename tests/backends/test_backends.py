"""Backend selection (NEEDLE_BACKEND), devices and tensors across devices.

The selection happens once per process at import, so each case runs a fresh Python.
A missing compiled module is simulated by blocking its import (``sys.modules[name] = None``).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import needle as ndl
from needle import backend_ndarray as nd

COMPILED = "needle.backends.ndarray.ndarray_backend_cpu"
BLOCK = f"import sys; sys.modules[{COMPILED!r}] = None; "


def _python(code: str, backend: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NEEDLE_BACKEND"}
    if backend is not None:
        env["NEEDLE_BACKEND"] = backend
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_unset_with_the_compiled_module_is_nd_and_silent():
    if not nd.cpu().enabled():
        pytest.skip("the compiled module is not built here")
    run = _python("import needle; print(needle.backends.BACKEND, needle.default_device())", None)
    assert run.returncode == 0 and run.stdout == "nd cpu()\n" and run.stderr == ""


def test_unset_without_the_compiled_module_falls_back_to_np_with_one_warning():
    code = BLOCK + "import needle, needle.ops; print(needle.backends.BACKEND)"
    run = _python(code, None)
    assert run.returncode == 0 and run.stdout == "np\n"
    warnings = [line for line in run.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "pip install -e ." in warnings[0]


def test_nd_without_the_compiled_module_raises_a_clear_import_error():
    run = _python(BLOCK + "import needle", "nd")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and COMPILED in last
    assert "pip install -e ." in last and "NEEDLE_BACKEND=np" in last and "CMake" in last


def test_np_never_loads_compiled_code():
    code = (
        "import sys, needle as ndl; x = ndl.Tensor([1.0, 2.0]); (x * x).sum().backward(); "
        f"print({COMPILED!r} in sys.modules, type(x.cached_data).__name__)"
    )
    run = _python(code, "np")
    assert run.returncode == 0 and run.stdout == "False ndarray\n", run.stderr


def test_unknown_backend_raises_runtime_error_listing_both():
    run = _python("import needle", "torch")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError") and "'nd'" in last and "'np'" in last


def test_devices_exist_on_both_backends():
    assert repr(ndl.cpu()) == str(ndl.cpu()) == "cpu()"
    assert repr(ndl.cuda()) == "cuda()"
    assert ndl.cpu() == ndl.cpu() and ndl.cuda() != ndl.cpu()
    if not ndl.cuda().enabled():
        with pytest.raises(RuntimeError, match=r"cuda\(\) is not available"):
            ndl.cuda().zeros(2)


def test_backend_selection_alias_is_the_same_module():
    import needle.backend_selection as selection

    assert selection.BACKEND == ndl.backends.BACKEND
    assert selection.array_api is ndl.backends.array_api


@pytest.mark.skipif(ndl.backends.BACKEND != "nd", reason="NDArray tensors exist under nd only")
def test_tensors_hold_ndarrays_and_report_their_device():
    x = ndl.Tensor([[1.0, 2.0]], device=nd.cpu_numpy())
    assert isinstance(x.cached_data, nd.NDArray) and x.device == nd.cpu_numpy()
    y = (x * 2).sum()
    assert isinstance(y.cached_data, nd.NDArray) and y.cached_data.shape == ()
    y.backward()
    assert x.grad.device == nd.cpu_numpy()
    leaf = x.realize_cached_data()
    assert x.realize_cached_data() is leaf and leaf.is_compact()
    assert x.numpy() is not x.numpy()  # a copy each time


@pytest.mark.skipif(
    ndl.backends.BACKEND != "nd" or not nd.cpu().enabled(),
    reason="needs two enabled NDArray devices",
)
def test_to_moves_tensors_and_mixed_devices_raise_naming_both():
    x = ndl.Tensor(np.ones((2, 2)), device=nd.cpu())
    y = x.to(nd.cpu_numpy())
    assert y.device == nd.cpu_numpy() and x.to(nd.cpu()) is x
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    for fn in (lambda: x + y, lambda: x @ y, lambda: ndl.multiply(x, y)):
        with pytest.raises(ValueError, match=r"cpu\(\) and cpu_numpy\(\).*\.to\("):
            fn()
